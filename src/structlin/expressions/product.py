"""`Product`: the lazy product `A_1 A_2 ... A_d` of operators."""

from __future__ import annotations

import itertools

from structlin import _checks
from structlin._checks import dense_backend
from structlin._convert import unify
from structlin._dispatch import dispatch
from structlin.backends import Array
from structlin.expressions.dense import as_operator
from structlin.expressions.inverse import Inverse
from structlin.operator import LinearOperator


class Product(LinearOperator):
    """`A = A_1 A_2 ... A_d`, applied right to left, never multiplied out.

    `A @ X` costs the sum of the factors' costs. Nested products are flattened.
    Exact rules: `(A_1 ... A_d)^T = A_d^T ... A_1^T`; when every factor is square,
    `(A_1 ... A_d)^{-1} = A_d^{-1} ... A_1^{-1}` and `slogdet` adds the factors'
    log-determinants. With non-square factors (e.g. `U V` square overall) `inv`,
    `solve` and `slogdet` fall back to the dense `O(n^3)` rules.
    `to_dense` applies the factors to the last factor's dense matrix.

    Args:
        *ops: Operators or 2-D arrays, at least one, with `ops[i].shape[1] == ops[i+1].shape[0]`.

    Raises:
        ValueError: no factors or mismatched inner dimensions.
        TypeError: factors of different backends.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> P = sl.Product(sl.Diagonal(np.array([1.0, 2.0])), sl.LowRank(np.ones((2, 1)), np.ones((1, 3))))
        >>> P.shape
        (2, 3)
        >>> P @ np.ones(3)  # the LowRank factor first, then the Diagonal
        array([3., 6.])
    """

    _children = ("ops",)

    ops: tuple[LinearOperator, ...]

    def __init__(self, *ops: LinearOperator | Array):
        if not ops:
            raise ValueError("Product needs at least one factor")
        flat: list[LinearOperator] = []
        for op in ops:
            op = as_operator(op, "Product factor")
            flat.extend(op.ops if isinstance(op, Product) else (op,))
        for i, (a, b) in enumerate(itertools.pairwise(flat)):
            if a.shape[1] != b.shape[0]:
                raise ValueError(
                    f"Product factors {i} and {i + 1} do not chain: {type(a).__name__} of shape "
                    f"{_checks.shape_str(a.shape)} times {type(b).__name__} of shape "
                    f"{_checks.shape_str(b.shape)}"
                )
        self._set(ops=unify(tuple(flat), "Product"))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ops[0].shape[0], self.ops[-1].shape[1])


def _wrap(ops: tuple[LinearOperator, ...]) -> Product:
    out = object.__new__(Product)
    out._set(ops=ops)
    return out


def _all_square(A: Product) -> bool:
    return all(op.shape[0] == op.shape[1] for op in A.ops)


@dispatch
def matmat(A: Product, X: object):
    for op in reversed(A.ops):
        X = matmat(op, X)
    return X


@dispatch
def rmatmat(X: object, A: Product):
    for op in A.ops:
        X = rmatmat(X, op)
    return X


@dispatch
def to_dense(A: Product):
    out = to_dense(A.ops[-1])
    for op in reversed(A.ops[:-1]):
        out = matmat(op, out)
    return out


@dispatch
def transpose(A: Product):
    return _wrap(tuple(transpose(op) for op in reversed(A.ops)))


@dispatch
def adjoint(A: Product):
    return _wrap(tuple(adjoint(op) for op in reversed(A.ops)))


@dispatch
def inv(A: Product):
    if not _all_square(A):
        return Inverse(A)
    return _wrap(tuple(inv(op) for op in reversed(A.ops)))


@dispatch
def solve(A: Product, B: object):
    if not _all_square(A):
        return dense_backend(A)[0].solve(to_dense(A), B)
    for op in A.ops:
        B = solve(op, B)
    return B


@dispatch
def slogdet(A: Product):
    if not _all_square(A):
        return dense_backend(A)[0].slogdet(to_dense(A))
    sign, logabsdet = slogdet(A.ops[0])
    for op in A.ops[1:]:
        s, ld = slogdet(op)
        sign, logabsdet = sign * s, logabsdet + ld
    return sign, logabsdet


@dispatch
def compose(A: LinearOperator, B: LinearOperator):
    """`A B` as a lazy [`Product`][structlin.Product] (flattened); `O(1)`."""
    return Product(A, B)


@dispatch
def components(A: Product):
    # ops[-1] reads the input, ops[0] writes the output.
    d = len(A.ops)
    return tuple(
        None if c is None else c.placed(first=i == d - 1, last=i == 0)
        for i, op in enumerate(A.ops)
        for c in components(op)
    )
