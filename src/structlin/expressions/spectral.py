"""`Spectral`: an operator given by its eigendecomposition, `Q diag(w) Q^H`.

It is what [`eigh`][structlin.eigh] takes apart and what the functions of a
Hermitian operator build: `inv(A + c I)` for an `A` with a structured eigendecomposition
is `Q diag(1 / (w + c)) Q^H` with `Q` still structured (a Kron of the factors'
eigenvectors), and `f(A)` is `Q diag(f(w)) Q^H`. This module also holds the generic
fallbacks of `eigh` (the dense eigendecomposition) and of `matrix_function`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from structlin import _checks
from structlin._checks import dense_backend
from structlin._dispatch import dense_method, dispatch
from structlin.backends import Array, Backend, backend_of
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.expressions.annotations import PSD, Symmetric
from structlin.expressions.dense import Dense
from structlin.expressions.product import Product
from structlin.expressions.sum import Sum
from structlin.operator import LinearOperator
from structlin.rules import is_psd, to


class Spectral(LinearOperator):
    """`A = Q diag(w) Q^H` for a unitary operator `Q` (`Q^H Q = I`) and eigenvalues `w`.

    Returned by the functions of Hermitian operators where no closed form keeps the
    original structure: `inv(K + c I)` for a symmetric `K` with a structured
    eigendecomposition, `sqrt`, `exp`, `log`, `pow` and `apply` of operators without a
    multiplicative rule. `Q` keeps its structure (a `Kron` of `n_i x n_i` eigenvector
    factors for a Kron), so nothing `n x n` is formed: `A @ X` costs two products with
    `Q` and a scaling, `O(n sum n_i)` per column for a Kron. `inv` is `Q diag(1/w) Q^H`,
    `slogdet` `sum log|w|`, `trace` `sum w`, `diag` `|Q|^2 w` (structured for Kron,
    BlockDiag, Diagonal, Identity), `eigh` `(w, Q)`, all exact.

    `Q` is trusted to be unitary: not checked.

    Args:
        vectors: A square operator `Q` with orthonormal columns.
        values: Array of shape `(n,)`, one eigenvalue per column of `Q`.

    Raises:
        ValueError: `Q` is not square or `values` does not have `n` entries.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> Q = sl.Dense(np.array([[0.6, -0.8], [0.8, 0.6]]))
        >>> S = sl.Spectral(Q, np.array([1.0, 4.0]))
        >>> bool(np.allclose(S.to_dense(), Q.to_dense() @ np.diag([1.0, 4.0]) @ Q.to_dense().T))
        True
        >>> float(sl.logdet(S)) == float(np.log(4.0))
        True
    """

    _children = ("vectors", "values")

    vectors: LinearOperator
    values: Array

    def __init__(self, vectors: LinearOperator, values: Array):
        from structlin.expressions.dense import as_operator

        vectors = as_operator(vectors, "Spectral vectors")
        _checks.square(vectors, "Spectral vectors")
        values, _ = _checks.float_array(values, "Spectral values", ndim=1)
        if values.shape[0] != vectors.shape[0]:
            raise ValueError(
                f"Spectral: {values.shape[0]} values for eigenvectors of shape "
                f"{_checks.shape_str(vectors.shape)}"
            )
        _checks.same_backend((vectors, values), "Spectral")
        self._set(vectors=vectors, values=values)

    @property
    def shape(self) -> tuple[int, int]:
        return self.vectors.shape


def _wrap(vectors: LinearOperator, values: Array) -> Spectral:
    out = object.__new__(Spectral)
    out._set(vectors=vectors, values=values)
    return out


def _same_basis(A: Spectral, values: Array) -> Spectral:
    """`Q diag(values) Q^H` with `A`'s `Q`, keeping `A`'s note of the operator whose
    eigendecomposition `Q` is (see `function_of_eigh`)."""
    out = _wrap(A.vectors, values)
    if "_eigh_of" in A.__dict__:
        out._set(_eigh_of=A._eigh_of)
    return out


def function_of_eigh(A: LinearOperator, f: object) -> Spectral:
    """`f(A) = Q diag(f(w)) Q^H` from `(w, Q) = eigh(A)`, noting `(A, w)` on the result.

    The note (`_eigh_of`, a hint like the one `A.H` leaves for `A.H @ A`, not part of the
    pytree) lets a sum `A + f(A)` or `f(A) + g(A)` be solved in the one eigenbasis
    (`structlin/operators/eigenbasis.py`): `A = Q diag(w) Q^H` in the same `Q`.
    """
    w, Q = eigh(A)
    out = _wrap(Q, f(backend_of(w), w))
    out._set(_eigh_of=(A, w))
    return out


def _real_values(A: Spectral) -> bool:
    return not backend_of(A.values).is_complex(A.values.dtype)


@dispatch
def matmat(A: Spectral, X: object):
    Y = matmat(adjoint(A.vectors), X)
    return matmat(A.vectors, A.values[:, None] * Y)


@dispatch
def to_dense(A: Spectral):
    backend = backend_of(A.values)
    Q = to_dense(A.vectors)
    return backend.matmul(Q * A.values[None, :], backend.conj(backend.swap_last(Q)))


@dispatch
def transpose(A: Spectral):
    if _real_values(A) and not backend_of(A.values).is_complex(A.dtype):
        return A  # real symmetric
    # (Q W Q^H)^T = conj(Q) W Q^T, and conj(Q) = (Q^H)^T.
    return _wrap(transpose(adjoint(A.vectors)), A.values)


@dispatch
def adjoint(A: Spectral):
    if _real_values(A):
        return A  # Hermitian
    return _wrap(A.vectors, backend_of(A.values).conj(A.values))


def _check_invertible(A: Spectral) -> None:
    backend = backend_of(A.values)
    if backend.is_concrete(A.values):
        zeros = backend.to_numpy(A.values) == 0
        if zeros.any():
            raise SingularOperatorError(
                f"Spectral operator of size {A.shape[0]} is singular: "
                f"{int(zeros.sum())} zero eigenvalues"
            )


@dispatch
def inv(A: Spectral):
    _check_invertible(A)
    return _same_basis(A, 1 / A.values)


@dispatch
def solve(A: Spectral, B: object):
    _check_invertible(A)
    return matmat(_wrap(A.vectors, 1 / A.values), B)


@dispatch
def slogdet(A: Spectral):
    return slogdet_of_values(A.values)


def slogdet_of_values(w: Array) -> tuple[Array, Array]:
    """`(prod sign w, sum log|w|)`, with `(0, -inf)` for a zero in `w`."""
    backend = backend_of(w)
    mag = backend.abs(w)
    return backend.prod(w / (mag + (mag == 0))), backend.sum(backend.log(mag))


@dispatch
def diag(A: Spectral):
    # A_ii = sum_j |Q_ij|^2 w_j, with |Q|^2 real
    backend = backend_of(A.values)
    w = A.values
    weights = abs_squared(A.vectors)
    if backend.is_complex(w.dtype):
        weights = to(weights, w.dtype, None, None)
    out = backend.reshape(matmat(weights, backend.reshape(w, (-1, 1))), (-1,))
    return backend.astype(out, A.dtype) if out.dtype != A.dtype else out


@dispatch
def trace(A: Spectral):
    return backend_of(A.values).sum(A.values)


@dispatch
def eigh(A: Spectral):
    return A.values, A.vectors


@dispatch
def compose(A: Spectral, B: Spectral):
    if A.vectors is B.vectors:  # the same eigenbasis: multiply the eigenvalues
        return _same_basis(A, A.values * B.values)
    return Product(A, B)


@dispatch
def scale(c: object, A: Spectral):
    return _same_basis(A, c * A.values)


@dispatch
def is_symmetric(A: Spectral):
    return _real_values(A)


@dispatch
def structured_eigh(A: Spectral):
    return True


# -- abs_squared: |Q|^2 entrywise, for the diagonal of Q diag(w) Q^H ---------------------------


@dispatch
def abs_squared(A: LinearOperator):
    """The operator of `|A_ij|^2`: structured for Kron (of the factors'), BlockDiag, Diagonal,
    Identity, Permutation; otherwise from the dense matrix, `O(n^2)`."""
    backend = dense_backend(A)[0]
    D = to_dense(A)
    return Dense(backend.real(D * backend.conj(D)))


@dispatch
def abs_squared(A: Dense):
    backend = A.backend
    return Dense(backend.real(A.array * backend.conj(A.array)))


@dispatch
def abs_squared(A: Product):
    """`|A_1 ... A_d|^2 = |A_1|^2 ... |A_d|^2` when at most one factor is not
    `monomial` (a monomial factor only moves and
    scales entries, so no two products land on one entry); else the dense fallback."""
    if sum(not monomial(op) for op in A.ops) <= 1:
        return Product(*(abs_squared(op) for op in A.ops))
    return abs_squared.resolve(LinearOperator)(A)


@dispatch
def abs_squared(A: Sum):
    """Term by term where the terms are known to have no nonzero entry in common (the
    note `_disjoint_terms` the rules that build such sums leave, e.g. the eigenvectors of
    a symmetric permutation); else the dense fallback."""
    if A.__dict__.get("_disjoint_terms", False):
        return Sum(*(abs_squared(op) for op in A.ops))
    return abs_squared.resolve(LinearOperator)(A)


# -- monomial operators: at most one nonzero entry in each row and column ---------------------


@dispatch
def monomial(A: LinearOperator):
    """Whether every row and column of `A` has at most one nonzero entry, known from its type
    alone (Identity, Diagonal, Permutation, and Kron, products, multiples, BlockDiag of
    `1 x 1` blocks of those). For a monomial unitary `Q` and a diagonal `D`, `Q^H D Q` is
    diagonal, with entries `|Q|^2^T d`. The fallback: `False`."""
    return False


@dispatch
def monomial(A: Product):
    return all(monomial(op) for op in A.ops)


@dispatch
def monomial(A: Symmetric):
    return monomial(A.op)


@dispatch
def monomial_eigenvectors(A: LinearOperator):
    """Whether the `Q` of `eigh(A)` is `monomial`,
    known from `A`'s type alone (a Diagonal's is the identity, a Kron's the Kron of its
    factors'); then `A + D` for a diagonal `D` is `Q diag(w + |Q|^2^T d) Q^H`. The
    fallback: `False`."""
    return False


@dispatch
def monomial_eigenvectors(A: Symmetric):
    return monomial_eigenvectors(A.op)


@dispatch
def monomial_eigenvectors(A: Spectral):
    return monomial(A.vectors)


# -- the eigendecomposition and the functions of Hermitian operators --------------------------


@dispatch
@dense_method
def eigh(A: LinearOperator):
    """Fallback: the dense eigendecomposition, `O(n^3)` time, `O(n^2)` memory."""
    return dense_eigh(A)


def dense_eigh(A: LinearOperator) -> tuple[Array, Dense]:
    """`(w, Dense(V))` from the dense eigendecomposition of `A`: `O(n^3)`, `w` ascending."""
    _checks.square(A, "eigh")
    backend = dense_backend(A)[0]
    w, V = backend.eigh(to_dense(A))
    return w, Dense(V)


@dispatch
def structured_eigh(A: LinearOperator):
    """Whether `eigh(A)` has a structured rule (no `n x n` eigendecomposition)."""
    return False


@dispatch
def structured_eigh(A: Symmetric):
    return structured_eigh(A.op)


@dataclass(frozen=True)
class ScalarFunction:
    """A function `f` of the eigenvalues, and what the structured rules may assume of it.

    Attributes:
        name: For messages (`"sqrt"`).
        f: `f(backend, w)`, elementwise on a real array `w` of eigenvalues.
        power: `p` where `f(x) = x^p` on `x >= 0`, which is multiplicative
            (`f(xy) = f(x) f(y)`): then `f(A ⊗ B) = f(A) ⊗ f(B)` for PSD factors.
        keeps_psd: `f` maps `[0, inf)` into `[0, inf)`: `f(A)` of a PSD `A` is PSD.
        positive: `f` maps every real number to a positive one (`exp`): `f(A)` of any
            symmetric `A` is PSD.
    """

    name: str
    f: Callable[[Backend, Array], Array]
    power: float | None = None
    keeps_psd: bool = False
    positive: bool = False

    def __call__(self, backend: Backend, w: Array) -> Array:
        return self.f(backend, w)


def power_function(p: float) -> ScalarFunction:
    """`x^p` (`sqrt` is `p = 1/2`); negative rounding errors of PSD eigenvalues are taken as 0."""

    def f(backend: Backend, w: Array) -> Array:
        w = backend.where(w < 0, 0 * w, w) if p != int(p) else w
        return w**p

    name = "sqrt" if p == 0.5 else f"pow(., {p})"
    return ScalarFunction(name, f, power=p, keeps_psd=True)


@dispatch
def matrix_function(A: LinearOperator, f: object):
    """Fallback: `Q diag(f(w)) Q^H` from [`eigh`][structlin.eigh] (structured `Q` where
    `eigh` is structured, else the dense eigendecomposition, `O(n^3)`)."""
    return function_of_eigh(A, f)


@dispatch
def matrix_function(A: Symmetric, f: object):
    return matrix_function(A.op, f)


def annotate_function(A: LinearOperator, f: ScalarFunction, out: LinearOperator) -> LinearOperator:
    """`out = f(A)` annotated with what is known of it: PSD where `f` is positive, or keeps
    PSD and `A` is PSD; symmetric where `A` is (a real function of a Hermitian operator)."""
    if not is_symmetric(A):
        return out
    if f.positive or (f.keeps_psd and is_psd(A)):
        return out if is_psd(out) else PSD(out)
    return out if is_symmetric(out) else Symmetric(out)


@dispatch
def matrix_function(A: Spectral, f: object):
    return _same_basis(A, f(backend_of(A.values), A.values))


@dispatch
def components(A: Spectral):
    # Q's components, then the eigenvalues: n independent 1 x 1 scalings, as a Diagonal's.
    return (*components(A.vectors), Component(A.shape[0], 1, 1))
