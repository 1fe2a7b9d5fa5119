"""`Kron`: the Kronecker product of operators, applied factor by factor."""

from __future__ import annotations

import math
from typing import Any

from structlin import _checks, functions
from structlin._checks import dense_backend
from structlin._convert import unify
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, backend_of
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.expressions.dense import as_operator
from structlin.expressions.product import Product
from structlin.expressions.spectral import annotate_function, function_of_eigh
from structlin.operator import LinearOperator
from structlin.structure import Structure, balanced_factors, register_structure


class Kron(LinearOperator):
    """`A = A_1 ⊗ A_2 ⊗ ... ⊗ A_d` for factors `A_i` of shape `(m_i, n_i)`.

    `A` has shape `(prod m_i, prod n_i)` and is never formed. `A @ X` views `X`
    as a `(n_1, ..., n_d, k)` tensor and applies each factor along its axis, so
    the cost is `sum_i matmat(A_i)` over `n k / n_i` columns, e.g. `O(n^{4/3} k)`
    for three dense factors instead of `O(n^2 k)`. The exact rules:

    - `(A ⊗ B)^T = A^T ⊗ B^T` and likewise for `^H`;
    - `(A ⊗ B)^{-1} = A^{-1} ⊗ B^{-1}` (square factors);
    - `log|det(⊗ A_i)| = sum_i (n / n_i) log|det A_i|`, sign `prod_i sign_i^(n / n_i)`;
    - `diag` is the Kronecker product of the factor diagonals, `trace` the product of traces;
    - `(A ⊗ B)(C ⊗ D) = AC ⊗ BD` when the factor shapes match.

    Args:
        *factors: Operators or 2-D arrays (wrapped as [`Dense`][structlin.Dense]),
            at least one, all of one backend.

    Raises:
        ValueError: no factors.
        TypeError: factors of different backends, or non-array factors.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> K = sl.Kron(np.eye(2), 2 * np.eye(3))
        >>> K.shape
        (6, 6)
    """

    _children = ("factors",)

    factors: tuple[LinearOperator, ...]

    def __init__(self, *factors: LinearOperator | Array):
        if not factors:
            raise ValueError("Kron needs at least one factor")
        ops = tuple(as_operator(f, "Kron factor") for f in factors)
        self._set(factors=unify(ops, "Kron"))

    @property
    def shape(self) -> tuple[int, int]:
        return (
            math.prod(f.shape[0] for f in self.factors),
            math.prod(f.shape[1] for f in self.factors),
        )


def _wrap(factors: tuple[LinearOperator, ...]) -> Kron:
    op = object.__new__(Kron)
    op._set(factors=factors)
    return op


def _apply_factors(factors: tuple[LinearOperator, ...], X: Array, backend: Backend) -> Array:
    """Apply `factors[i]` along axis `i` of `X` viewed as `(n_1, ..., n_d, k)`.

    Each step brings the next factor's axis to the front, applies the factor
    to the `(n_i, rest)` matrix and rotates the new axis to just before `k`;
    after `d` steps the axes are back in order. One matmat and one copy per factor.
    """
    k = X.shape[1]
    dims = [f.shape[1] for f in factors]  # axis sizes of T, in order, before the k axis
    T = X
    for factor in factors:
        rest = math.prod(dims[1:])
        Y = matmat(factor, backend.reshape(T, (dims[0], rest * k)))
        T = backend.permute_dims(backend.reshape(Y, (factor.shape[0], rest, k)), (1, 0, 2))
        dims = [*dims[1:], factor.shape[0]]
    return backend.reshape(T, (math.prod(dims), k))


@dispatch
def matmat(A: Kron, X: object):
    return _apply_factors(A.factors, X, backend_of(X))


@dispatch
def to_dense(A: Kron):
    backend = dense_backend(A)[0]
    out = to_dense(A.factors[0])
    for f in A.factors[1:]:
        out = backend.kron(out, to_dense(f))
    return out


@dispatch
def transpose(A: Kron):
    return _wrap(tuple(transpose(f) for f in A.factors))


@dispatch
def adjoint(A: Kron):
    return _wrap(tuple(adjoint(f) for f in A.factors))


def _rectangular_factor(A: Kron) -> int | None:
    """Index of a non-square factor; a square Kron with one has rank < n, so it is singular."""
    return next((i for i, f in enumerate(A.factors) if f.shape[0] != f.shape[1]), None)


@dispatch
def inv(A: Kron):
    i = _rectangular_factor(A)
    if i is not None:
        raise SingularOperatorError(
            f"Kron of shape {_checks.shape_str(A.shape)} is singular: factor {i} has shape "
            f"{_checks.shape_str(A.factors[i].shape)}, and a square Kronecker product with a "
            "non-square factor has rank below its size"
        )
    return _wrap(tuple(inv(f) for f in A.factors))


@dispatch
def pinv(A: Kron):
    """`(A_1 ⊗ ... ⊗ A_d)^+ = A_1^+ ⊗ ... ⊗ A_d^+`, any factor shapes: the SVD of a
    Kronecker product is the Kronecker product of the factors' SVDs. Each factor drops
    singular values below its own cutoff (relative to its own largest), which differs from
    the cutoff of the whole product only for nearly rank-deficient factors."""
    return _wrap(tuple(pinv(f) for f in A.factors))


@dispatch
def solve(A: Kron, B: object):
    return matmat(inv(A), B)


@dispatch
def slogdet(A: Kron):
    n = A.shape[0]
    if _rectangular_factor(A) is not None:
        backend, dtype, device = dense_backend(A)
        zero = backend.abs(backend.zeros((), dtype, device))
        return zero, zero - math.inf  # (0, -inf), as numpy.linalg.slogdet
    sign, logabsdet = 1, 0
    for f in A.factors:
        power = n // f.shape[0]
        s, ld = slogdet(f)
        sign = sign * s**power
        logabsdet = logabsdet + power * ld
    return sign, logabsdet


@dispatch
def diag(A: Kron):
    if not all(f.shape[0] == f.shape[1] for f in A.factors):
        return dense_backend(A)[0].diagonal(to_dense(A))
    backend = dense_backend(A)[0]
    out = diag(A.factors[0])
    for f in A.factors[1:]:
        out = backend.reshape(backend.kron(out[:, None], diag(f)[:, None]), (-1,))
    return out


@dispatch
def trace(A: Kron):
    if not all(f.shape[0] == f.shape[1] for f in A.factors):
        return dense_backend(A)[0].sum(diag(A))
    out = trace(A.factors[0])
    for f in A.factors[1:]:
        out = out * trace(f)
    return out


@dispatch
def is_symmetric(A: Kron):
    return all(is_symmetric(f) for f in A.factors)


@dispatch
def is_psd(A: Kron):
    return all(is_psd(f) for f in A.factors)


def _kron_vectors(vectors: list[Array], backend: Backend) -> Array:
    """The Kronecker product of 1-D arrays, flat: `w_1[i] w_2[j] ...` at `i n_2 ... + j ...`."""
    out = vectors[0]
    for v in vectors[1:]:
        out = backend.reshape(out[:, None] * v[None, :], (-1,))
    return out


@dispatch
def eigh(A: Kron):
    """`A = (⊗ Q_i) diag(⊗ w_i) (⊗ Q_i)^H` from the factors' eigendecompositions
    (each factor taken as Hermitian): `O(sum n_i^3)`, and `O(n)` for the eigenvalues,
    which are in Kronecker order, not sorted."""
    if _rectangular_factor(A) is not None:
        raise ValueError(
            f"eigh: Kron of shape {_checks.shape_str(A.shape)} has a non-square factor"
        )
    parts = [eigh(f) for f in A.factors]
    w = _kron_vectors([w for w, _ in parts], backend_of(parts[0][0]))
    return w, _wrap(tuple(Q for _, Q in parts))


@dispatch
def structured_eigh(A: Kron):
    return _rectangular_factor(A) is None


@dispatch
def abs_squared(A: Kron):
    return _wrap(tuple(abs_squared(f) for f in A.factors))


@dispatch
def monomial(A: Kron):
    return all(monomial(f) for f in A.factors)


@dispatch
def monomial_eigenvectors(A: Kron):
    return _rectangular_factor(A) is None and all(monomial_eigenvectors(f) for f in A.factors)


@dispatch
def matrix_function(A: Kron, f: object):
    """`f(A)`: the Kron of the factors' `f` for a power `x^p` and PSD factors
    (`(A ⊗ B)^p = A^p ⊗ B^p`), else `Q diag(f(w)) Q^H` with the Kron `Q` of the factors'
    eigenvectors ([`Spectral`][structlin.Spectral])."""
    if f.power is not None and all(is_psd(g) for g in A.factors):
        return _wrap(tuple(annotate_function(g, f, matrix_function(g, f)) for g in A.factors))
    return function_of_eigh(A, f)


@dispatch
def compose(A: Kron, B: Kron):
    if len(A.factors) == len(B.factors) and all(
        a.shape[1] == b.shape[0] for a, b in zip(A.factors, B.factors, strict=True)
    ):
        return _wrap(
            tuple(functions.compose(a, b) for a, b in zip(A.factors, B.factors, strict=True))
        )
    return Product(A, B)


@dispatch
def project(
    W: object, structure: type[Kron], *, factor_shapes: tuple[tuple[int, int], tuple[int, int]]
):
    """The nearest Kronecker product `A ⊗ B` (Van Loan and Pitsianis 1993): optimal.

    With `factor_shapes = ((m1, n1), (m2, n2))`, `||W - A ⊗ B||_F = ||R(W) - vec(A) vec(B)^T||_F`
    for the rearrangement `R(W)[(i1, j1), (i2, j2)] = W[(i1, i2), (j1, j2)]`, so the
    optimum is the leading singular triplet of the `(m1 n1, m2 n2)` matrix `R(W)`,
    `O(m n min(m1 n1, m2 n2))` by one SVD.
    """
    if (
        isinstance(factor_shapes, str)
        or not hasattr(factor_shapes, "__len__")
        or len(factor_shapes) != 2
        or any(
            isinstance(s, str) or not hasattr(s, "__len__") or len(s) != 2 for s in factor_shapes
        )
    ):
        raise ValueError(
            f"project(W, Kron): factor_shapes must be ((m1, n1), (m2, n2)), got {factor_shapes!r}"
        )
    shapes = tuple(
        tuple(
            _checks.size(v, f"project(W, Kron): factor_shapes[{i}][{j}]") for j, v in enumerate(s)
        )
        for i, s in enumerate(factor_shapes)
    )
    (m1, n1), (m2, n2) = shapes
    if W.shape != (m1 * m2, n1 * n2):
        raise ValueError(
            f"project(W, Kron): factors {shapes} give a {m1 * m2} x {n1 * n2} matrix, but W has "
            f"shape {_checks.shape_str(W.shape)}"
        )
    backend = backend_of(W)
    R = backend.reshape(
        backend.permute_dims(backend.reshape(W, (m1, m2, n1, n2)), (0, 2, 1, 3)), (m1 * n1, m2 * n2)
    )
    U, S, Vh = backend.svd(R)
    root = backend.astype(S[0] ** 0.5, W.dtype)
    return Kron(backend.reshape(U[:, 0] * root, (m1, n1)), backend.reshape(Vh[0] * root, (m2, n2)))


@dispatch
def components(A: Kron):
    # Factor i acts along its own axis, batched over the other axes: those before it
    # already mapped to their output sizes, those after it still at their input sizes
    # (the order `_apply_factors` uses: factor 0 first). The factors commute, so which
    # one counts as first or last is only that convention.
    out: list[Component | None] = []
    d = len(A.factors)
    for i, factor in enumerate(A.factors):
        rest = math.prod(f.shape[0] for f in A.factors[:i]) * math.prod(
            f.shape[1] for f in A.factors[i + 1 :]
        )
        for c in components(factor):
            if c is None:
                out.append(None)
                continue
            c = c.placed(first=i == 0, last=i == d - 1)
            out.append(Component(c.batch * rest, c.fan_out, c.fan_in, c.first, c.last))
    return tuple(out)


# -- the layer structure "kron" (see structlin.structure) -------------------------------------


def _layer_factors(d_in: int, d_out: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Balanced factors: `((m1, n1), (m2, n2))` with `m1 m2 = d_out`, `n1 n2 = d_in`."""
    (m1, m2), (n1, n2) = balanced_factors(d_out, 2), balanced_factors(d_in, 2)
    return ((m1, n1), (m2, n2))


def _layer_check(d_in: int, d_out: int, *, factors: Any) -> dict[str, Any]:
    if len(factors) != 2 or any(len(f) != 2 for f in factors):
        raise ValueError(
            f"kron factors must be ((m1, n1), (m2, n2)) of positive integers, got {factors!r}"
        )
    (m1, n1), (m2, n2) = factors = tuple(
        tuple(_checks.size(v, f"kron factors[{i}][{j}]") for j, v in enumerate(f))
        for i, f in enumerate(factors)
    )
    if (m1 * m2, n1 * n2) != (d_out, d_in):
        raise ValueError(
            f"kron factors {factors} give a {m1 * m2} x {n1 * n2} matrix, not "
            f"{d_out} x {d_in}; choose ((m1, n1), (m2, n2)) with m1 m2 = d_out and n1 n2 = d_in"
        )
    return {"factors": factors}


def _layer_template(zeros: Any, d_in: int, d_out: int, *, factors: Any) -> Kron:
    (m1, n1), (m2, n2) = factors
    return Kron(zeros(m1, n1), zeros(m2, n2))


register_structure(
    Structure(
        "kron",
        Kron,
        _layer_template,
        options={"factors": _layer_factors},
        check=_layer_check,
        project_options=lambda d_in, d_out, *, factors: {"factor_shapes": factors},
        doc_options="`factors=((m1, n1), (m2, n2))` (balanced)",
        doc_operator="[`Kron`][structlin.Kron] of two `Dense`",
        doc_parameters="`m1 n1 + m2 n2`",
    )
)
