"""The result of a coordinate check: activation and update sizes per width, step and layer.

A coordinate check (Yang et al., 2021, "Tensor Programs V", Section 6 and Figure 5;
microsoft/mup's `get_coord_data`) trains the same model at several widths for a few
steps and records the typical size of every layer's output. Under a correct μP the sizes
do not change with width; under the standard parametrisation they grow (or vanish) as a
power of it. [`CoordCheck`][structlin.nn.CoordCheck] holds the numbers, judges them and
plots them; [`structlin.nn.coord_check`][structlin.nn.coord_check] (PyTorch) and
[`structlin.nn.jax.coord_check`][structlin.nn.jax.coord_check] produce it. Needs neither
PyTorch nor JAX (matplotlib for the plot).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CoordCheck", "CoordRecord"]

KINDS = ("size", "update")
PARAMETRIZATIONS = ("mup", "sp")


@dataclass(frozen=True)
class CoordRecord:
    """One measurement: a layer's output on the fixed probe batch after `step` steps.

    Attributes:
        width: The model's width.
        seed: The seed the model was built and trained with.
        step: Optimizer steps taken (0 is at initialisation).
        module: The layer's name (`"<output>"` for the model's output).
        size: `mean |h_t|`, the mean absolute entry of the layer's output `h_t`.
        update: `mean |h_t - h_0|`, how far training has moved it (0 at step 0).

    Examples:
        >>> from structlin.nn import CoordRecord
        >>> CoordRecord(width=64, seed=0, step=1, module="0", size=0.5, update=0.125)
        CoordRecord(width=64, seed=0, step=1, module='0', size=0.5, update=0.125)
    """

    width: int
    seed: int
    step: int
    module: str
    size: float
    update: float


@dataclass(frozen=True)
class CoordCheck:
    """Activation and update sizes of every recorded layer, per width and step.

    Attributes:
        records: Every measurement, one per width, seed, step and layer.
        parametrization: `"mup"` or `"sp"` (the standard parametrisation).
        optimizer: `"adam"` or `"sgd"`.
        lr: The learning rate (at the base width, under μP).

    Examples:
        A layer whose updates grow in proportion to the width, as Adam's do under the
        standard parametrisation:

        >>> from structlin.nn import CoordCheck, CoordRecord
        >>> check = CoordCheck(
        ...     tuple(CoordRecord(w, 0, t, "hidden", 1.0, 0.01 * t * w) for w in (64, 1024) for t in (0, 1)),
        ...     parametrization="sp", optimizer="adam", lr=1e-2,
        ... )
        >>> check.growth("hidden", kind="update"), round(check.slope("hidden", kind="update"), 3)
        (16.0, 1.0)
        >>> check.unstable(factor=2)
        [('hidden', 'update', 1, 16.0)]
    """

    records: tuple[CoordRecord, ...]
    parametrization: str
    optimizer: str
    lr: float

    # -- reading ---------------------------------------------------------------------
    @property
    def widths(self) -> tuple[int, ...]:
        """The widths checked, ascending."""
        return tuple(sorted({r.width for r in self.records}))

    @property
    def steps(self) -> tuple[int, ...]:
        """The steps recorded, ascending (0 is at initialisation)."""
        return tuple(sorted({r.step for r in self.records}))

    @property
    def modules(self) -> tuple[str, ...]:
        """The layers recorded, in the order they ran."""
        return tuple(dict.fromkeys(r.module for r in self.records))

    def value(self, module: str, width: int, step: int, kind: str = "size") -> float:
        """`size` or `update` of `module` at `width` after `step` steps, mean over seeds."""
        _check_kind(kind)
        found = [
            getattr(r, kind)
            for r in self.records
            if r.module == module and r.width == width and r.step == step
        ]
        if not found:
            raise KeyError(
                f"no record of module {module!r} at width {width}, step {step}; modules are "
                f"{list(self.modules)}, widths {list(self.widths)}, steps {list(self.steps)}"
            )
        return float(np.mean(found))

    def growth(self, module: str, step: int | None = None, kind: str = "size") -> float:
        """`value` at the largest width over `value` at the smallest, at `step` (the last
        by default): 1 where the size does not depend on width."""
        step = self.steps[-1] if step is None else step
        low = self.value(module, self.widths[0], step, kind)
        high = self.value(module, self.widths[-1], step, kind)
        if low == 0.0:
            return 1.0 if high == 0.0 else math.inf
        return high / low

    def slope(self, module: str, step: int | None = None, kind: str = "size") -> float:
        """The exponent `a` of a least-squares fit `value ∝ width^a` over the widths, at
        `step` (the last by default): 0 under μP; under the standard parametrisation
        Adam's updates of hidden layers grow with `a` near 1."""
        step = self.steps[-1] if step is None else step
        x = np.log([float(w) for w in self.widths])
        y = np.array([self.value(module, w, step, kind) for w in self.widths])
        if np.any(y <= 0):
            return 0.0 if np.all(y == 0) else math.nan
        return float(np.polyfit(x, np.log(y), 1)[0])

    def unstable(
        self, factor: float = 2.0, *, kind: str | None = None, step: int | None = None
    ) -> list[tuple[str, str, int, float]]:
        """`(module, kind, step, growth)` of every measurement whose size changes by more
        than `factor` (either way) from the smallest to the largest width: empty for a
        model whose parametrisation transfers across these widths.

        Args:
            factor: The allowed ratio between the largest and the smallest width.
            kind: `"size"`, `"update"`, or `None` for both.
            step: One step, or `None` for every step (updates from step 1).
        """
        if factor < 1:
            raise ValueError(f"factor must be at least 1, got {factor}")
        kinds = KINDS if kind is None else (_check_kind(kind) or kind,)
        steps = self.steps if step is None else (step,)
        found = []
        for module in self.modules:
            for k in kinds:
                for t in steps:
                    if k == "update" and t == 0:
                        continue
                    g = self.growth(module, t, k)
                    if not (1 / factor <= g <= factor):
                        found.append((module, k, t, g))
        return found

    def rows(self) -> list[dict[str, Any]]:
        """The table: one dict per layer, width and step (`module`, `width`, `step`,
        `size`, `update`), means over seeds."""
        grouped: dict[tuple[str, int, int], list[CoordRecord]] = defaultdict(list)
        for r in self.records:
            grouped[r.module, r.width, r.step].append(r)
        order = {m: i for i, m in enumerate(self.modules)}
        return [
            {
                "module": module,
                "width": width,
                "step": step,
                "size": float(np.mean([r.size for r in rs])),
                "update": float(np.mean([r.update for r in rs])),
            }
            for (module, width, step), rs in sorted(
                grouped.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2])
            )
        ]

    def __str__(self) -> str:
        last = self.steps[-1]
        lines = [
            f"coordinate check ({self.parametrization}, {self.optimizer}, lr {self.lr:g}): "
            f"widths {list(self.widths)}, after {last} steps",
            f"{'module':<32} {'size':>10} {'growth':>8} {'update':>10} {'growth':>8}",
        ]
        for module in self.modules:
            size = self.value(module, self.widths[-1], last, "size")
            update = self.value(module, self.widths[-1], last, "update")
            lines.append(
                f"{module:<32} {size:>10.3g} {self.growth(module, last, 'size'):>7.2f}x "
                f"{update:>10.3g} {self.growth(module, last, 'update'):>7.2f}x"
            )
        lines.append("(size and update at the largest width; growth from the smallest)")
        return "\n".join(lines)

    # -- plotting ---------------------------------------------------------------------
    def plot(
        self,
        path: str | None = None,
        *,
        kind: str = "size",
        modules: Sequence[str] | None = None,
        title: str | None = None,
    ) -> Any:
        """The standard coordinate-check plot: for each layer, `kind` against width on
        log-log axes, one line per step. Flat lines are what μP promises.

        Args:
            path: Save the figure there (PNG, SVG...), or `None` to only return it.
            kind: `"size"` or `"update"`.
            modules: The layers to draw (default all, at most 12 panels).
            title: The figure's title.

        Returns:
            The matplotlib figure.
        """
        _check_kind(kind)
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = list(self.modules if modules is None else modules)[:12]
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        steps = [t for t in self.steps if kind == "size" or t > 0]
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
        for ax, name in zip(axes.flat, names, strict=False):
            for t, color in zip(steps, colors, strict=True):
                y = [self.value(name, w, t, kind) for w in self.widths]
                ax.plot(self.widths, y, "o-", color=color, label=f"step {t}", ms=3)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("width", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        axes.flat[0].set_ylabel(f"mean |{'h' if kind == 'size' else 'h - h0'}|", fontsize=8)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(
            title or f"coordinate check: {self.parametrization}, {self.optimizer} ({kind})",
            fontsize=10,
        )
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'size' or 'update', got {kind!r}")


def check_arguments(
    widths: Sequence[int], steps: int, lr: float, optimizer: str, parametrization: str
) -> tuple[int, ...]:
    """The arguments every coordinate check shares, checked; the widths sorted.

    Raises:
        ValueError: fewer than two widths, a width or `steps` below 1, a learning rate
            that is not positive and finite, an unknown optimizer or parametrisation.
        TypeError: a width or `steps` that is not an integer.
    """
    widths = tuple(widths)
    for w in (*widths, steps):
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"widths and steps must be integers, got {w!r}")
    if len(set(widths)) < 2 or min(widths) < 1:
        raise ValueError(f"widths must hold at least two distinct positive widths, got {widths}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be 'mup' (structlin's μP learning rates) or 'sp' (one "
            f"learning rate for every parameter), got {parametrization!r}"
        )
    return tuple(sorted(int(w) for w in widths))


def seeds_of(seeds: int | Sequence[int]) -> tuple[int, ...]:
    """`range(seeds)` for a count, the seeds themselves for a sequence."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {seeds}")
        return tuple(range(int(seeds)))
    return tuple(int(s) for s in seeds)
