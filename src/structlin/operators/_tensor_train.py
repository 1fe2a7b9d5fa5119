"""Core checks and size specifications shared by the tensor-train formats ([`TT`][structlin.TT], [`BTT`][structlin.BTT])."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from structlin import _checks
from structlin.backends import Array, backend_of
from structlin.structure import balanced_factors


def core_shapes(
    cores: Sequence[Array], what: str, layout: str
) -> tuple[tuple[Array, ...], list[tuple[int, ...]]]:
    """Check that `cores` are non-empty, 4-D floating-point arrays of one backend with
    positive sizes, and return them (as plain arrays, see `_checks.plain_array`) and
    their shapes; `layout` names the expected core shape."""
    if not cores:
        raise ValueError(
            f"{what} needs at least one core of shape {layout}; "
            f"build one with {what}.random(ms, ns, ranks)"
        )
    cores = tuple(
        _checks.float_array(core, f"{what} core {t}", ndim=4)[0]
        for t, core in enumerate(cores, start=1)
    )
    _checks.same_backend(cores, what)
    shapes = [tuple(int(s) for s in core.shape) for core in cores]
    for t, shape in enumerate(shapes, start=1):
        if min(shape) < 1:
            raise ValueError(
                f"{what} core {t} has shape {_checks.shape_str(shape)}; every size must be "
                "positive (empty cores are not supported)"
            )
    return cores, shapes


def common_dtype(cores: Sequence[Array]) -> tuple[Array, ...]:
    """Cast the cores to their common dtype: the rules multiply them together and
    PyTorch refuses mixed-dtype matmuls."""
    backend = backend_of(cores[0])
    dtype = backend.result_type(*(core.dtype for core in cores))
    return tuple(core if core.dtype == dtype else backend.astype(core, dtype) for core in cores)


def _count(value: Any, what: str) -> int:
    return _checks.size(value, what, minimum=None)


def spec_sizes(
    ms: Sequence[int], ns: Sequence[int], ranks: int | Sequence[int], what: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate `ms`, `ns`, `ranks` of a tensor-train format and return them as tuples.

    `ranks` may be one int (used for every bond) or a sequence of `c - 1` ints.
    Shared by [`TT`][] and [`BTT`][structlin.BTT].
    """
    for name, sizes in (("ms", ms), ("ns", ns)):
        if not isinstance(sizes, Sequence) or isinstance(sizes, str):
            raise TypeError(
                f"{what}: {name} must be a sequence of ints such as (4, 4), got {sizes!r}"
            )
    ms = tuple(_count(m, f"{what}: every entry of ms") for m in ms)
    ns = tuple(_count(n, f"{what}: every entry of ns") for n in ns)
    if len(ms) != len(ns) or not ms:
        raise ValueError(
            f"{what}: ms and ns must have the same positive length (one entry per core), "
            f"got ms={ms} and ns={ns}"
        )
    if min(ms + ns) < 1:
        raise ValueError(f"{what}: the sizes must be positive, got ms={ms} and ns={ns}")
    c = len(ms)
    if isinstance(ranks, Sequence) and not isinstance(ranks, str):
        rs = tuple(_count(r, f"{what}: every rank") for r in ranks)
        if len(rs) != c - 1:
            raise ValueError(
                f"{what}: {c} cores have {c - 1} bond ranks r_1..r_{c - 1}, got {len(rs)} "
                f"(ranks={rs}); pass one int to use the same rank on every bond"
            )
    else:
        rs = (_count(ranks, f"{what}: ranks"),) * (c - 1)
    if rs and min(rs) < 1:
        raise ValueError(f"{what}: the ranks must be positive, got ranks={rs}")
    return ms, ns, rs


def check_fits(W: Array, ms: tuple[int, ...], ns: tuple[int, ...], what: str) -> None:
    """Check that `W` has shape `(prod ms, prod ns)`."""
    expected = (math.prod(ms), math.prod(ns))
    if tuple(W.shape) != expected:
        raise ValueError(
            f"{what}: W has shape {_checks.shape_str(W.shape)} but ms={ms} and ns={ns} describe "
            f"a {_checks.shape_str(expected)} matrix; choose factors with prod(ms) = "
            f"{W.shape[0]} and prod(ns) = {W.shape[1]}"
        )


def balanced_project_options(d_in: int, d_out: int, *, rank: int, ncores: int) -> dict[str, Any]:
    """The [`project`][structlin.project] keywords of a TT or BTT layer: both sizes split into
    `ncores` balanced factors, every bond of rank `rank` (as the layer's template has)."""
    return {
        "ms": balanced_factors(d_out, ncores),
        "ns": balanced_factors(d_in, ncores),
        "ranks": rank,
    }
