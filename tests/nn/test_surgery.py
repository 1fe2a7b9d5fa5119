"""Model surgery on real model code: Hugging Face GPT-2, BERT, Llama and ViT built from
config objects, and torch.nn's Transformer layers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_models  # noqa: E402
import structlin as sl  # noqa: E402
import structlin.nn as snn  # noqa: E402
from structlin.nn import dense_layers  # noqa: E402

MODELS = {m.name: m for m in hf_models.MODELS}


def _mlp_names(model: torch.nn.Module, pattern: str) -> list[str]:
    from structlin.nn.selection import _pattern_matches

    return [
        name
        for name, module in model.named_modules()
        if dense_layers.dense_kind(module) is not None and _pattern_matches(pattern, name)
    ]


def _set_exactly_monarch(model: torch.nn.Module, names: list[str], nblocks: int) -> None:
    """Give each named dense layer a Monarch weight (in its own storage orientation)."""
    with torch.no_grad():
        for i, name in enumerate(names):
            layer = model.get_submodule(name)
            d_in, d_out = dense_layers.features(layer)
            M = sl.Monarch.random(d_in, d_out, nblocks, rng=i).to_dense()
            dense_layers.dense_weight(layer).copy_(torch.as_tensor(M, dtype=torch.float32))


@pytest.mark.parametrize("name", list(MODELS))
def test_mlp_projection_on_transformers_models(name):
    tiny = MODELS[name]
    torch.manual_seed(0)
    model = tiny.build().eval()
    names = _mlp_names(model, tiny.mlp_filter)
    assert len(names) == tiny.n_mlp
    originals = {
        n: dense_layers.dense_weight(model.get_submodule(n)).detach().clone() for n in names
    }

    report = snn.replace_linear(model, "monarch", nblocks=4, filter=tiny.mlp_filter, project=True)
    assert sorted(c.name for c in report) == sorted(names)
    for n in names:
        layer = model.get_submodule(n)
        assert isinstance(layer, snn.Linear)
        W = originals[n]
        expected = sl.project(
            W.double(), sl.Monarch, blocks=sl.Monarch.layout(W.shape[1], W.shape[0], 4)
        )
        torch.testing.assert_close(layer.weight.double(), expected.to_dense(), rtol=1e-4, atol=1e-5)
        change = report[n]
        assert change.shape == tuple(W.shape)
        assert change.projection_error == pytest.approx(
            float(
                torch.linalg.norm(W.double() - expected.to_dense()) / torch.linalg.norm(W.double())
            ),
            rel=1e-3,
        )
        assert change.params_after < change.params_before
        assert change.macs_after < change.macs_before
    # Attention and everything else is untouched.
    assert all(
        not isinstance(m, snn.Linear) for n, m in model.named_modules() if n and n not in names
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_exactly_monarch_weights_keep_the_outputs(name):
    tiny = MODELS[name]
    torch.manual_seed(0)
    model = tiny.build().eval()
    names = _mlp_names(model, tiny.mlp_filter)
    _set_exactly_monarch(model, names, nblocks=4)
    before = tiny.output(model)
    report = snn.replace_linear(model, "monarch", nblocks=4, filter=tiny.mlp_filter, project=True)
    assert max(c.projection_error for c in report) < 1e-5
    torch.testing.assert_close(tiny.output(model), before, rtol=1e-5, atol=1e-5)
    # ... and in train mode (dropout off) the gradient reaches every structured block.
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    tiny.output(model).square().mean().backward()
    for n in names:
        assert all(p.grad is not None for p in model.get_submodule(n).parameters())


def test_gpt2_lm_head_stays_tied_with_a_warning():
    model = hf_models.gpt2()
    with pytest.warns(UserWarning, match=r"lm_head.*tied to transformer\.wte\.weight"):
        report = snn.replace_linear(model, "monarch", nblocks=4)
    assert [s.name for s in report.skipped] == ["lm_head"]
    assert model.lm_head.weight is model.transformer.wte.weight
    assert type(model.lm_head) is torch.nn.Linear
    # Conv1D layers all replaced, in the right orientation.
    assert len(report) == 8
    assert report["transformer.h.0.mlp.c_fc"].shape == (128, 32)
    # Untying is a choice the caller states.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = snn.replace_linear(model, "lowrank", rank=4, filter="lm_head", tied="untie")
    assert isinstance(model.lm_head, snn.Linear)
    assert "untied from transformer.wte.weight" in str(report)


def test_filter_that_matches_nothing_warns_and_changes_nothing():
    model = hf_models.gpt2()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="no layer matched"):
        report = snn.replace_linear(model, "monarch", filter="*.mlp.fc1")
    assert len(report) == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.warns(UserWarning, match="'nothing' matched no layer"):
        snn.replace_linear(model, "monarch", filter=["c_fc", "nothing"])
    with pytest.raises(TypeError, match="filter must be"):
        snn.replace_linear(model, "monarch", filter=3)
    with pytest.raises(ValueError, match="tied must be"):
        snn.replace_linear(model, "monarch", tied="yes")


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("c_fc", ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]),
        ("h.1.mlp.c_proj", ["transformer.h.1.mlp.c_proj"]),
        ("*.1.attn.*", ["transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"]),
        (
            r"transformer\.h\.0\.(attn|mlp)\.c_proj",
            ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj"],
        ),
        (
            ["h.0.mlp.c_fc", "h.1.mlp.c_fc"],
            ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"],
        ),
        (
            lambda name, module: getattr(module, "nf", 0) == 96,
            ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"],
        ),
    ],
)
def test_filter_forms(filter, expected):
    model = hf_models.gpt2()
    report = snn.replace_linear(model, "lowrank", rank=2, filter=filter)
    assert sorted(c.name for c in report) == expected


def test_shared_module_is_structured_once():
    shared = torch.nn.Linear(16, 16)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    report = snn.replace_linear(model, "monarch", nblocks=4, project=True)
    assert len(report) == 1
    assert report["0"].aliases == ("2",)
    assert model[0] is model[2]
    assert isinstance(model[0], snn.Linear)
    assert len(list(model.parameters())) == 3
    # A parameter shared by two different modules is tied: both are skipped.
    a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    b.weight = a.weight
    model = torch.nn.Sequential(a, b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = snn.replace_linear(model, "monarch", nblocks=2)
    messages = [str(w.message) for w in caught]
    assert sum("tied to" in m for m in messages) == 2
    assert any("every matching layer was skipped" in m for m in messages)
    assert len(report) == 0
    assert len(report.skipped) == 2


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_eval_and_train_agree(norm_first):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        32, 4, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    report = snn.replace_linear(layer, "monarch", nblocks=4)
    assert sorted(c.name for c in report) == ["linear1", "linear2"]
    assert [s.name for s in report.skipped] == ["self_attn.out_proj"]
    x = torch.randn(2, 5, 32)
    layer.train()
    trained = layer(x)
    layer.eval()
    with torch.no_grad():  # the fused fast path, which reads linear1.weight and linear2.weight
        fast = layer(x)
    slow = layer(x)  # grad enabled: the module path
    torch.testing.assert_close(fast, trained, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(slow, trained, rtol=1e-5, atol=1e-5)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    with torch.no_grad():
        assert encoder(x).shape == x.shape


def test_weight_property_is_the_applied_matrix():
    layer = snn.Linear(24, 16, "btt", rank=2, weight_norm=True)
    x = torch.randn(5, 24)
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias, rtol=1e-5, atol=1e-5)
    assert layer.weight.requires_grad
    assert "weight" not in dict(layer.named_parameters())


def test_weight_property_refuses_writes():
    layer = snn.Linear(16, 8, "monarch", nblocks=2)
    for write in (
        lambda w: w.add_(1),
        lambda w: w.normal_(),
        lambda w: w.__setitem__(0, 1.0),
        lambda w: torch.add(w, 1, out=w),
        lambda w: w.copy_(torch.zeros(8, 16)),
    ):
        with pytest.raises(RuntimeError, match="computed from its parameters"):
            write(layer.weight)
    assert type(layer.weight * 2) is torch.Tensor  # results are plain tensors
    x = torch.randn(3, 16)
    torch.testing.assert_close(torch.nn.functional.linear(x, layer.weight, layer.bias), layer(x))
    adapter = snn.Adapter(torch.nn.Linear(16, 8), snn.Linear(16, 8, "lowrank", rank=2, bias=False))
    with pytest.raises(RuntimeError, match="computed from its parameters"):
        adapter.weight.zero_()


def test_projection_of_half_precision_and_non_finite_weights():
    model = torch.nn.Sequential(torch.nn.Linear(32, 32)).bfloat16()
    W = model[0].weight.detach().float()
    snn.replace_linear(model, "monarch", nblocks=4, project=True)
    assert model[0].blocks_0.dtype == torch.bfloat16
    expected = sl.project(W, sl.Monarch, blocks=sl.Monarch.layout(32, 32, 4)).to_dense()
    torch.testing.assert_close(model[0].weight.float(), expected, rtol=2e-2, atol=2e-2)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with torch.no_grad():
        model[0].weight[1, 2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        snn.replace_linear(model, "lowrank", rank=2, project=True)
    assert type(model[0]) is torch.nn.Linear


def test_what_surgery_passes_over():
    with pytest.raises(TypeError, match=r"needs a torch\.nn\.Module"):
        snn.replace_linear("model", "monarch")
    with pytest.raises(TypeError, match=r"needs a torch\.nn\.Module"):
        snn.densify(None)
    lazy = torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.Linear(8, 8))
    report = snn.replace_linear(lazy, "lowrank", rank=2)
    assert [s.name for s in report.skipped] == ["0"]
    assert "lazy" in report.skipped[0].reason
    # The frozen base of an adapter is not a candidate for replacement.
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    snn.add_adapters(model, "lowrank", rank=2)
    with pytest.warns(UserWarning, match="every matching layer was skipped"):
        report = snn.replace_linear(model, "monarch", nblocks=2)
    assert "merge_adapters" in report.skipped[0].reason
    with pytest.warns(UserWarning, match="every matching layer was skipped"):
        report = snn.densify(model)
    assert isinstance(model[0], snn.Adapter)


def test_progress_bar(capsys):
    pytest.importorskip("tqdm")
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 16))
    snn.replace_linear(model, "lowrank", rank=2, project=True, progress=True)
    assert "replace_linear (lowrank)" in capsys.readouterr().err


def test_report_table_and_dict():
    model = hf_models.gpt2()
    report = snn.replace_linear(model, "monarch", nblocks=4, project=True, filter="*.mlp.*")
    text = str(report)
    assert "transformer.h.0.mlp.c_fc" in text
    assert "Conv1D" in text
    assert "total (4 layers)" in text
    json.dumps(report.to_dict())
    with pytest.raises(KeyError):
        report["lm_head"]


def test_replace_linear_on_meta_and_bad_input():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    report = snn.replace_linear(model, "monarch", nblocks=4)
    assert model[0].blocks_0.is_meta
    assert len(report) == 1
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    with pytest.raises(ValueError, match="meta device"):
        snn.replace_linear(model, "monarch", project=True)
    with pytest.raises(TypeError, match="takes no option nblock"):
        snn.replace_linear(torch.nn.Sequential(torch.nn.Linear(16, 16)), "monarch", nblock=4)


def test_densify_restores_the_original_classes():
    tiny = MODELS["gpt2"]
    model = tiny.build().eval()
    with pytest.warns(UserWarning, match="tied"):
        snn.replace_linear(model, "btt", rank=2)
    before = tiny.output(model)
    report = snn.densify(model)
    assert len(report) == 8
    assert not any(isinstance(m, snn.Linear) for m in model.modules())
    assert type(model.transformer.h[0].mlp.c_fc).__name__ == "Conv1D"
    torch.testing.assert_close(tiny.output(model), before, rtol=1e-5, atol=1e-5)
    assert not hasattr(model.config, "structlin")
    # The densified model is a plain GPT-2 again: its state dict loads into a fresh one.
    fresh = tiny.build().eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(tiny.output(fresh), before, rtol=1e-5, atol=1e-5)


def test_densify_of_a_torch_model_and_of_weight_norm():
    model = torch.nn.Sequential(
        snn.Linear(16, 32, "kron", weight_norm=True),
        torch.nn.GELU(),
        snn.Linear(32, 16, "tt", rank=2),
    )
    x = torch.randn(4, 16)
    before = model(x)
    snn.densify(model, filter="2")
    assert type(model[2]) is torch.nn.Linear
    assert isinstance(model[0], snn.Linear)
    snn.densify(model)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_conv1d_from_linear_orientation():
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(24, 16)  # nf=24 outputs, nx=16 inputs
    layer = snn.Linear.from_linear(conv, "dense")
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-6, atol=1e-6)
    assert layer.origin == dense_layers.CONV1D
    np.testing.assert_allclose(layer.weight.detach().numpy(), conv.weight.detach().numpy().T)


def test_param_groups_width_transfer_covers_conv1d():
    model = hf_models.gpt2()  # n_embd 32: c_attn and c_fc read 32 features, mlp.c_proj 128
    snn.replace_linear(model, "monarch", nblocks=4, filter="mlp.c_fc")
    groups = snn.param_groups(model, lr=1e-3, base_fan_in=16)
    lr = {name: group["lr"] for group in groups for name in group["names"]}
    assert lr["transformer.h.0.attn.c_attn.weight"] == pytest.approx(1e-3 * 16 / 32)
    assert lr["transformer.h.0.mlp.c_proj.weight"] == pytest.approx(1e-3 * 16 / 128)
    assert lr["transformer.h.0.mlp.c_fc.blocks_0"] == pytest.approx(1e-3 * 2.0 * 16 / 32)
