"""Structured adapters: a frozen dense weight plus a trainable structured delta."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_models  # noqa: E402
import structlin as sl  # noqa: E402
import structlin.nn as snn  # noqa: E402

MODELS = {m.name: m for m in hf_models.MODELS}


def _train(model, steps: int, inputs) -> None:
    optimizer = torch.optim.AdamW(snn.param_groups(model, lr=1e-2, weight_decay=0.1))
    for _ in range(steps):
        optimizer.zero_grad()
        inputs(model).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("structure", "spec"), [("monarch", {"nblocks": 4}), ("btt", {"rank": 2})])
def test_adapters_start_unchanged_train_alone_and_merge(name, structure, spec):
    tiny = MODELS[name]
    torch.manual_seed(0)
    model = tiny.build().eval()
    before = tiny.output(model)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    report = snn.add_adapters(model, structure, filter=tiny.mlp_filter, **spec)
    assert len(report) == tiny.n_mlp
    torch.testing.assert_close(tiny.output(model), before, rtol=0, atol=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all(".delta." in n for n in trainable)

    _train(model, 3, tiny.output)
    for key, value in model.state_dict().items():
        if ".delta." not in key:  # the base and every other weight are as they were
            torch.testing.assert_close(value, frozen[key.replace(".base.", ".")], rtol=0, atol=0)
    after = tiny.output(model)
    assert not torch.allclose(after, before)

    merged = snn.merge_adapters(model)
    assert len(merged) == tiny.n_mlp
    assert not any(isinstance(m, snn.Adapter) for m in model.modules())
    torch.testing.assert_close(tiny.output(model), after, rtol=1e-5, atol=1e-5)
    # Merged weights load into a plain model of the original class.
    fresh = tiny.build().eval()
    fresh.load_state_dict(model.state_dict())


def test_adapter_names_multipliers_and_operator_expressions():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    snn.add_adapters(model, "monarch", nblocks=4)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == [
        "0.delta.blocks_0",
        "0.delta.blocks_1",
        "2.delta.blocks_0",
        "2.delta.blocks_1",
    ]
    # The structure's own multipliers, as for a Monarch layer of that shape: not diluted.
    multipliers = snn.mup_lr_multipliers(model)
    assert (
        multipliers["0.delta.blocks_0"]
        == 2.0
        == snn.mup_lr_multipliers(snn.Linear(64, 64, "monarch"))["blocks_0"]
    )
    assert multipliers["0.base.weight"] == 1.0

    def make(d_in: int, d_out: int) -> sl.LinearOperator:
        rng = np.random.default_rng(0)
        return sl.Monarch.random(d_in, d_out, 4, rng=1) + sl.LowRank(
            rng.standard_normal((d_out, 2)), rng.standard_normal((2, d_in))
        )

    model = torch.nn.Sequential(torch.nn.Linear(64, 32))
    x = torch.randn(5, 64)
    before = model(x)
    snn.add_adapters(model, make)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    delta = model[0].delta
    assert delta.structure == "Sum"
    assert all(p.requires_grad for p in delta.parameters())
    with torch.no_grad():
        delta.ops_1_U.normal_()
    torch.testing.assert_close(
        model(x), x @ (model[0].base.weight + delta.weight).T + model[0].base.bias
    )
    torch.testing.assert_close(model[0].weight, model[0].base.weight + delta.weight)


def test_adapter_state_dict_round_trip_through_a_fresh_model():
    tiny = MODELS["gpt2"]
    torch.manual_seed(0)
    base = tiny.build().eval()
    model = tiny.build().eval()
    model.load_state_dict(base.state_dict())
    snn.add_adapters(model, "lowrank", rank=3, filter="*.mlp.*")
    _train(model, 2, tiny.output)
    saved = snn.adapter_state_dict(model)
    assert saved
    assert all(".delta." in k for k in saved)
    spec = snn.structure_spec(model)

    fresh = tiny.build().eval()
    fresh.load_state_dict(base.state_dict())
    snn.apply_structure(fresh, spec)
    snn.load_adapter_state_dict(fresh, saved)
    torch.testing.assert_close(tiny.output(fresh), tiny.output(model), rtol=0, atol=0)
    with pytest.raises(KeyError, match="missing"):
        snn.load_adapter_state_dict(fresh, {k: v for k, v in list(saved.items())[1:]})
    with pytest.raises(ValueError, match="no adapters"):
        snn.adapter_state_dict(base)


def test_adapter_bad_input():
    model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    with pytest.raises(TypeError, match="apply to named structures only"):
        snn.add_adapters(model, lambda i, o: sl.Dense(np.zeros((o, i))), rank=2)
    with pytest.raises(ValueError, match="must return a 16 x 16"):
        snn.add_adapters(model, lambda i, o: sl.Dense(np.zeros((o, 2 * i))))
    with pytest.raises(TypeError, match="structure must be"):
        snn.add_adapters(model, 4)
    with pytest.raises(ValueError, match="divisible"):
        snn.add_adapters(model, "blockdiag", nblocks=3)
    assert type(model[0]) is torch.nn.Linear
    with pytest.raises(ValueError, match="no bias"):
        snn.Adapter(torch.nn.Linear(4, 4), snn.Linear(4, 4, "dense"))
