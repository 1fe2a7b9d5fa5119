"""The dense layers model surgery reads and writes: `nn.Linear` (and its subclasses) and
Hugging Face's `Conv1D`.

GPT-2 and other OpenAI-style models in `transformers` compute their projections with
`transformers.pytorch_utils.Conv1D`: `y = x @ W + b` with `W` stored
`(in_features, out_features)`, the transpose of `nn.Linear`'s layout. Everything
here speaks `nn.Linear`'s orientation, `(out_features, in_features)`, and converts at
this boundary only. transformers is never imported: a model holding a `Conv1D` has
imported it already.

Examples:
    >>> import torch
    >>> from structlin.nn import dense_layers
    >>> layer = torch.nn.Linear(4, 3)
    >>> dense_layers.dense_kind(layer), dense_layers.features(layer)
    ('torch.nn.Linear', (4, 3))
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

__all__ = [
    "CONV1D",
    "LINEAR",
    "bias_of",
    "dense_kind",
    "dense_weight",
    "features",
    "make_dense",
    "qualified_name",
]

LINEAR = "torch.nn.Linear"
"""What `dense_kind` names an `nn.Linear` (or subclass): its class's public path."""
CONV1D = "transformers.pytorch_utils.Conv1D"
"""What `dense_kind` names a Hugging Face `Conv1D` (or subclass): its class's public path."""


def qualified_name(cls: type) -> str:
    """`module.QualName` of a class, with torch's `torch.nn.modules.linear` shortened to
    its public path `torch.nn`."""
    if cls is nn.Linear:
        return LINEAR
    return f"{cls.__module__}.{cls.__qualname__}"


def _conv1d_class() -> type | None:
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def dense_kind(module: nn.Module) -> str | None:
    """[`LINEAR`][structlin.nn.dense_layers.LINEAR] for an `nn.Linear` (or subclass),
    [`CONV1D`][structlin.nn.dense_layers.CONV1D] for a transformers `Conv1D` (or
    subclass), `None` for anything else."""
    if isinstance(module, nn.Linear):
        return LINEAR
    conv1d = _conv1d_class()
    if conv1d is not None and isinstance(module, conv1d):
        return CONV1D
    return None


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight in `nn.Linear`'s orientation, `(out_features, in_features)`:
    a view of the parameter, not a copy."""
    kind = dense_kind(module)
    if kind == CONV1D:
        return module.weight.T
    if kind == LINEAR:
        return module.weight
    raise TypeError(f"not a dense layer: {type(module).__name__}")


def make_dense(
    kind: str, weight: torch.Tensor, bias: torch.Tensor | None, *, requires_grad: bool = True
) -> nn.Module:
    """A new dense layer of `kind` computing `x @ weight.T + bias`, holding copies.

    `weight` has shape `(out_features, in_features)` whatever the kind; the
    `Conv1D` stores its transpose. Its parameters are on `weight`'s device and dtype.

    Raises:
        ValueError: an unknown `kind`, or `Conv1D` without transformers imported.
    """
    d_out, d_in = weight.shape
    with torch.no_grad():
        if kind == LINEAR:
            layer: nn.Module = nn.Linear(
                d_in, d_out, bias=bias is not None, dtype=weight.dtype, device=weight.device
            )
            layer.weight.copy_(weight)
        elif kind == CONV1D:
            conv1d = _conv1d_class()
            if conv1d is None:
                import transformers.pytorch_utils  # the model named it, so it is installed

                conv1d = transformers.pytorch_utils.Conv1D
            layer = conv1d(d_out, d_in).to(device=weight.device, dtype=weight.dtype)
            layer.weight.copy_(weight.T)
            if bias is None:  # Conv1D always has a bias; a zero one computes the same
                layer.bias.zero_()
        else:
            raise ValueError(f"unknown dense layer kind {kind!r}; choose {LINEAR!r} or {CONV1D!r}")
        if bias is not None:
            layer.bias.copy_(bias)
    for parameter in layer.parameters():
        parameter.requires_grad_(requires_grad)
    return layer


def features(module: nn.Module) -> tuple[int, int]:
    """`(in_features, out_features)` of a dense layer."""
    d_out, d_in = dense_weight(module).shape
    return d_in, d_out


def bias_of(module: nn.Module) -> Any:
    """The layer's bias parameter, or `None`."""
    return getattr(module, "bias", None)
