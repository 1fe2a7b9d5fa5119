"""μP for a whole model: the width roles of `param_groups(base=...)` (PyTorch and JAX), and the
coordinate check, which passes under structlin's μP and catches the standard parametrisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

# End to end: CI runs it once, in the main environment (see .ci/run).
pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")

import structlin.nn as snn  # noqa: E402
from structlin.nn._coord import CoordCheck, CoordRecord  # noqa: E402

NARROW, WIDE = 64, 1024
STRUCTURES = {
    "monarch": lambda d: {"nblocks": 4},
    "btt": lambda d: {"rank": 1},
    "lowrank": lambda d: {"rank": round(math.sqrt(d))},
    "kron": lambda d: {},
}


def _mlp(structure: str, standard: bool = False):
    """input layer -> structured hidden layer -> readout; μP's zero readout unless `standard`."""

    def make(d: int) -> torch.nn.Module:
        readout = torch.nn.Linear(d, 4)
        if not standard:
            torch.nn.init.zeros_(readout.weight)
            torch.nn.init.zeros_(readout.bias)
        hidden = snn.Linear(d, d, structure, **STRUCTURES[structure](d))
        return torch.nn.Sequential(
            torch.nn.Linear(16, d), torch.nn.ReLU(), hidden, torch.nn.ReLU(), readout
        )

    return make


def _data(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g))
        for _ in range(n)
    ]


# -- the acceptance test of the coordinate check ---------------------------------------------
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_mup_sizes_do_not_change_with_width(structure):
    """After 4 Adam steps every layer's output and its change are within 2x from width 64
    to width 1024 under μP; under the standard parametrisation (one learning rate, PyTorch's
    readout) they are not, so the check can fail."""
    mup = snn.coord_check(_mlp(structure), [NARROW, WIDE], _data(), steps=4, lr=1e-2)
    assert mup.unstable(factor=2) == [], str(mup)
    sp = snn.coord_check(
        _mlp(structure, standard=True), [NARROW, WIDE], _data(), steps=4, lr=1e-2,
        parametrization="sp",
    )  # fmt: skip
    found = {(module, kind) for module, kind, step, _ in sp.unstable(factor=2) if step == 4}
    assert ("<output>", "update") in found or ("<output>", "size") in found, str(sp)
    assert sp.growth("<output>", kind="update") > 2 * mup.growth("<output>", kind="update")


@pytest.mark.parametrize("structure", ["monarch", "lowrank"])
def test_sgd_multipliers_transfer_too(structure):
    mup = snn.coord_check(
        _mlp(structure), [NARROW, WIDE], _data(), steps=4, lr=0.1, optimizer="sgd"
    )
    assert mup.unstable(factor=2.2, step=4) == [], str(mup)
    sp = snn.coord_check(
        _mlp(structure, standard=True), [NARROW, WIDE], _data(), steps=4, lr=0.1,
        optimizer="sgd", parametrization="sp",
    )  # fmt: skip
    assert sp.growth("<output>", kind="update") > 4


def test_a_readout_at_a_fixed_rate_is_caught():
    """A readout kept as a bare parameter belongs to no layer `param_groups` knows, so it
    trains at the base rate instead of `d_0 / d_in`: its output's update grows with width,
    and the check says so. As an `nn.Linear` it passes."""

    class Model(torch.nn.Module):
        def __init__(self, d, bare):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(16, d), torch.nn.ReLU(), snn.Linear(d, d, "monarch", nblocks=4)
            )
            self.bare = bare
            if bare:
                self.readout = torch.nn.Parameter(torch.zeros(4, d))
            else:
                self.readout = torch.nn.Linear(d, 4, bias=False)
                torch.nn.init.zeros_(self.readout.weight)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return h @ self.readout.T if self.bare else self.readout(h)

    right = snn.coord_check(lambda d: Model(d, False), [NARROW, WIDE], _data(), steps=4)
    assert right.unstable(factor=2) == [], str(right)
    wrong = snn.coord_check(lambda d: Model(d, True), [NARROW, WIDE], _data(), steps=4)
    assert wrong.growth("<output>", kind="update") > 4, str(wrong)


# -- the width factors of param_groups(base_fan_in=...) --------------------------------------
class _Model(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.embed = torch.nn.Embedding(100, d)
        self.inp = torch.nn.Linear(12, d)
        self.hidden = torch.nn.Linear(d, 4 * d)
        self.structured = snn.Linear(4 * d, d, "monarch", nblocks=4)
        self.norm = torch.nn.LayerNorm(d)
        self.readout = torch.nn.Linear(d, 10)
        self.bare = torch.nn.Parameter(torch.ones(d, d))

    def forward(self, x):
        return x


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_every_parameter_kind_gets_its_width_factor(optimizer):
    """The table of `param_groups`: weights by their own fan-in (Adam) or aspect ratio (SGD),
    embeddings and vectors by 1 (Adam) or their length (SGD)."""
    d, d0 = 256, 64
    m = snn.mup_lr_multipliers(_Model(d), optimizer, base_fan_in=d0)
    kappa = snn.mup_lr_multipliers(_Model(d), optimizer)["structured.blocks_0"]
    if optimizer == "adam":
        want = {
            "embed.weight": 1.0,
            "inp.weight": d0 / 12,  # input layer: its fixed fan-in
            "inp.bias": 1.0,
            "hidden.weight": d0 / d,
            "hidden.bias": 1.0,
            "structured.blocks_0": kappa * d0 / (4 * d),
            "structured.bias": 1.0,
            "norm.weight": 1.0,
            "readout.weight": d0 / d,
            "readout.bias": 1.0,
            "bare": 1.0,  # no known layer: left alone
        }
    else:
        want = {
            "embed.weight": d / d0,
            "inp.weight": d / 12,
            "inp.bias": d / d0,
            "hidden.weight": 4.0,
            "hidden.bias": 4 * d / d0,
            "structured.blocks_0": kappa / 4,
            "structured.bias": d / d0,
            "norm.weight": d / d0,
            "readout.weight": 10 / d,
            "readout.bias": 10 / d0,
            "bare": 1.0,
        }
    for name, value in want.items():
        assert m[name] == pytest.approx(value), name


def test_width_factors_reproduce_mu_p_scaling():
    """Doubling the width halves Adam's rates of hidden weights and the readout and keeps
    those of the input layer, the embedding and the vectors (Tensor Programs V, Table 3)."""
    narrow = snn.mup_lr_multipliers(_Model(128), base_fan_in=64)
    wide = snn.mup_lr_multipliers(_Model(256), base_fan_in=64)
    ratio = {name: wide[name] / narrow[name] for name in wide}
    for name in ("hidden.weight", "structured.blocks_0", "readout.weight"):
        assert ratio[name] == pytest.approx(0.5), name  # Monarch's κ = b / 2 does not change
    for name in ("embed.weight", "inp.weight", "inp.bias", "norm.weight", "readout.bias"):
        assert ratio[name] == 1.0


def test_param_groups_base_fan_in_errors():
    groups = snn.param_groups(_Model(256), lr=1e-2, weight_decay=0.1, base_fan_in=64)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["readout.weight"]["lr"] == pytest.approx(1e-2 / 4)
    assert by_name["embed.weight"]["lr"] == pytest.approx(1e-2)
    with pytest.raises(TypeError, match="base_fan_in must be an int"):
        snn.param_groups(_Model(256), 1e-2, base_fan_in=64.0)
    with pytest.raises(ValueError, match="base_fan_in must be positive"):
        snn.param_groups(_Model(256), 1e-2, base_fan_in=0)


def test_jax_width_factors_match_pytorch():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from structlin.nn import jax as sjax

    d = 256
    k = jax.random.split(jax.random.key(0), 3)
    tree = {
        "inp": sjax.Linear.init(k[0], 12, d, "dense"),
        "structured": sjax.Linear.init(k[1], 4 * d, d, "monarch", nblocks=4),
        "readout": sjax.Linear.init(k[2], d, 10, "dense"),
        "norm": jnp.ones(d),
        "bare": jnp.ones((d, d)),
    }
    for optimizer in ("adam", "sgd"):
        want = snn.mup_lr_multipliers(_Model(d), optimizer, base_fan_in=64)
        m = sjax.mup_lr_multipliers(tree, optimizer, base_fan_in=64)
        for layer in ("inp", "readout"):
            got = m[layer].named_parameters()
            assert got["array"] == pytest.approx(want[f"{layer}.weight"]), (optimizer, layer)
            assert got["bias"] == pytest.approx(want[f"{layer}.bias"]), (optimizer, layer)
        got = m["structured"].named_parameters()
        assert got["blocks_0"] == pytest.approx(want["structured.blocks_0"])
        assert got["bias"] == pytest.approx(want["structured.bias"])
        assert m["norm"] == pytest.approx(want["norm.weight"])
        assert m["bare"] == 1.0


# -- the JAX coordinate check ----------------------------------------------------------------
@pytest.mark.parametrize("structure", ["monarch", "lowrank"])
def test_jax_coord_check(structure):
    jax = pytest.importorskip("jax")
    from structlin.nn.jax import Linear, coord_check

    def init_for(standard):
        def init(key, d):
            k1, k2, k3 = jax.random.split(key, 3)
            readout = Linear.init(k3, d, 4, "dense", zero_init_last=not standard)
            return {
                "inp": Linear.init(k1, 16, d, "dense"),
                "hid": Linear.init(k2, d, d, structure, **STRUCTURES[structure](d)),
                "readout": readout,
            }

        return init

    def apply(p, x):
        h = jax.nn.relu(p["hid"](jax.nn.relu(p["inp"](x))))
        return p["readout"](h), {"hidden": h}

    x = jax.random.normal(jax.random.key(1), (64, 16))
    y = jax.random.randint(jax.random.key(2), (64,), 0, 4)
    mup = coord_check(init_for(False), apply, [NARROW, WIDE], (x, y), steps=4)
    assert mup.unstable(factor=2) == [], str(mup)
    assert mup.modules == ("hidden", "<output>")
    sp = coord_check(init_for(True), apply, [NARROW, WIDE], (x, y), steps=4, parametrization="sp")
    assert sp.unstable(factor=2, step=4) != []


# -- the result object -----------------------------------------------------------------------
def _synthetic(exponent: float) -> CoordCheck:
    records = tuple(
        CoordRecord(w, 0, t, "layer", size=(1 + t) * w**exponent, update=t * w**exponent)
        for w in (64, 256, 1024)
        for t in range(3)
    )
    return CoordCheck(records, "mup", "adam", 1e-2)


def test_coord_check_reads_growth_and_slope():
    flat, growing = _synthetic(0.0), _synthetic(1.0)
    assert flat.unstable() == []
    assert flat.slope("layer") == pytest.approx(0.0, abs=1e-12)
    assert growing.slope("layer") == pytest.approx(1.0)
    assert growing.growth("layer", step=2) == pytest.approx(16.0)
    assert ("layer", "update", 2, pytest.approx(16.0)) in growing.unstable(kind="update")
    assert growing.unstable(factor=20) == []
    assert flat.widths == (64, 256, 1024)
    assert flat.steps == (0, 1, 2)
    rows = growing.rows()
    assert len(rows) == 9
    assert rows[0] == {"module": "layer", "width": 64, "step": 0, "size": 64.0, "update": 0.0}
    assert "16.00x" in str(growing)
    with pytest.raises(KeyError, match="modules are"):
        flat.value("nope", 64, 0)
    with pytest.raises(ValueError, match="kind must be"):
        flat.growth("layer", kind="sizes")
    with pytest.raises(ValueError, match="factor must be"):
        flat.unstable(factor=0.5)


def test_coord_check_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "coord.png"
    fig = _synthetic(0.5).plot(str(path), kind="update")
    assert path.stat().st_size > 1000
    assert len(fig.axes) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"widths": [64]}, ValueError, "at least two distinct"),
        ({"steps": 0}, ValueError, "steps must be"),
        ({"lr": float("nan")}, ValueError, "lr must be"),
        ({"optimizer": "lion"}, ValueError, "optimizer must be"),
        ({"parametrization": "ntk"}, ValueError, "parametrization must be"),
        ({"widths": [64.0, 128]}, TypeError, "integers"),
        ({"data": []}, ValueError, "at least one"),
        ({"seeds": 0}, ValueError, "seeds must be"),
    ],
)
def test_coord_check_arguments(kwargs, error, match):
    args = {"widths": [16, 32], "data": _data(1), **kwargs}
    with pytest.raises(error, match=match):
        snn.coord_check(_mlp("monarch"), args.pop("widths"), args.pop("data"), **args)


def test_coord_check_seeds_are_averaged():
    one = snn.coord_check(_mlp("monarch"), [16, 32], _data(2), steps=2, seeds=[3])
    two = snn.coord_check(_mlp("monarch"), [16, 32], _data(2), steps=2, seeds=2)
    assert len(two.records) == 2 * len(one.records)
    assert np.isfinite([r.size for r in two.records]).all()


def test_coord_check_on_hugging_face_gpt2():
    """A GPT-2 built from its config, MLPs made Monarch: the check reads its `ModelOutput`, passes
    the untied model with a zero readout, and flags the readout tied to the input embedding
    (one parameter, trained at the embedding's rate: the compromise the guide describes)."""
    transformers = pytest.importorskip("transformers")

    def make(tied):
        def model(d):
            config = transformers.GPT2Config(
                vocab_size=96, n_positions=32, n_embd=d, n_layer=1, n_head=d // 32,
                tie_word_embeddings=tied, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                bos_token_id=0, eos_token_id=0,
            )  # fmt: skip
            gpt2 = transformers.GPT2LMHeadModel(config)
            snn.replace_linear(gpt2, "monarch", nblocks=4, filter=lambda name, _: ".mlp." in name)
            if not tied:
                torch.nn.init.zeros_(gpt2.lm_head.weight)
            return gpt2

        return model

    g = torch.Generator().manual_seed(0)
    data = [(x, x) for x in (torch.randint(0, 96, (8, 32), generator=g) for _ in range(3))]

    def loss_fn(out, y):
        return torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, 96), y[:, 1:].reshape(-1)
        )

    def readout_only(name, _):
        return name == "lm_head"

    untied = snn.coord_check(
        make(False), [64, 512], data, steps=3, loss_fn=loss_fn, modules=readout_only
    )
    assert untied.unstable(factor=2) == [], str(untied)
    tied = snn.coord_check(
        make(True), [64, 512], data, steps=3, loss_fn=loss_fn, modules=readout_only
    )
    assert tied.growth("lm_head", kind="update") > 2, str(tied)
