"""Tiny Hugging Face models built from config objects (nothing is downloaded), with the
names of their MLP layers and an input that runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class TinyModel:
    name: str
    build: Callable[[], torch.nn.Module]
    model_kwargs: dict
    mlp_filter: str  # a pattern replace_linear takes, matching exactly the MLP layers
    n_mlp: int
    inputs: Callable[[], dict[str, torch.Tensor]]

    def output(self, model: torch.nn.Module) -> torch.Tensor:
        out = model(**self.inputs())
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _tokens() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))}


def _pixels() -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}


def gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=96,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return BertModel(config, add_pooling_layer=False)


def llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM(config)


def vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    return ViTModel(config, add_pooling_layer=False)


MODELS = [
    TinyModel("gpt2", gpt2, {}, "*.mlp.*", 4, _tokens),
    TinyModel(
        "bert",
        bert,
        {"add_pooling_layer": False},
        r"encoder\.layer\.\d+\.(intermediate|output)\.dense",
        4,
        _tokens,
    ),
    TinyModel("llama", llama, {}, "*.mlp.*", 6, _tokens),
    TinyModel("vit", vit, {"add_pooling_layer": False}, "*.mlp.*", 4, _pixels),
]
