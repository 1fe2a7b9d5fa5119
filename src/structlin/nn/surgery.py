"""Model surgery: swap a model's `nn.Linear` layers for structured ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from structlin.nn.linear import Linear

__all__ = ["replace_linear"]


def replace_linear(
    model: nn.Module,
    structure: str,
    *,
    filter: Callable[[str, nn.Linear], bool] | None = None,
    project: bool = False,
    weight_norm: bool = False,
    **spec: Any,
) -> nn.Module:
    """Replace, in place, every `nn.Linear` of `model` that `filter` accepts by a
    structured [`Linear`][structlin.nn.Linear] of the same shape, bias, dtype and device.

    Only modules of exactly type `nn.Linear` are candidates: subclasses (such as the
    `out_proj` of `nn.MultiheadAttention`, whose weight the attention reads
    directly) are left alone.

    With `project=True` the new layer starts from the dense weights projected onto
    the structure ([`Linear.from_linear`][structlin.nn.Linear.from_linear]: the
    Frobenius-nearest structured matrix, and the same bias), for dense-to-structured
    fine-tuning; a dense layer that already has the structure is kept exactly.
    Otherwise the structured layer is freshly initialised at its μP scale.

    The way back is [`Linear.to_dense_linear`][structlin.nn.Linear.to_dense_linear]
    ("reverse sparsification").

    Args:
        model: The model to edit; also returned.
        structure: A structure name (see [`structlin.nn.structures`][structlin.nn.structures]).
        filter: `filter(qualified_name, linear) -> bool`; all `nn.Linear` layers if `None`.
        project: Initialise from the projected dense weights.
        weight_norm: Weight-normalise the new layers.
        **spec: The structure's options, e.g. `nblocks=4`.

    Raises:
        ValueError, TypeError: a matching layer's shape does not fit the structure or
            an option is unknown; nothing has been replaced then.

    Example:
        >>> import torch, structlin.nn as snn
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
        >>> mlp = snn.replace_linear(mlp, "monarch", nblocks=4, filter=lambda name, m: m.in_features == 64)
        >>> isinstance(mlp[0], snn.Linear), type(mlp[2]) is torch.nn.Linear
        (True, True)
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and (filter is None or filter(name, module))
    ]
    if any(name == "" for name, _ in targets):
        raise ValueError(
            "replace_linear edits a model's submodules and cannot replace the model itself; "
            "use structlin.nn.Linear.from_linear(linear, structure) for a single layer"
        )
    # Build every replacement before touching the model, so a bad shape leaves it intact.
    new = {
        name: _structured(module, structure, project, weight_norm, spec) for name, module in targets
    }
    for name, layer in new.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, layer)
    return model


def _structured(
    linear: nn.Linear, structure: str, project: bool, weight_norm: bool, spec: dict[str, Any]
) -> Linear:
    if project:
        return Linear.from_linear(linear, structure, weight_norm=weight_norm, **spec)
    return Linear(
        linear.in_features,
        linear.out_features,
        structure,
        bias=linear.bias is not None,
        weight_norm=weight_norm,
        dtype=linear.weight.dtype,
        device=linear.weight.device,
        **spec,
    )
