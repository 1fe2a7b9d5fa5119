"""What model surgery did: a row per edited layer, a row per layer passed over, as a table."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from structlin.nn import dense_layers

__all__ = ["LayerChange", "SkippedLayer", "SurgeryReport"]


@dataclass(frozen=True)
class LayerChange:
    """One layer that surgery edited.

    Attributes:
        name: The layer's qualified name in the model.
        aliases: Further names of the same module object (a shared layer is edited once).
        before: The class of the layer before (`"Linear"`, `"Conv1D"`, ...).
        after: The class after, with its structure (`"structlin.Linear(monarch)"`).
        shape: `(out_features, in_features)`.
        structure: The structure name (`"dense"` after densifying or merging).
        spec: The structure's options, defaults filled in.
        params_before: Parameters of the layer before (weight and bias).
        params_after: Parameters after (for an adapter, base and delta together).
        macs_before: Multiply-adds per token (per input row) before.
        macs_after: Multiply-adds per token after, counted by running the layer on one
            row under `torch.utils.flop_counter` (`None` where that could not run).
        projection_error: `||W - P||_F / ||W||_F` for a layer initialised by projecting
            its dense weight `W` onto the structure (`P`); `None` otherwise.
        note: Anything else worth knowing (`"untied from lm_head.weight"`).
    """

    name: str
    aliases: tuple[str, ...]
    before: str
    after: str
    shape: tuple[int, int]
    structure: str
    spec: dict[str, Any]
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    projection_error: float | None = None
    note: str = ""


@dataclass(frozen=True)
class SkippedLayer:
    """A layer that matched but was left alone, and why."""

    name: str
    type: str
    reason: str


@dataclass
class SurgeryReport:
    """What a surgery call ([`replace_linear`][structlin.nn.replace_linear],
    [`add_adapters`][structlin.nn.add_adapters], [`densify`][structlin.nn.densify], ...)
    did to a model, which it edited in place.

    Iterating gives the [`LayerChange`][structlin.nn.report.LayerChange]s; `len()` is
    their number; `report["name"]` looks one up; `str(report)` (or `print`) is a table
    with totals. `report.model` is the edited model.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
        >>> report = snn.replace_linear(mlp, "monarch", nblocks=4)
        >>> len(report), report["0"].params_before, report["0"].params_after
        (2, 16640, 5376)
    """

    action: str
    model: nn.Module
    changes: list[LayerChange] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.changes)

    def __iter__(self) -> Iterator[LayerChange]:
        return iter(self.changes)

    def __getitem__(self, name: str) -> LayerChange:
        for change in self.changes:
            if name == change.name or name in change.aliases:
                return change
        raise KeyError(f"{self.action} did not edit a layer named {name!r}")

    @property
    def params_before(self) -> int:
        """Parameters of the edited layers before."""
        return sum(c.params_before for c in self.changes)

    @property
    def params_after(self) -> int:
        """Parameters of the edited layers after."""
        return sum(c.params_after for c in self.changes)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable data (without the model)."""
        return {
            "action": self.action,
            "changes": [dataclasses.asdict(c) for c in self.changes],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    def __str__(self) -> str:
        header = ("layer", "before", "after", "shape", "params", "MACs/token", "proj. error")
        rows = [header]
        for c in self.changes:
            name = c.name + (f" (= {', '.join(c.aliases)})" if c.aliases else "")
            rows.append(
                (
                    name,
                    c.before,
                    c.after,
                    f"{c.shape[0]}x{c.shape[1]}",
                    f"{c.params_before:,} -> {c.params_after:,}",
                    f"{_count(c.macs_before)} -> {_count(c.macs_after)}",
                    "" if c.projection_error is None else f"{c.projection_error:.3g}",
                )
            )
        if self.changes:
            rows.append(
                (
                    f"total ({len(self.changes)} layers)",
                    "",
                    "",
                    "",
                    f"{self.params_before:,} -> {self.params_after:,}",
                    f"{_total(c.macs_before for c in self.changes)} -> "
                    f"{_total(c.macs_after for c in self.changes)}",
                    "",
                )
            )
        if all(c.projection_error is None for c in self.changes):
            rows = [row[:-1] for row in rows]  # nothing was projected
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [f"{self.action}: {len(self.changes)} edited, {len(self.skipped)} skipped"]
        for i, row in enumerate(rows):
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
            if i == 0 or (self.changes and i == len(rows) - 2):
                lines.append("  ".join("-" * w for w in widths))
        for s in self.skipped:
            lines.append(f"skipped {s.name} ({s.type}): {s.reason}")
        for c in self.changes:
            if c.note:
                lines.append(f"note {c.name}: {c.note}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _total(values: Any) -> str:
    values = list(values)
    return "?" if any(v is None for v in values) else f"{sum(values):,}"


def densified_change(
    name: str, aliases: tuple[str, ...], before: str, old: nn.Module, dense: nn.Module
) -> LayerChange:
    """The row for a layer (structured, or an adapter) that became the dense layer `dense`."""
    d_in, d_out = dense_layers.features(dense)
    return LayerChange(
        name=name,
        aliases=aliases,
        before=before,
        after=type(dense).__name__,
        shape=(d_out, d_in),
        structure="dense",
        spec={},
        params_before=parameter_count(old),
        params_after=parameter_count(dense),
        macs_before=macs_per_token(old, d_in),
        macs_after=d_in * d_out,
    )


def parameter_count(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of `module`, each shared one counted once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def macs_per_token(module: nn.Module, in_features: int) -> int | None:
    """Multiply-adds of one forward pass of `module` on a single row, counted by
    `torch.utils.flop_counter` (matrix products only; `None` if it cannot run)."""
    probe = next(iter(module.parameters()), None)
    if probe is None:
        return None
    x = torch.zeros(1, in_features, dtype=probe.dtype, device=probe.device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    except Exception:  # a layer that cannot run on one row (or on its device) has no count
        return None
    return counter.get_total_flops() // 2
