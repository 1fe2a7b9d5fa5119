"""Structured adapters: a frozen dense layer plus a trainable structured delta.

The structured analogue of LoRA: `y = x W^T + b + x Δ^T` with `W` frozen and `Δ` a
Monarch, BTT, low-rank, Kronecker, block-diagonal or any other operator, applied
through its structured product, so the dense `Δ` is never formed while training.
[`add_adapters`][structlin.nn.add_adapters] wraps a model's dense layers,
[`merge_adapters`][structlin.nn.merge_adapters] folds `Δ` into `W` exactly, and
[`adapter_state_dict`][structlin.nn.adapter_state_dict] /
[`load_adapter_state_dict`][structlin.nn.load_adapter_state_dict] save and load the
deltas on their own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from structlin.nn import dense_layers, selection
from structlin.nn.computed_weight import ComputedWeight
from structlin.nn.linear import Linear
from structlin.nn.report import (
    LayerChange,
    SkippedLayer,
    SurgeryReport,
    densified_change,
    macs_per_token,
    parameter_count,
)
from structlin.nn.selection import Filter, Tied
from structlin.operator import LinearOperator

__all__ = [
    "Adapter",
    "adapter_state_dict",
    "add_adapters",
    "load_adapter_state_dict",
    "merge_adapters",
]

Structure = str | Callable[[int, int], LinearOperator]
"""A structure name, or `make(in_features, out_features) -> LinearOperator` returning
any `out_features x in_features` operator expression."""


class Adapter(nn.Module):
    """`y = base(x) + delta(x)`: a frozen dense layer and a trainable structured delta.

    `base` is the original `nn.Linear` or Hugging Face `Conv1D`, unchanged;
    `delta` a bias-free structured [`Linear`][structlin.nn.Linear], so the
    parameters are named `base.weight`, `base.bias` and `delta.blocks_0`,
    `delta.blocks_1`, ... and carry the μP multipliers of the delta's structure
    alone ([`param_groups`][structlin.nn.param_groups] finds them). The delta costs
    its own structured product, on top of the base layer's dense one.

    Args:
        base: The dense layer.
        delta: The structured delta, of the same shape and without bias.

    Raises:
        TypeError: `base` is not a dense layer or `delta` not a structured one.
        ValueError: their shapes differ, or `delta` has a bias.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> base = torch.nn.Linear(16, 16)
        >>> adapter = snn.Adapter(base, snn.Linear(16, 16, "lowrank", rank=2, bias=False))
        >>> [name for name, _ in adapter.named_parameters()]
        ['base.weight', 'base.bias', 'delta.U', 'delta.V']
        >>> x = torch.randn(3, 16)
        >>> torch.allclose(adapter(x), base(x) + adapter.delta(x))
        True

        [`add_adapters`][structlin.nn.add_adapters] builds these in a model, with a zero
        delta and the base frozen.
    """

    def __init__(self, base: nn.Module, delta: Linear):
        super().__init__()
        kind = dense_layers.dense_kind(base)
        if kind is None:
            raise TypeError(
                f"Adapter: base must be an nn.Linear or a transformers Conv1D, got {type(base).__name__}"
            )
        if not isinstance(delta, Linear):
            raise TypeError(
                f"Adapter: delta must be a structlin.nn.Linear, got {type(delta).__name__}"
            )
        d_in, d_out = dense_layers.features(base)
        if (delta.in_features, delta.out_features) != (d_in, d_out):
            raise ValueError(
                f"Adapter: delta maps {delta.in_features} -> {delta.out_features} features but "
                f"base maps {d_in} -> {d_out}"
            )
        if delta.bias is not None:
            raise ValueError("Adapter: delta must have no bias (the base layer's bias is kept)")
        self.base = base
        self.delta = delta
        self.in_features, self.out_features = d_in, d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)

    @property
    def weight(self) -> torch.Tensor:
        """The merged dense weight `W + Δ`, `(out_features, in_features)`, for code that
        reads `.weight`; computed on every access (see [`Linear.weight`][structlin.nn.Linear.weight])."""
        merged = dense_layers.dense_weight(self.base) + self.delta.weight
        return merged.as_subclass(ComputedWeight)

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias."""
        return dense_layers.bias_of(self.base)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A dense layer of the base's class computing this adapter's function exactly
        (`W + Δ`, and the bias), with new parameters; trainable as the base was."""
        base_weight = dense_layers.dense_weight(self.base)
        return dense_layers.make_dense(
            dense_layers.dense_kind(self.base),
            base_weight + self.delta.weight.to(base_weight.dtype),
            None if self.bias is None else self.bias.detach(),
            requires_grad=base_weight.requires_grad,
        ).train(self.training)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def add_adapters(
    model: nn.Module,
    structure: Structure,
    *,
    filter: Filter = None,
    freeze: bool = True,
    tied: Tied = "skip",
    **spec: Any,
) -> SurgeryReport:
    """Wrap, in place, the dense layers `filter` matches in [`Adapter`][structlin.nn.Adapter]s
    whose structured deltas start at zero, so the model's outputs are unchanged.

    The layers and their sharing rules are those of
    [`replace_linear`][structlin.nn.replace_linear] (`nn.Linear` and subclasses,
    Hugging Face `Conv1D`; shared modules wrapped once; tied layers skipped unless
    `tied="untie"`, which gives the adapter's frozen base its own copy of the shared
    weight). A named structure is initialised as a residual branch's
    output (`zero_init_last`): the components that write the delta's output are
    zero, the others drawn at their μP scale, so gradients reach every component
    from the first step (LoRA's `B = 0`, `A` random, for `"lowrank"`). An operator
    from a callable keeps its values except those same output components, which are
    zeroed.

    With `freeze=True` (the default, as in PEFT) every parameter of `model` outside
    the deltas stops requiring gradients: build the optimizer after this call, e.g.
    `torch.optim.AdamW(snn.param_groups(model, lr))`, which leaves frozen
    parameters out and gives the deltas their structure's μP learning rates.

    Args:
        model: The model to edit.
        structure: A registered structure name (`"monarch"`, `"btt"`, `"lowrank"`, ...; see
            [`structlin.nn.structures`][structlin.nn.structures]), or a callable
            `make(in_features, out_features)` returning any operator expression.
        filter: Which layers (as in [`replace_linear`][structlin.nn.replace_linear]).
        freeze: Freeze every parameter but the deltas'.
        tied: As in [`replace_linear`][structlin.nn.replace_linear].
        **spec: The structure's options (`nblocks=4`, `rank=8`, ...); none with a callable.

    Returns:
        A [`SurgeryReport`][structlin.nn.SurgeryReport]; `params_after` and
        `macs_after` are those of the whole adapter (base and delta), and each row's
        note gives the delta's (trainable) parameter count.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
        >>> x = torch.randn(3, 64)
        >>> before = mlp(x)
        >>> report = snn.add_adapters(mlp, "monarch", nblocks=4)
        >>> torch.equal(mlp(x), before), [n for n, p in mlp.named_parameters() if p.requires_grad]
        (True, ['0.delta.blocks_0', '0.delta.blocks_1', '2.delta.blocks_0', '2.delta.blocks_1'])
    """
    if callable(structure) and spec:
        raise TypeError(
            f"add_adapters: options {', '.join(sorted(spec))} apply to named structures only; "
            "a callable structure builds its own operator"
        )
    if not callable(structure) and not isinstance(structure, str):
        raise TypeError(
            "add_adapters: structure must be a structure name or a callable "
            f"make(in_features, out_features) -> LinearOperator, got {type(structure).__name__}"
        )
    from structlin.nn.surgery import _skip_reason

    chosen = selection.select(
        model,
        lambda module: dense_layers.dense_kind(module) is not None,
        filter,
        tied=tied,
        skip_reason=_skip_reason,
        what="add_adapters",
    )
    report = SurgeryReport("add_adapters", model)
    report.skipped = [
        SkippedLayer(c.name, type(c.module).__name__, reason) for c, reason in chosen.skipped
    ]
    built = []
    for candidate in chosen.chosen:
        # Untying gives the adapter's base its own copy of the shared parameters.
        base = copy.deepcopy(candidate.module) if candidate.tied_to else candidate.module
        built.append((candidate, Adapter(base, _delta(base, structure, spec))))
    for candidate, adapter in built:
        adapter.train(candidate.module.training)
        selection.set_module(model, candidate.names, adapter)
    if freeze:
        deltas = {
            id(p)
            for module in model.modules()
            if isinstance(module, Adapter)
            for p in module.delta.parameters()
        }
        for parameter in model.parameters():
            if id(parameter) not in deltas:
                parameter.requires_grad_(False)
    for candidate, adapter in built:
        delta = adapter.delta
        report.changes.append(
            LayerChange(
                name=candidate.name,
                aliases=candidate.names[1:],
                before=type(candidate.module).__name__,
                after=f"Adapter({delta.structure})",
                shape=(delta.out_features, delta.in_features),
                structure=delta.structure,
                spec=dict(delta.spec),
                params_before=parameter_count(candidate.module),
                params_after=parameter_count(adapter),
                macs_before=delta.in_features * delta.out_features,
                macs_after=macs_per_token(adapter, delta.in_features),
                note="; ".join(
                    [f"{parameter_count(delta):,} trainable (the delta)"]
                    + ([f"untied from {', '.join(candidate.tied_to)}"] if candidate.tied_to else [])
                ),
            )
        )
    from structlin.nn.serialization import record_structure

    record_structure(model)
    return report


def _delta(base: nn.Module, structure: Structure, spec: dict[str, Any]) -> Linear:
    weight = dense_layers.dense_weight(base)
    d_out, d_in = weight.shape
    if isinstance(structure, str):
        delta = Linear(
            d_in,
            d_out,
            structure,
            bias=False,
            zero_init_last=True,
            dtype=weight.dtype,
            device=weight.device,
            **spec,
        )
    else:
        op = structure(d_in, d_out)
        if not isinstance(op, LinearOperator) or op.shape != (d_out, d_in):
            got = op.shape if isinstance(op, LinearOperator) else type(op).__name__
            raise ValueError(
                f"add_adapters: structure({d_in}, {d_out}) must return a {d_out} x {d_in} "
                f"structlin operator, got {got}"
            )
        delta = Linear.from_operator(op, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            for name, info in delta.mup.items():
                if info.component.last:
                    getattr(delta, name).zero_()
    return delta


def merge_adapters(model: nn.Module, *, filter: Filter = None) -> SurgeryReport:
    """Fold, in place, every [`Adapter`][structlin.nn.Adapter] that `filter` matches into a
    dense layer of its base's class with weight `W + Δ` (exact: the delta's dense
    matrix is added once), trainable as the base was: after
    [`add_adapters`][structlin.nn.add_adapters] with `freeze=True` the merged model is
    entirely frozen, so call `model.requires_grad_(True)` to train all of it on.

    Returns:
        A [`SurgeryReport`][structlin.nn.SurgeryReport].

    Examples:
        >>> import torch, structlin.nn as snn
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
        >>> _ = snn.add_adapters(mlp, "lowrank", rank=4)
        >>> _ = snn.merge_adapters(mlp)
        >>> type(mlp[0]).__name__
        'Linear'
    """
    chosen = selection.select(
        model,
        lambda module: isinstance(module, Adapter),
        filter,
        tied="untie",  # an adapter's frozen base may be shared on purpose; merging copies it
        what="merge_adapters",
    )
    report = SurgeryReport("merge_adapters", model)
    built = [(c, c.module.merged()) for c in chosen.chosen]
    for candidate, dense in built:
        adapter = candidate.module
        before = f"Adapter({adapter.delta.structure})"
        report.changes.append(
            densified_change(candidate.name, candidate.names[1:], before, adapter, dense)
        )
        selection.set_module(model, candidate.names, dense)
    from structlin.nn.serialization import record_structure

    record_structure(model)
    return report


def _adapter_keys(model: nn.Module) -> set[str]:
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, Adapter):
            prefix = f"{name}.delta." if name else "delta."
            keys.update(prefix + key for key in module.delta.state_dict())
    return keys


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state of every adapter's delta in `model` (keys as in `model.state_dict()`),
    and nothing of the frozen model: what to save after adapter training.

    A fresh copy of the base model takes it back after
    [`apply_structure`][structlin.nn.apply_structure] (or the same
    [`add_adapters`][structlin.nn.add_adapters] call) with
    [`load_adapter_state_dict`][structlin.nn.load_adapter_state_dict].

    Raises:
        ValueError: `model` has no adapters.

    Examples:
        >>> import copy, torch, structlin.nn as snn
        >>> model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU())
        >>> fresh = copy.deepcopy(model)  # stands for the base model, loaded again later
        >>> _ = snn.add_adapters(model, "lowrank", rank=2)
        >>> saved = snn.adapter_state_dict(model)  # ... train, then save only this
        >>> sorted(saved)
        ['0.delta.U', '0.delta.V']
        >>> _ = snn.add_adapters(fresh, "lowrank", rank=2)
        >>> snn.load_adapter_state_dict(fresh, saved)
        >>> x = torch.randn(4, 32)
        >>> torch.equal(fresh(x), model(x))
        True
    """
    keys = _adapter_keys(model)
    if not keys:
        raise ValueError("adapter_state_dict: the model has no adapters (see add_adapters)")
    return {k: v for k, v in model.state_dict().items() if k in keys}


def load_adapter_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Load the deltas saved by [`adapter_state_dict`][structlin.nn.adapter_state_dict]
    into `model`'s adapters, leaving every other parameter as it is.

    Raises:
        KeyError: `state_dict` lacks a delta of the model, or holds a key that is not
            one (a different model, or adapters on other layers).

    Examples:
        >>> import copy, torch, structlin.nn as snn
        >>> model = torch.nn.Sequential(torch.nn.Linear(32, 32))
        >>> fresh = copy.deepcopy(model)
        >>> _ = snn.add_adapters(model, "monarch", nblocks=4)
        >>> _ = snn.add_adapters(fresh, "monarch", nblocks=4)
        >>> snn.load_adapter_state_dict(fresh, snn.adapter_state_dict(model))
        >>> x = torch.randn(2, 32)
        >>> torch.equal(fresh(x), model(x))
        True
    """
    keys = _adapter_keys(model)
    missing = sorted(keys - set(state_dict))
    unexpected = sorted(set(state_dict) - keys)
    if missing or unexpected:
        raise KeyError(
            "load_adapter_state_dict: the state dict does not match the model's adapters; "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} (add the same adapters "
            "first, with add_adapters or apply_structure)"
        )
    model.load_state_dict(dict(state_dict), strict=False)
