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

The table lists the built-in structures; each is one
[`Structure`][structlin.structure.Structure] record, registered next to its operator
class, and a structure registered since
([`register_structure`][structlin.structure.register_structure], see
[Adding a structure](../../guides/adding-a-structure.md)) works everywhere these do.

"Balanced" factors are as close to each other as the sizes allow ("Compute
Better Spent", Appendix E: a `20 x 30` Kronecker layer has factors `4 x 5` and
`5 x 6`). TT and BTT factor `d_out` and `d_in` into `ncores` such factors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from structlin.backends import Array
from structlin.operator import LinearOperator
from structlin.structure import balanced_factors, get_structure, leaf_names, registered_structures

__all__ = [
    "STRUCTURES",
    "balanced_factors",
    "complete_spec",
    "leaf_names",
    "project_onto",
    "template",
]


class _Registered(Sequence[str]):
    """The names of the registered structures, read from the registry on every use."""

    def __len__(self) -> int:
        return len(registered_structures())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return registered_structures()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(registered_structures())

    def __contains__(self, name: object) -> bool:
        return name in registered_structures()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # its contents change

    def __repr__(self) -> str:
        return repr(registered_structures())


STRUCTURES: Sequence[str] = _Registered()
"""The names of the registered structures, sorted: a live view of
[`registered_structures`][structlin.structure.registered_structures] (the built-ins and
any registered since)."""


def _spec(structure: str, d_in: int, d_out: int, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` checked against `structure` and completed with the defaults."""
    return get_structure(structure).complete(d_in, d_out, spec)


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
    return get_structure(structure).build(d_in, d_out, dtype=dtype, **spec)


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


def project_onto(W: Array, structure: str, **spec: Any) -> LinearOperator:
    """The operator of `structure` nearest to the `(d_out, d_in)` matrix `W`, with the
    same shapes as [`template`][structlin.nn.structures.template] gives.

    Uses [`structlin.project`][structlin.project]: optimal for every structure but
    TT and BTT with more than two cores (greedy there). Computed on `W`'s backend.
    """
    return get_structure(structure).project(W, **spec)
