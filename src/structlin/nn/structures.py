"""Named structures for layers: the operator a `d_out x d_in` layer holds, and its projection.

Shared by the PyTorch layers ([`structlin.nn`][structlin.nn]) and the JAX layers
([`structlin.nn.jax`][structlin.nn.jax]); needs neither library.

| `structure` | spec (defaults) | operator | parameters |
|---|---|---|---|
| `"dense"` | | [`Dense`][structlin.Dense] | `d_out d_in` |
| `"lowrank"` | `rank` (`round(sqrt(min(d_in, d_out)))`) | [`LowRank`][structlin.LowRank] `U V` | `(d_in + d_out) r` |
| `"kron"` | `factors=((m1, n1), (m2, n2))` (balanced) | [`Kron`][structlin.Kron] of two `Dense` | `m1 n1 + m2 n2` |
| `"blockdiag"` | `nblocks` (4) | [`BlockDiag`][structlin.BlockDiag] | `d_out d_in / b` |
| `"monarch"` | `nblocks` (4) | [`Monarch`][structlin.Monarch] in [`layout`][structlin.Monarch.layout] | about `2 d^2 / b` |
| `"tt"` | `rank` (16), `ncores` (2) | [`TT`][structlin.TT] | about `c r^2 d^{2/c}` |
| `"btt"` | `rank` (1), `ncores` (2) | [`BTT`][structlin.BTT] | about `c r d^{1+1/c}` |

"Balanced" factors are as close to each other as the sizes allow ("Compute
Better Spent", Appendix E: a `20 x 30` Kronecker layer has factors `4 x 5` and
`5 x 6`). TT and BTT factor `d_out` and `d_in` into `ncores` such factors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from structlin import _checks, pytree
from structlin.backends import Array
from structlin.expressions.dense import Dense
from structlin.functions import project
from structlin.operator import LinearOperator
from structlin.operators.block_diag import BlockDiag
from structlin.operators.btt import BTT, _core_shapes
from structlin.operators.kron import Kron
from structlin.operators.low_rank import LowRank
from structlin.operators.monarch import Monarch
from structlin.operators.tt import TT

__all__ = [
    "STRUCTURES",
    "balanced_factors",
    "complete_spec",
    "leaf_names",
    "project_onto",
    "template",
]

STRUCTURES = ("dense", "lowrank", "kron", "blockdiag", "monarch", "tt", "btt")

_SPEC_KEYS = {
    "dense": (),
    "lowrank": ("rank",),
    "kron": ("factors",),
    "blockdiag": ("nblocks",),
    "monarch": ("nblocks",),
    "tt": ("rank", "ncores"),
    "btt": ("rank", "ncores"),
}


def balanced_factors(d: int, c: int) -> tuple[int, ...]:
    """`c` factors of `d`, sorted, as close to `d^(1/c)` as divisibility allows.

    Each factor is the largest divisor of what remains that is at most its
    `c`-th root, so `balanced_factors(30, 2) == (5, 6)` and a prime `d` gives
    `(1, ..., 1, d)`.

    Examples:
        >>> from structlin.nn.structures import balanced_factors
        >>> balanced_factors(4096, 3), balanced_factors(20, 2), balanced_factors(7, 2)
        ((16, 16, 16), (4, 5), (1, 7))
    """
    out = []
    for left in range(c, 1, -1):
        root = round(d ** (1 / left))
        f = max(f for f in range(1, root + 2) if d % f == 0 and f**left <= d)
        out.append(f)
        d //= f
    return tuple(sorted((*out, d)))


def _spec(structure: str, d_in: int, d_out: int, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` checked against `structure` and completed with the defaults."""
    if structure not in _SPEC_KEYS:
        raise ValueError(f"unknown structure {structure!r}; choose one of {', '.join(STRUCTURES)}")
    _checks.keywords(f"structure {structure!r}", sorted(spec), _SPEC_KEYS[structure])
    d_in, d_out = _checks.size(d_in, "d_in"), _checks.size(d_out, "d_out")
    out = {name: v for name, v in spec.items() if v is not None}  # None: the default
    if structure == "lowrank":
        out.setdefault("rank", max(1, round(math.sqrt(min(d_in, d_out)))))
    elif structure == "kron":
        if out.get("factors") is None:
            (m1, m2), (n1, n2) = balanced_factors(d_out, 2), balanced_factors(d_in, 2)
            out["factors"] = ((m1, n1), (m2, n2))
        factors = out["factors"]
        if len(factors) != 2 or any(len(f) != 2 for f in factors):
            raise ValueError(
                f"kron factors must be ((m1, n1), (m2, n2)) of positive integers, got {factors!r}"
            )
        (m1, n1), (m2, n2) = factors = out["factors"] = tuple(
            tuple(_checks.size(v, f"kron factors[{i}][{j}]") for j, v in enumerate(f))
            for i, f in enumerate(factors)
        )
        if (m1 * m2, n1 * n2) != (d_out, d_in):
            raise ValueError(
                f"kron factors {out['factors']} give a {m1 * m2} x {n1 * n2} matrix, not "
                f"{d_out} x {d_in}; choose ((m1, n1), (m2, n2)) with m1 m2 = d_out and n1 n2 = d_in"
            )
    elif structure in ("blockdiag", "monarch"):
        out.setdefault("nblocks", 4)
        b = out["nblocks"] = _checks.size(out["nblocks"], f"{structure}: nblocks")
        if structure == "blockdiag" and (d_in % b or d_out % b):
            raise ValueError(
                f"blockdiag with nblocks={b} needs d_in and d_out divisible by {b}, got "
                f"d_in={d_in}, d_out={d_out}; pick a common divisor (Monarch pads instead)"
            )
    elif structure in ("tt", "btt"):
        out.setdefault("rank", 16 if structure == "tt" else 1)
        out.setdefault("ncores", 2)
    for name in ("rank", "ncores"):  # nblocks is checked above, where it is used
        if out.get(name) is not None:
            out[name] = _checks.size(out[name], f"{structure}: {name}")
    return out


def complete_spec(structure: str, d_in: int, d_out: int, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` checked against `structure` and completed with its defaults, as plain
    JSON-friendly values (tuples become lists).

    Examples:
        >>> from structlin.nn.structures import complete_spec
        >>> complete_spec("kron", 20, 30, {}), complete_spec("btt", 64, 64, {"rank": 2})
        ({'factors': [[5, 4], [6, 5]]}, {'rank': 2, 'ncores': 2})
    """

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return int(v) if isinstance(v, (int, np.integer)) else v

    return {name: plain(v) for name, v in _spec(structure, d_in, d_out, spec).items()}


def _tensor_sizes(d_in: int, d_out: int, spec: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    c = spec["ncores"]
    return balanced_factors(d_out, c), balanced_factors(d_in, c)


def template(
    structure: str, d_in: int, d_out: int, *, dtype: Any = np.float32, **spec: Any
) -> LinearOperator:
    """A `d_out x d_in` operator of `structure` whose arrays are NumPy zeros.

    Layers read the shapes of their parameters (and the operator's tree
    structure) from it, then allocate and initialise them in their own library.

    Raises:
        ValueError: an unknown structure, sizes that are not positive integers, or
            sizes the structure cannot take (e.g. a block count that does not divide them).
        TypeError: an option the structure does not take.
    """
    spec = _spec(structure, d_in, d_out, spec)

    def zeros(*shape: int) -> Array:
        return np.zeros(shape, dtype)

    if structure == "dense":
        return Dense(zeros(d_out, d_in))
    if structure == "lowrank":
        return LowRank(zeros(d_out, spec["rank"]), zeros(spec["rank"], d_in))
    if structure == "kron":
        (m1, n1), (m2, n2) = spec["factors"]
        return Kron(zeros(m1, n1), zeros(m2, n2))
    if structure == "blockdiag":
        b = spec["nblocks"]
        return BlockDiag(zeros(b, d_out // b, d_in // b))
    if structure == "monarch":
        first, second = Monarch.layout(d_in, d_out, spec["nblocks"])
        return Monarch(zeros(*first), zeros(*second), shape=(d_out, d_in))
    ms, ns = _tensor_sizes(d_in, d_out, spec)
    ranks = (spec["rank"],) * (spec["ncores"] - 1)
    if structure == "tt":
        bonds = (1, *ranks, 1)
        return TT(
            *(
                zeros(bonds[t], m, n, bonds[t + 1])
                for t, (m, n) in enumerate(zip(ms, ns, strict=True))
            )
        )
    return BTT(*(zeros(*shape) for shape in _core_shapes(ms, ns, ranks)))


def layer_summary(
    in_features: int, out_features: int, structure: str, bias: bool, weight_norm: bool
) -> str:
    """The `key=value` description both layers' reprs show."""
    parts = [
        f"in_features={in_features}",
        f"out_features={out_features}",
        f"structure={structure!r}",
        f"bias={bias}",
    ]
    if weight_norm:
        parts.append("weight_norm=True")
    return ", ".join(parts)


def leaf_names(treedef: pytree.TreeDef | None) -> list[str]:
    """A parameter name for every leaf of an operator: its attribute path joined by `_`.

    `treedef` is the tree definition from
    [`structlin.pytree.tree_flatten`][structlin.pytree.tree_flatten]; the names are
    in the order of its leaves (`blocks_0`, `U`, `ops_1_cores_0`, and `array` for a
    lone array). The PyTorch and JAX layers name their parameters with it.

    Examples:
        >>> from structlin import _checks, pytree
        >>> from structlin.nn.structures import leaf_names, template
        >>> leaf_names(pytree.tree_flatten(template("monarch", 16, 16))[1])
        ['blocks_0', 'blocks_1']
    """
    return [
        "_".join(name.lstrip("_") for name in path) or "array"
        for path, _ in pytree.tree_leaves_with_path(treedef)
    ]


def project_onto(W: Array, structure: str, **spec: Any) -> LinearOperator:
    """The operator of `structure` nearest to the `(d_out, d_in)` matrix `W`, with the
    same shapes as [`template`][structlin.nn.structures.template] gives.

    Uses [`structlin.project`][structlin.project]: optimal for every structure but
    TT and BTT with more than two cores (greedy there). Computed on `W`'s backend.
    """
    d_out, d_in = W.shape
    spec = _spec(structure, d_in, d_out, spec)
    if structure == "dense":
        return project(W, Dense)
    if structure == "lowrank":
        return project(W, LowRank, rank=spec["rank"])
    if structure == "kron":
        return project(W, Kron, factor_shapes=spec["factors"])
    if structure == "blockdiag":
        return project(W, BlockDiag, nblocks=spec["nblocks"])
    if structure == "monarch":
        return project(W, Monarch, blocks=Monarch.layout(d_in, d_out, spec["nblocks"]))
    ms, ns = _tensor_sizes(d_in, d_out, spec)
    cls = TT if structure == "tt" else BTT
    return project(W, cls, ms=ms, ns=ns, ranks=spec["rank"])
