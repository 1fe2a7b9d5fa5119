"""Model surgery: swap a model's dense layers for structured ones, and back.

[`replace_linear`][structlin.nn.replace_linear] puts structured
[`Linear`][structlin.nn.Linear] layers where a model has `nn.Linear` or Hugging Face
`Conv1D` layers; [`densify`][structlin.nn.densify] turns them back into equal dense
layers of the original class ("reverse sparsification"). Both edit in place and return
a [`SurgeryReport`][structlin.nn.SurgeryReport].
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from structlin.nn import dense_layers, selection
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

__all__ = ["densify", "replace_linear"]

# A projection over this many weight entries in all takes long enough to show progress.
_PROGRESS_ENTRIES = 1 << 24


def replace_linear(
    model: nn.Module,
    structure: str,
    *,
    filter: Filter = None,
    project: bool = False,
    weight_norm: bool = False,
    tied: Tied = "skip",
    progress: bool | None = None,
    **spec: Any,
) -> SurgeryReport:
    """Replace, in place, the dense layers of `model` that `filter` matches by structured
    [`Linear`][structlin.nn.Linear] layers of the same shape, bias, dtype and device.

    The dense layers are `nn.Linear` and its subclasses, and Hugging Face's
    `transformers.pytorch_utils.Conv1D` (GPT-2's attention and MLP projections,
    whose transposed weight is read the right way round). Real models' sharing is
    kept, never split:

    - a module that appears under several names is structured once, and every
      name holds the new layer;
    - a layer whose parameters are tied to another module's (GPT-2's `lm_head`
      and `transformer.wte`) is skipped with a warning naming both, unless
      `tied="untie"`, which structures it and leaves the other module its own copy.

    The `out_proj` of `nn.MultiheadAttention` is skipped: the attention reads
    `out_proj.weight` directly, so a structured one would be densified on every
    call. Owners that read `.weight` only on a fast path (the inference path of
    `nn.TransformerEncoderLayer`) get the dense matrix from
    [`Linear.weight`][structlin.nn.Linear.weight] and compute the same outputs.

    With `project=True` each new layer starts from its dense weight projected onto
    the structure (the Frobenius-nearest structured matrix, and the same bias): a
    dense layer that already has the structure is kept exactly, and the report
    gives each layer's relative projection error. Otherwise the structured layer is
    freshly initialised at its μP scale.

    When `model` is a Hugging Face model, its `config.structlin` records the new
    structure, so that `save_pretrained` saves it and
    [`from_pretrained`][structlin.nn.from_pretrained] rebuilds the model.

    Args:
        model: The model to edit.
        structure: A structure name (see [`structlin.nn.structures`][structlin.nn.structures]).
        filter: Which layers: `None` (all), a callable `filter(name, module) -> bool`,
            a pattern or a list of patterns (a name, a name's last parts such as
            `"mlp.c_fc"`, a glob such as `"*.mlp.*"` or a regular expression; see
            [`Filter`][structlin.nn.selection.Filter]).
        project: Initialise from the projected dense weights.
        weight_norm: Weight-normalise the new layers.
        tied: `"skip"` (default) or `"untie"`, for layers whose parameters are tied
            to another module's.
        progress: Show a progress bar (tqdm, if installed); by default only for
            projections of more than 16M weight entries in all.
        **spec: The structure's options, e.g. `nblocks=4`.

    Returns:
        A [`SurgeryReport`][structlin.nn.SurgeryReport]: per replaced layer its
        shape, parameters and multiply-adds per token before and after, and the
        projection error; per skipped layer the reason. `print` it for a table.

    Raises:
        ValueError, TypeError: a matching layer's shape does not fit the structure,
            an option is unknown, or `filter` or `tied` is malformed; nothing has
            been replaced then.

    Warns:
        UserWarning: no layer matched, a pattern of a list matched nothing, or a
            tied layer was skipped.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
        >>> report = snn.replace_linear(mlp, "monarch", nblocks=4, filter="0", project=True)
        >>> isinstance(mlp[0], snn.Linear), type(mlp[2]) is torch.nn.Linear, len(report)
        (True, True, 1)
    """
    chosen = selection.select(
        model,
        lambda module: dense_layers.dense_kind(module) is not None,
        filter,
        tied=tied,
        skip_reason=_skip_reason,
        what="replace_linear",
    )
    report = SurgeryReport("replace_linear", model)
    report.skipped = [_skipped(c, reason) for c, reason in chosen.skipped]
    entries = sum(_entries(c.module) for c in chosen.chosen)
    show = progress if progress is not None else project and entries >= _PROGRESS_ENTRIES
    # Build every replacement before touching the model, so a bad shape leaves it intact.
    built = []
    for candidate in _progress(chosen.chosen, show, f"replace_linear ({structure})"):
        layer = _structured(candidate.module, structure, project, weight_norm, spec)
        built.append((candidate, layer))
    for candidate, layer in built:
        report.changes.append(_change(candidate, layer, project))
        selection.set_module(model, candidate.names, layer)
    from structlin.nn.serialization import record_structure

    record_structure(model)
    return report


def densify(model: nn.Module, *, filter: Filter = None, tied: Tied = "skip") -> SurgeryReport:
    """Turn, in place, every structured [`Linear`][structlin.nn.Linear] that `filter`
    matches into an equal dense layer ("reverse sparsification": train structured,
    where each step is cheaper, then densify and train on).

    Each becomes the class it replaced (its [`origin`][structlin.nn.Linear.origin]):
    a Hugging Face `Conv1D` for GPT-2's projections, so the densified model loads
    into a plain `transformers` model again, and `nn.Linear` otherwise. The dense
    weight is the exact matrix the layer applied (weight-normalised if it was),
    with the same bias, dtype, device and training mode. The adapters of
    [`add_adapters`][structlin.nn.add_adapters] are folded by
    [`merge_adapters`][structlin.nn.merge_adapters] instead.

    The model's parameters change, so an optimizer built over the structured
    parameters must be rebuilt (its state for them, Adam's moments, has no dense
    counterpart; the dense layers start with fresh state).

    Args:
        model: The model to edit.
        filter: Which layers (as in [`replace_linear`][structlin.nn.replace_linear]).
        tied: As in [`replace_linear`][structlin.nn.replace_linear].

    Returns:
        A [`SurgeryReport`][structlin.nn.SurgeryReport].

    Examples:
        >>> import torch, structlin.nn as snn
        >>> model = torch.nn.Sequential(snn.Linear(64, 64, "monarch"), torch.nn.GELU())
        >>> x = torch.randn(3, 64)
        >>> before = model(x)
        >>> report = snn.densify(model)
        >>> type(model[0]).__name__, torch.allclose(model(x), before, atol=1e-6)
        ('Linear', True)
    """
    from structlin.nn.adapters import Adapter

    chosen = selection.select(
        model,
        lambda module: isinstance(module, Linear),
        filter,
        tied=tied,
        skip_reason=lambda name, module, parent: (
            "the delta of an adapter; fold it with merge_adapters"
            if isinstance(parent, Adapter)
            else None
        ),
        what="densify",
    )
    report = SurgeryReport("densify", model)
    report.skipped = [_skipped(c, reason) for c, reason in chosen.skipped]
    built = []
    for candidate in chosen.chosen:
        layer = candidate.module
        kind = dense_layers.CONV1D if layer.origin == dense_layers.CONV1D else dense_layers.LINEAR
        with torch.no_grad():
            dense = dense_layers.make_dense(
                kind,
                layer.weight.detach(),
                None if layer.bias is None else layer.bias.detach(),
                requires_grad=any(p.requires_grad for p in layer.parameters()),
            )
        dense.train(layer.training)
        built.append((candidate, dense))
    for candidate, dense in built:
        layer = candidate.module
        before = f"structlin.Linear({layer.structure})"
        report.changes.append(
            densified_change(candidate.name, candidate.names[1:], before, layer, dense)
        )
        selection.set_module(model, candidate.names, dense)
    from structlin.nn.serialization import record_structure

    record_structure(model)
    return report


def _skip_reason(name: str, module: nn.Module, parent: nn.Module | None) -> str | None:
    from structlin.nn.adapters import Adapter

    if isinstance(parent, nn.MultiheadAttention):
        return (
            "nn.MultiheadAttention reads out_proj.weight directly instead of calling the "
            "layer, so a structured out_proj would be densified on every call"
        )
    if isinstance(parent, Adapter):
        return "the frozen base of an adapter; fold it with merge_adapters first"
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()):
        return "its parameters are uninitialised (a lazy layer); run the model once first"
    return None


def _skipped(candidate: selection.Candidate, reason: str) -> SkippedLayer:
    return SkippedLayer(candidate.name, type(candidate.module).__name__, reason)


def _entries(module: nn.Module) -> int:
    d_in, d_out = dense_layers.features(module)
    return d_in * d_out


def _progress(items: list[Any], show: bool, description: str) -> Any:
    if not show:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            "progress=True needs tqdm (pip install tqdm); continuing without a progress bar",
            UserWarning,
            stacklevel=3,
        )
        return items
    return tqdm(items, desc=description, unit="layer")


def _structured(
    module: nn.Module, structure: str, project: bool, weight_norm: bool, spec: dict[str, Any]
) -> Linear:
    if project:
        layer = Linear.from_linear(module, structure, weight_norm=weight_norm, **spec)
    else:
        weight = dense_layers.dense_weight(module)
        d_out, d_in = weight.shape
        layer = Linear(
            d_in,
            d_out,
            structure,
            bias=dense_layers.bias_of(module) is not None,
            weight_norm=weight_norm,
            dtype=weight.dtype,
            device=weight.device,
            **spec,
        )
        layer.origin = dense_layers.qualified_name(type(module))
    layer.train(module.training)
    return layer


def _change(candidate: selection.Candidate, layer: Linear, project: bool) -> LayerChange:
    module = candidate.module
    W = dense_layers.dense_weight(module).detach()
    error = None
    if project:
        with torch.no_grad():
            norm = torch.linalg.matrix_norm(W.double())
            diff = torch.linalg.matrix_norm((W - layer.weight).double())
            error = float(diff / norm) if norm > 0 else float(diff)
    note = f"untied from {', '.join(candidate.tied_to)}" if candidate.tied_to else ""
    return LayerChange(
        name=candidate.name,
        aliases=candidate.names[1:],
        before=type(module).__name__,
        after=f"structlin.Linear({layer.structure})",
        shape=(layer.out_features, layer.in_features),
        structure=layer.structure,
        spec=dict(layer.spec),
        params_before=parameter_count(module),
        params_after=parameter_count(layer),
        macs_before=layer.in_features * layer.out_features,
        macs_after=macs_per_token(layer, layer.in_features),
        projection_error=error,
        note=note,
    )
