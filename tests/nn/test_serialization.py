"""Structured models save and reload: structure_spec / apply_structure, and Hugging Face's
save_pretrained with structlin.nn.from_pretrained."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import structlin as sl  # noqa: E402
import structlin.nn as snn  # noqa: E402


def _dense_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 32),
        torch.nn.GELU(),
        torch.nn.Linear(32, 30),
        torch.nn.Linear(30, 32, bias=False),
    )


def _round_trip(model: torch.nn.Module, make_fresh) -> torch.nn.Module:
    spec = json.loads(json.dumps(snn.structure_spec(model)))
    fresh = make_fresh()
    snn.apply_structure(fresh, spec)
    fresh.load_state_dict(model.state_dict())  # strict: every key has its slot
    return fresh


def test_spec_round_trip_of_every_structure_and_expressions():
    model = _dense_model()
    snn.replace_linear(model, "monarch", nblocks=4, filter="0", weight_norm=True)
    snn.replace_linear(model, "btt", rank=2, filter="2", project=True)
    snn.replace_linear(model, "kron", filter="4")
    snn.replace_linear(model, "tt", rank=2, filter="6")
    # An operator expression with a permutation, a scalar and a transpose.
    permutation = sl.Permutation(np.random.default_rng(0).permutation(30))
    op = 0.5 * (permutation @ sl.Monarch.random(32, 30, 2, rng=0)).T  # 32 x 30
    model[7] = snn.Linear.from_operator(op, bias=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(5, 32)
    fresh = _round_trip(model, _dense_model)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    for a, b in zip(model, fresh, strict=True):
        assert type(a) is type(b)
        if isinstance(a, snn.Linear):
            assert (a.structure, a.spec, a.origin, a.weight_norm) == (
                b.structure,
                b.spec,
                b.origin,
                b.weight_norm,
            )
            assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]


def test_spec_round_trip_keeps_sharing_and_a_monarch_checkpoint_layout():
    shared = torch.nn.Linear(16, 16)

    def make():
        shared = torch.nn.Linear(16, 16)
        return torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.Linear(10, 13))

    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.Linear(10, 13))
    snn.replace_linear(model, "lowrank", rank=2, filter="0")
    checkpoint = {
        "blkdiag1": torch.randn(4, 3, 3),
        "blkdiag2": torch.randn(4, 4, 3),
        "bias": torch.zeros(13),
    }
    model[3] = snn.Linear.from_monarch_state_dict(checkpoint, 10, 13)
    fresh = _round_trip(model, make)
    assert fresh[0] is fresh[2]
    x = torch.randn(3, 16)
    torch.testing.assert_close(fresh[:3](x), model[:3](x), rtol=0, atol=0)
    y = torch.randn(3, 10)
    torch.testing.assert_close(fresh[3](y), model[3](y), rtol=0, atol=0)


def test_apply_structure_refuses_what_does_not_fit():
    model = _dense_model()
    snn.replace_linear(model, "monarch", nblocks=4, filter="2")
    spec = snn.structure_spec(model)
    with pytest.raises(ValueError, match="has no layer '2'"):
        snn.apply_structure(torch.nn.Sequential(torch.nn.Linear(64, 64)), spec)
    wrong = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(3)])
    with pytest.raises(ValueError, match="maps 8 -> 8 features"):
        snn.apply_structure(wrong, spec)
    assert len(snn.apply_structure(model, spec)) == 0  # already structured: nothing to do
    other = _dense_model()
    snn.replace_linear(other, "lowrank", rank=2, filter="2")
    with pytest.raises(ValueError, match="already a structured layer, but not the one"):
        snn.apply_structure(other, spec)
    with pytest.raises(ValueError, match="needs the dict"):
        snn.apply_structure(_dense_model(), {"layers": {}})
    with pytest.raises(ValueError, match="newer"):
        snn.apply_structure(_dense_model(), {**spec, "version": 99})


pytest.importorskip("transformers")
import hf_models  # noqa: E402


@pytest.mark.parametrize("tiny", hf_models.MODELS, ids=lambda m: m.name)
def test_hugging_face_save_pretrained_and_reload(tiny, tmp_path):
    torch.manual_seed(0)
    model = tiny.build().eval()
    snn.replace_linear(model, "monarch", nblocks=4, filter=tiny.mlp_filter, project=True)
    adapters = 0
    if tiny.name == "gpt2":
        adapters = len(
            snn.add_adapters(model, "lowrank", rank=2, filter="attn.c_proj", freeze=False)
        )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expected = tiny.output(model)
    model.save_pretrained(tmp_path)
    assert "structlin" in json.loads((tmp_path / "config.json").read_text())

    reloaded = snn.from_pretrained(type(model), tmp_path, **tiny.model_kwargs)
    assert not reloaded.training
    torch.testing.assert_close(tiny.output(reloaded), expected, rtol=0, atol=0)
    assert snn.structure_spec(reloaded) == snn.structure_spec(model)
    assert sum(isinstance(m, snn.Adapter) for m in reloaded.modules()) == adapters
    assert len(snn.structure_spec(reloaded)["layers"]) == tiny.n_mlp + adapters
    if tiny.name == "gpt2":
        assert reloaded.lm_head.weight is reloaded.transformer.wte.weight


def test_from_pretrained_with_an_auto_class_dtype_and_errors(tmp_path):
    from transformers import AutoModelForCausalLM

    tiny = next(m for m in hf_models.MODELS if m.name == "llama")
    model = tiny.build().eval()
    snn.replace_linear(model, "btt", rank=2, filter=tiny.mlp_filter, project=True)
    model.save_pretrained(tmp_path / "structured")
    reloaded = snn.from_pretrained(
        AutoModelForCausalLM, tmp_path / "structured", dtype=torch.float64
    )
    assert type(reloaded).__name__ == "LlamaForCausalLM"
    assert reloaded.model.layers[0].mlp.up_proj.cores_0.dtype == torch.float64
    torch.testing.assert_close(
        tiny.output(reloaded).float(), tiny.output(model), rtol=1e-5, atol=1e-5
    )

    snn.densify(model)
    assert not hasattr(model.config, "structlin")
    model.save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="no 'structlin' entry"):
        snn.from_pretrained(type(model), tmp_path / "dense")
    with pytest.raises(FileNotFoundError, match="no directory"):
        snn.from_pretrained(type(model), tmp_path / "nowhere")


@pytest.mark.parametrize("surgery", ["replace", "adapter"])
def test_untied_gpt2_head_saves_and_reloads(surgery, tmp_path):
    model = hf_models.gpt2().eval()
    if surgery == "replace":
        snn.replace_linear(model, "lowrank", rank=4, filter="lm_head", tied="untie")
    else:
        snn.add_adapters(model, "lowrank", rank=4, filter="lm_head", tied="untie")
        with torch.no_grad():
            model.lm_head.delta.U.normal_()
        assert model.lm_head.base.weight is not model.transformer.wte.weight
    assert model.config.tie_word_embeddings is False
    tokens = {"input_ids": torch.randint(0, 96, (2, 8))}
    expected = model(**tokens).logits
    model.save_pretrained(tmp_path)
    reloaded = snn.from_pretrained(type(model), tmp_path)
    torch.testing.assert_close(reloaded(**tokens).logits, expected, rtol=0, atol=0)


def test_models_sharing_a_config_object_stay_apart():
    first, second = hf_models.gpt2(), None
    second = type(first)(first.config)
    snn.replace_linear(first, "monarch", nblocks=4, filter="*.mlp.*")
    assert hasattr(first.config, "structlin")
    assert not hasattr(second.config, "structlin")
    assert first.transformer.config is first.config
