"""`Sum`: the lazy sum `A_1 + ... + A_d` of operators of one shape."""

from __future__ import annotations

from structlin import _checks
from structlin._convert import unify
from structlin._dispatch import dispatch
from structlin.backends import Array
from structlin.expressions.dense import as_operator
from structlin.operator import LinearOperator


class Sum(LinearOperator):
    """`A = A_1 + ... + A_d`, all of shape `(m, n)`; nested sums are flattened.

    `A @ X` costs the sum of the terms' costs. `A^T`, `A^H`, `diag` and `trace`
    are term by term. A sum has no structured inverse in general: `inv` is a
    lazy [`Inverse`][structlin.Inverse] that solves with the dense matrix
    (`O(n^3)` per application) and `slogdet` uses the dense matrix.

    Args:
        *ops: Operators or 2-D arrays of one shape and backend, at least one.

    Raises:
        ValueError: no terms or different shapes.
        TypeError: terms of different backends.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> S = sl.Sum(sl.Identity(3, dtype=np.float64), sl.LowRank(np.ones((3, 1)), np.ones((1, 3))))
        >>> S @ np.ones(3)
        array([4., 4., 4.])
        >>> type(S.inv()).__name__  # no structured rule for I + U V: solved densely
        'Inverse'
    """

    _children = ("ops",)

    ops: tuple[LinearOperator, ...]

    def __init__(self, *ops: LinearOperator | Array):
        if not ops:
            raise ValueError("Sum needs at least one term")
        flat: list[LinearOperator] = []
        for op in ops:
            op = as_operator(op, "Sum term")
            flat.extend(op.ops if isinstance(op, Sum) else (op,))
        for i, op in enumerate(flat[1:], 1):
            if op.shape != flat[0].shape:
                raise ValueError(
                    f"Sum terms must have one shape: term 0 is {type(flat[0]).__name__} of shape "
                    f"{_checks.shape_str(flat[0].shape)}, term {i} is {type(op).__name__} of shape "
                    f"{_checks.shape_str(op.shape)}"
                )
        self._set(ops=unify(tuple(flat), "Sum"))

    @property
    def shape(self) -> tuple[int, int]:
        return self.ops[0].shape


def _wrap(ops: tuple[LinearOperator, ...]) -> Sum:
    out = object.__new__(Sum)
    out._set(ops=ops)
    return out


@dispatch
def matmat(A: Sum, X: object):
    out = matmat(A.ops[0], X)
    for op in A.ops[1:]:
        out = out + matmat(op, X)
    return out


@dispatch
def rmatmat(X: object, A: Sum):
    out = rmatmat(X, A.ops[0])
    for op in A.ops[1:]:
        out = out + rmatmat(X, op)
    return out


@dispatch
def to_dense(A: Sum):
    out = to_dense(A.ops[0])
    for op in A.ops[1:]:
        out = out + to_dense(op)
    return out


@dispatch
def transpose(A: Sum):
    return _wrap(tuple(transpose(op) for op in A.ops))


@dispatch
def adjoint(A: Sum):
    return _wrap(tuple(adjoint(op) for op in A.ops))


@dispatch
def diag(A: Sum):
    out = diag(A.ops[0])
    for op in A.ops[1:]:
        out = out + diag(op)
    return out


@dispatch
def add(A: LinearOperator, B: LinearOperator):
    """`A + B` as a lazy [`Sum`][structlin.Sum] (flattened); `O(1)`."""
    return Sum(A, B)


@dispatch
def components(A: Sum):
    # Every term reads the input and writes (a term of) the output.
    return tuple(c for op in A.ops for c in components(op))


@dispatch
def is_symmetric(A: Sum):
    return all(is_symmetric(op) for op in A.ops)


@dispatch
def is_psd(A: Sum):
    return all(is_psd(op) for op in A.ops)
