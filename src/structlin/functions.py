"""The public functions: checked entry points to the dispatched rules.

Each function validates its arguments once (shapes, backends, dtypes) and then
calls the plum-dispatched rule of the same name in [`structlin.rules`][], where
structures register their exact implementations. Costs are those of the rule
that matches; the docstrings of the operator classes state them.
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any

from structlin import _checks, algorithms, rules
from structlin._convert import unify
from structlin.algorithms import Algorithm, Plan
from structlin.backends import (
    _BY_TYPE,
    Array,
    Backend,
    Device,
    DType,
    asarray_hint,
    backend_of,
    get_backend,
    is_array,
)
from structlin.expressions import is_scalar
from structlin.expressions.spectral import ScalarFunction, annotate_function, power_function
from structlin.operator import LinearOperator

__all__ = [
    "adjoint",
    "apply",
    "diag",
    "eigh",
    "exp",
    "explain",
    "inv",
    "is_psd",
    "is_scalar",
    "is_symmetric",
    "log",
    "logdet",
    "lstsq",
    "matmat",
    "pinv",
    "project",
    "rmatmat",
    "slogdet",
    "solve",
    "sqrt",
    "pow",
    "to",
    "to_dense",
    "trace",
    "transpose",
]


# `A @ x` and `x @ A` first try the common case: an array of the operator's backend,
# dtype and device, which needs no conversion and no check but of its size. The two
# functions below recognise it in a few attribute reads, where the full checks of
# `_operand` cost as much as a small matmul, and call the rule without the cost of
# calling a `Rule` object; they return `None` for any other operand, which is then for
# `matmat` or `rmatmat` to check, convert or refuse. They are written out in full on
# purpose: each function call on this path costs a measurable share of the product of
# a 64 x 64 operator.


def _plain_matmat(A: LinearOperator, X: Any) -> Array | None:
    """`A @ X` for a plain `X` with `X.shape[0] == n`, else `None`."""
    plain = A._plain_operand
    if plain is None:
        return None
    backend, dtype, device, _, n, matmul_like = plain
    # The registry of `backend_of`: an array type it has not met yet takes the full checks
    # once, which register it.
    if _BY_TYPE.get(type(X)) is not backend or X.dtype is not dtype:
        return None
    # `getattr`: a JAX tracer has no device (and passes the full checks).
    if device is not None and getattr(X, "device", None) != device:
        return None
    shape = X.shape
    ndim = len(shape)
    if not ndim or shape[0] != n:
        return None
    if ndim != 2 and not (ndim == 1 and matmul_like):
        return _shaped_matmat(A, X)
    impl = rules.matmat.cache.get((type(A), type(X)))
    if impl is None:
        impl = rules.matmat.resolve(type(A), type(X))
    return impl(A, X)


def _plain_rmatmat(X: Any, A: LinearOperator) -> Array | None:
    """`X @ A` for a plain `X` with `X.shape[-1] == m`, else `None`."""
    plain = A._plain_operand
    if plain is None:
        return None
    backend, dtype, device, m, _, matmul_like = plain
    if _BY_TYPE.get(type(X)) is not backend or X.dtype is not dtype:
        return None
    if device is not None and getattr(X, "device", None) != device:
        return None
    shape = X.shape
    if not shape or shape[-1] != m:
        return None
    if not matmul_like and len(shape) != 2:
        return _shaped_rmatmat(X, A)
    impl = rules.rmatmat.cache.get((type(X), type(A)))
    if impl is None:
        impl = rules.rmatmat.resolve(type(X), type(A))
    return impl(X, A)


def _operand(
    A: LinearOperator, X: Any, what: str, axis: int, size: int | None = None
) -> tuple[Any, LinearOperator]:
    """Check `X` against `A` and bring both to a common dtype. `X.shape[axis]` must be
    `size`: by default `A.shape[1]` for `axis = 0` (`A @ X`), `A.shape[0]` otherwise."""
    if not is_array(X):
        raise TypeError(
            f"{what}: expected an array, got {type(X).__name__}; convert it with {asarray_hint()}"
        )
    X = _checks.plain_array(X, what)
    backend = backend_of(X)
    if A.backend is not None and backend is not A.backend:
        raise TypeError(
            f"{what}: the operator is {A.backend.name} but the array is {backend.name}; "
            f"convert one of them (e.g. op.to(backend='{backend.name}'))"
        )
    if not backend.is_floating(X.dtype):
        raise TypeError(
            f"{what}: the array has dtype {X.dtype}; structlin operators act on floating-point "
            "or complex arrays, cast it first (e.g. x.astype(numpy.float64) or x.double())"
        )
    if size is None:
        size = A.shape[1] if axis == 0 else A.shape[0]
    if len(X.shape) == 0 or X.shape[axis] != size:
        raise ValueError(
            f"{what}: operator of shape {_checks.shape_str(A.shape)} cannot act on an array of "
            f"shape {_checks.shape_str(X.shape)}; expected "
            + (f"({size},) or ({size}, k)" if axis == 0 else f"(..., {size})")
        )
    device = backend.device(X) if A.device is not None else None
    if device is not None and device != A.device:
        raise ValueError(
            f"{what}: the operator is on {A.device} but the array is on {device}; "
            "move one of them (op.to(device=...) or x.to(...))"
        )
    if A.dtype is not None and X.dtype != A.dtype:
        # A value-free operator (no backend) may carry NumPy's dtype: take it as X's library's.
        dtype = backend.result_type(backend.canonical_dtype(A.dtype), X.dtype)
        if X.dtype != dtype:
            X = backend.astype(X, dtype)
        if A.dtype != dtype:
            A = rules.to(A, dtype, None, None)
    return X, A


def matmat(A: LinearOperator, X: Array) -> Array:
    """`A @ X` for `X` of shape `(n,)` or `(n, k)`; also spelled `A @ X`.

    The array and the operator must share a backend and device. Their dtypes
    are promoted as the backend promotes them (a real operator applied to a
    complex array gives a complex result).

    Raises:
        TypeError: `X` is not an array, is of another backend, or has an integer dtype.
        ValueError: `X.shape[0] != A.shape[1]`, `X` has more than 2 dimensions, or
            lives on another device.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Kron(np.eye(2), 2.0 * np.eye(3))
        >>> sl.matmat(A, np.ones(6))
        array([2., 2., 2., 2., 2., 2.])
        >>> (A @ np.ones((6, 4))).shape
        (6, 4)
    """
    Y = _plain_matmat(A, X)
    if Y is not None:
        return Y
    X, A = _operand(A, X, "A @ x", 0)
    return _shaped_matmat(A, X)


def _shaped_matmat(A: LinearOperator, X: Array) -> Array:
    """`A @ X` for a checked `X`: a matrix, or a vector made one for rules that need it."""
    ndim = len(X.shape)
    if ndim == 2 or (ndim == 1 and A._matmul_like):
        return rules.matmat(A, X)
    if ndim == 1:
        backend = backend_of(X)
        return backend.reshape(rules.matmat(A, backend.reshape(X, (-1, 1))), (-1,))
    raise ValueError(
        f"A @ x: x must be a vector (n,) or a matrix (n, k), got shape {_checks.shape_str(X.shape)}; "
        "for a batch of row vectors of shape (..., n) use x @ A.T"
    )


def rmatmat(X: Array, A: LinearOperator) -> Array:
    """`X @ A` for `X` of shape `(..., m)`, giving `(..., n)`; also spelled `X @ A`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Diagonal(np.array([1.0, 2.0, 3.0]))
        >>> sl.rmatmat(np.ones((2, 3)), A)
        array([[1., 2., 3.],
               [1., 2., 3.]])

    Leading axes are batch axes: this is how layers apply `A^T` to a batch of rows.

    Raises:
        TypeError, ValueError: as for [`matmat`][structlin.matmat], with `X.shape[-1] != A.shape[0]`.
    """
    Y = _plain_rmatmat(X, A)
    if Y is not None:
        return Y
    X, A = _operand(A, X, "x @ A", -1)
    return _shaped_rmatmat(X, A)


def _shaped_rmatmat(X: Array, A: LinearOperator) -> Array:
    """`X @ A` for checked rows `X`, made one matrix of rows for rules that need it."""
    if len(X.shape) == 2 or A._matmul_like:
        return rules.rmatmat(X, A)
    backend = backend_of(X)
    lead = tuple(X.shape[:-1])
    Y = rules.rmatmat(backend.reshape(X, (math.prod(lead), A.shape[0])), A)
    return backend.reshape(Y, (*lead, A.shape[1]))


def compose(A: LinearOperator, B: LinearOperator) -> LinearOperator:
    """`A @ B`: a structured product where a rule exists (Kron, BlockDiag, Diagonal,
    Permutation, a stride permutation and its transpose (the identity), Identity, and
    generalised Monarch matrices, whose factors concatenate into Monarch^k), else a lazy
    [`Product`][structlin.Product]."""
    if A.shape[1] != B.shape[0]:
        raise ValueError(
            f"A @ B: {type(A).__name__} of shape {_checks.shape_str(A.shape)} and "
            f"{type(B).__name__} of shape {_checks.shape_str(B.shape)} do not chain"
        )
    gram = _adjoint_pair(A, B)
    out = rules.compose(*unify((A, B), "A @ B"))
    if gram:
        out._set(_gram=True)  # A^H A and A A^H are PSD whatever their structure (see is_psd)
    return out


def _adjoint_pair(A: LinearOperator, B: LinearOperator) -> bool:
    """Whether `A @ B` is `C^H C` or `C C^H`, as `C.H @ C` and `C @ C.H` spell it: `C.H`
    (and `C.T` of a real `C`) remember the operator they were taken of."""
    return A.__dict__.get("_adjoint_of") is B or B.__dict__.get("_adjoint_of") is A


def _remember(T: LinearOperator, A: LinearOperator) -> LinearOperator:
    # A hint for `compose`, not part of the operator (not in its pytree): lost by `.to`,
    # pickling and `jax.jit`'s flattening, where `sl.PSD` keeps what it says.
    T._set(_adjoint_of=A)
    return T


def add(A: LinearOperator, B: LinearOperator) -> LinearOperator:
    """`A + B`: structured where a rule exists (Diagonal), else a lazy [`Sum`][structlin.Sum]."""
    if A.shape != B.shape:
        raise ValueError(
            f"A + B: shapes differ, {type(A).__name__} {_checks.shape_str(A.shape)} and "
            f"{type(B).__name__} {_checks.shape_str(B.shape)}"
        )
    return rules.add(*unify((A, B), "A + B"))


def scale(c: Any, A: LinearOperator) -> LinearOperator:
    """`c * A` for a scalar `c` (see [`ScalarMul`][structlin.ScalarMul])."""
    return rules.scale(c, A)


def transpose(A: LinearOperator) -> LinearOperator:
    """`A^T`, structured for every structlin operator (e.g. `(A ⊗ B)^T = A^T ⊗ B^T`); also
    spelled `A.T`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> K = sl.Kron(np.arange(4.0).reshape(2, 2), np.eye(3))
        >>> type(sl.transpose(K)).__name__
        'Kron'
        >>> bool(np.allclose(sl.transpose(K).to_dense(), K.to_dense().T))
        True
    """
    T = rules.transpose(A)
    dtype = A.dtype
    if dtype is None or not _checks.dense_backend(A)[0].is_complex(dtype):
        return _remember(T, A)  # real: A^T = A^H
    return T


def adjoint(A: LinearOperator) -> LinearOperator:
    """`A^H = conj(A)^T`; equal to `transpose(A)` for real operators; also spelled `A.H`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> D = sl.Dense(np.array([[1 + 2j, 0], [3, 4j]]))
        >>> sl.adjoint(D).to_dense()
        array([[1.-2.j, 3.-0.j],
               [0.-0.j, 0.-4.j]])
    """
    return _remember(rules.adjoint(A), A)


def inv(A: LinearOperator, alg: Algorithm | None = None) -> LinearOperator:
    """`A^{-1}` as an operator.

    Structured where the structure allows it: Kron (Kron of inverses),
    BlockDiag (batched block inverses), Monarch and GeneralizedMonarch with square
    blocks (reversed block inverses), Diagonal, Permutation, Identity,
    ScalarMul, Product of square factors (reversed product of inverses), Dense
    (explicit inverse, `O(n^3)`). Otherwise a lazy [`Inverse`][structlin.Inverse]
    that solves with the dense matrix on each application.

    Half precision (float16, bfloat16), which LAPACK lacks, is factorised in float32
    and the result returned in the input's dtype. A matrix to factorise with inf or
    nan entries is refused (ValueError) where its values can be read; inside
    `jax.jit` or `torch.compile` they cannot, and the result has NaN entries instead.

    `alg` chooses the method (see [`Auto`][structlin.Auto], the default): for `B + c I`
    with `B` symmetric and a structured eigendecomposition the inverse is
    `Q diag(1 / (w + c)) Q^H`, a [`Spectral`][structlin.Spectral]; above `Auto`'s
    `dense_limit`, an operator without a structured inverse gives a lazy inverse that runs
    CG (PSD), MINRES (symmetric) or GMRES on each application. `alg=sl.CG()`,
    `sl.MINRES()` or `sl.GMRES()` force that, `alg=sl.LU()` or `sl.Cholesky()` a dense
    inverse.

    Raises:
        ValueError: `A` is not square, or a matrix to factorise has inf or nan entries.
        SingularOperatorError: `A` is singular (where detectable eagerly).
        TypeError: `alg` does not compute inverses.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> K = sl.Kron(2.0 * np.eye(2), np.array([[1.0, 1.0], [0.0, 1.0]]))
        >>> type(sl.inv(K)).__name__  # the Kronecker product of the factors' inverses
        'Kron'
        >>> bool(np.allclose(sl.inv(K).to_dense() @ K.to_dense(), np.eye(4)))
        True
    """
    _checks.square(A, "inv")
    if alg is None:
        return _inv_auto(A)
    return algorithms.plan("inv", A, alg).run(A)


def _inv_auto(A: LinearOperator) -> LinearOperator:
    """`inv` with the default algorithm: the rules, but for a large PSD operator with none."""
    if A.shape[0] > algorithms.Auto.dense_limit and rules.exact_path(A, "inv") == "dense":
        return algorithms.plan("inv", A, None).run(A)
    return rules.inv(A)


def solve(A: LinearOperator, B: Array, alg: Algorithm | None = None) -> Array:
    """`A^{-1} B` for `B` of shape `(n,)` or `(n, k)`, using the structured inverse where one exists.

    `alg` chooses the method; the default, [`Auto`][structlin.Auto], takes the structured
    rule, then for `B + c I` (`B` symmetric with a structured eigendecomposition, e.g. a
    Kron of [`PSD`][structlin.PSD] factors) `Q diag(1 / (w + c)) Q^H` exactly, then a dense
    Cholesky (for a PSD operator) or LU solve, and above its `dense_limit` an iterative
    method: [`CG`][structlin.CG] for a PSD operator, [`MINRES`][structlin.MINRES] for a
    symmetric one, [`GMRES`][structlin.GMRES] otherwise. [`explain`][structlin.explain]`(sl.solve, A, B)`
    says which. `alg=sl.LU()`, `sl.Cholesky()`, `sl.CG(...)`, `sl.MINRES(...)` or
    `sl.GMRES(...)` force one.

    Half precision (float16, bfloat16), which LAPACK lacks, is factorised in float32
    and the result returned in the input's dtype. A matrix to factorise with inf or
    nan entries is refused (ValueError) where its values can be read; inside
    `jax.jit` or `torch.compile` they cannot, and the result has NaN entries instead.
    Non-finite entries of `B` are not refused: they propagate as in any product.

    Raises:
        ValueError: `A` is not square, `B` does not match it, or a matrix to factorise
            has inf or nan entries.
        TypeError: `B` is not a floating-point array of `A`'s backend, or `alg` does not
            solve.
        SingularOperatorError: `A` is singular (where detectable eagerly).
        NotPositiveDefiniteError: `alg=sl.Cholesky()` and `A` is not positive definite.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.solve(sl.Diagonal(np.array([2.0, 4.0])), np.array([1.0, 1.0]))
        array([0.5 , 0.25])
    """
    _checks.square(A, "solve")
    B, A = _operand(A, B, "solve(A, b)", 0)
    backend = backend_of(B)
    if len(B.shape) > 2:
        raise ValueError(
            f"solve(A, b): b must have shape (n,) or (n, k), got {_checks.shape_str(B.shape)}"
        )
    small = A.shape[0] <= algorithms.Auto.dense_limit and "_gram" not in A.__dict__
    run = rules.solve if alg is None and small else None
    if run is None:
        run = algorithms.plan("solve", A, alg, B).run
    if len(B.shape) == 1:
        return backend.reshape(run(A, backend.reshape(B, (-1, 1))), (-1,))
    return run(A, B)


def lstsq(A: LinearOperator, B: Array, alg: Algorithm | None = None) -> Array:
    """The least-squares solution of least norm of `A X ~ B`, for an operator of any shape
    and rank: `A^+ B`, as `numpy.linalg.lstsq(A, B, rcond=None)[0]` gives it.

    `B` has shape `(m,)` or `(m, k)`, the result `(n,)` or `(n, k)`. `alg` chooses the
    method; the default, [`Auto`][structlin.Auto], applies the structured pseudo-inverse
    where there is one (see [`pinv`][structlin.pinv]), else the dense SVD (singular values
    at most `max(m, n) eps` times the largest count as zero), and for an operator with
    `max(m, n)` above its `dense_limit` (4096) and no structured pseudo-inverse,
    [`LSQR`][structlin.LSQR], from products only; a [`Dense`][structlin.Dense] keeps its
    SVD at any size. `alg=sl.LSQR(damp=...)` solves the ridge problem
    `min ||A X - B||^2 + damp^2 ||X||^2` instead. [`explain`][structlin.explain]`(sl.lstsq, A, B)`
    says which path a call takes.

    For a square nonsingular `A` the result is `solve(A, B)`, but `lstsq` never assumes
    that: a structured inverse (a Kron's, a Monarch's) is not used in place of a
    pseudo-inverse.

    Raises:
        ValueError: `B` does not have `m` rows or has more than 2 dimensions, or a matrix
            to decompose has inf or nan entries.
        TypeError: `B` is not a floating-point array of `A`'s backend, or `alg` does not
            solve least-squares problems.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Kron(np.array([[1.0], [1.0]]), np.eye(2))  # 4 x 2: two copies of x
        >>> sl.lstsq(A, np.array([1.0, 2.0, 3.0, 4.0]))  # their mean
        array([2., 3.])
        >>> sl.explain(sl.lstsq, A, np.ones(4)).path
        'structured'
    """
    B, A = _operand(A, B, "lstsq(A, b)", 0, size=A.shape[0])
    if len(B.shape) > 2:
        raise ValueError(
            f"lstsq(A, b): b must have shape (m,) or (m, k) with m = {A.shape[0]}, got "
            f"{_checks.shape_str(B.shape)}"
        )
    backend = backend_of(B)
    run = algorithms.plan("lstsq", A, alg, B).run
    if len(B.shape) == 1:
        return backend.reshape(run(A, backend.reshape(B, (-1, 1))), (-1,))
    return run(A, B)


def pinv(A: LinearOperator, alg: Algorithm | None = None) -> LinearOperator:
    """The Moore-Penrose pseudo-inverse `A^+` of an `m x n` operator, an `n x m` operator;
    `pinv(A) @ B` is [`lstsq`][structlin.lstsq]`(A, B)`.

    Structured where the structure allows: a [`Diagonal`][structlin.Diagonal] inverts its
    nonzero entries (those above `n eps` times the largest in magnitude; the others stay
    zero), a [`Kron`][structlin.Kron] is the Kron of its factors' pseudo-inverses (any
    factor shapes), a [`BlockDiag`][structlin.BlockDiag] the BlockDiag of its blocks'
    (one batched SVD), a [`LowRank`][structlin.LowRank] `U V` a LowRank again, from thin
    SVDs of the factors (`O((m + n) r^2)`), `c A` is `A^+ / c`, `(A^T)^+ = (A^+)^T`, a
    Permutation's is its transpose, an Identity's itself, a [`Dense`][structlin.Dense]'s
    the dense pseudo-inverse by its SVD. Otherwise a lazy
    [`PseudoInverse`][structlin.PseudoInverse], which solves with the dense SVD on each
    application, or above `Auto`'s `dense_limit` with [`LSQR`][structlin.LSQR];
    `alg=sl.LSQR(...)` forces that.

    Structured rules drop singular values below a cutoff relative to the largest of each
    part they decompose (a Kron factor, a block), which for a nearly rank-deficient part
    can differ from the cutoff of the whole matrix that `numpy.linalg.pinv` applies. A
    structured inverse is never used: `A^+ = A^{-1}` only for a nonsingular `A`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.pinv(sl.Diagonal(np.array([2.0, 0.0, 4.0]))).diag  # zero stays zero
        array([0.5 , 0.  , 0.25])
        >>> P = sl.pinv(sl.Kron(np.array([[1.0, 2.0]]), np.eye(2)))  # 2 x 4 -> 4 x 2
        >>> type(P).__name__, P.shape
        ('Kron', (4, 2))
    """
    if alg is None and max(A.shape) <= algorithms.Auto.dense_limit:
        return rules.pinv(A)
    return algorithms.plan("pinv", A, alg).run(A)


def to_dense(A: LinearOperator) -> Array:
    """The `(m, n)` array `A` represents; also spelled `A.to_dense()`.

    Built directly from the structure where a rule exists (`numpy.kron` of the factors
    for Kron, the blocks for BlockDiag, core contractions for TT and BTT, ...), otherwise
    by applying `A` to the identity (`A @ I`, e.g. for Monarch: `O(n)` matmat columns).

    The result is a new array: it never shares memory with the arrays `A` holds
    (for a [`Dense`][structlin.Dense] it is a copy, `O(mn)`), so writing into it
    leaves `A` as it was.

    A dense matrix that would take more memory than the device it would live on has
    (the host's physical memory for NumPy and CPU arrays) is refused before anything
    is allocated, here and in the dense fallbacks of the other functions; the
    environment variable `STRUCTLIN_MAX_DENSE_BYTES` sets another limit in bytes.

    Raises:
        ValueError: the dense matrix would not fit in memory.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.to_dense(sl.Kron(np.eye(2), np.ones((1, 2))))
        array([[1., 1., 0., 0.],
               [0., 0., 1., 1.]])
    """
    return _fresh(rules.to_dense(A), A)


def _fresh(Y: Array, A: LinearOperator) -> Array:
    """`Y`, or a copy of it where it may share memory with an array `A` holds: results of
    the public functions never alias an operator's storage (a `Dense`'s matrix, a
    `Diagonal`'s entries, a single core), whichever rule produced them. `O(1)` per leaf
    of `A` to check; a copy, `O(size of Y)`, only where needed."""
    if not is_array(Y):
        return Y
    backend = backend_of(Y)
    if not backend.mutable:  # nothing can write into Y or into A's arrays
        return Y
    return backend.copy(Y) if _shares_memory(Y, A, backend) else Y


def _shares_memory(Y: Array, A: LinearOperator, backend: Backend) -> bool:
    for child in A._child_values():
        if isinstance(child, LinearOperator):
            if _shares_memory(Y, child, backend):
                return True
        elif _BY_TYPE.get(type(child)) is backend and backend.may_share_memory(Y, child):
            return True
    return False


def slogdet(A: LinearOperator, alg: Algorithm | None = None) -> tuple[Array, Array]:
    """`(sign, log|det A|)`, like `numpy.linalg.slogdet`.

    Structured for Kron (`sum_i (n/n_i) log|det A_i|`), BlockDiag and Monarch
    with square blocks (sums over blocks), Diagonal, Permutation (the sign of the permutation), Identity,
    ScalarMul, Product of square factors, Inverse and (conjugate) transposes;
    `B + c I` through the eigenvalues of `B` where `B` is symmetric with a structured
    eigendecomposition (`sum log|w_i + c|`); dense Cholesky for an operator known to be
    PSD, dense LU otherwise; for a PSD operator without a structured rule larger than
    `Auto`'s `dense_limit` (4096), the stochastic estimate of [`SLQ`][structlin.SLQ]. A
    singular operator gives `(0, -inf)`. `alg` forces a method ([`LU`][structlin.LU],
    [`Cholesky`][structlin.Cholesky], [`SLQ`][structlin.SLQ]); see [`Auto`][structlin.Auto].

    Half precision (float16, bfloat16), which LAPACK lacks, is factorised in float32
    and the result returned in the input's dtype. A matrix to factorise with inf or
    nan entries is refused (ValueError) where its values can be read; inside
    `jax.jit` or `torch.compile` they cannot, and the result has NaN entries instead.

    Raises:
        ValueError: `A` is not square, or a matrix to factorise has inf or nan entries.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sign, logabsdet = sl.slogdet(sl.Diagonal(np.array([-2.0, 3.0])))
        >>> float(sign), round(float(logabsdet), 4)  # det = -6
        (-1.0, 1.7918)
    """
    _checks.square(A, "slogdet")
    if alg is None and A.shape[0] <= algorithms.Auto.dense_limit:
        return rules.slogdet(A)
    return algorithms.plan("slogdet", A, alg).run(A)


def logdet(A: LinearOperator, alg: Algorithm | None = None) -> Array:
    """`log det A`, for operators with a positive determinant (e.g. SPD).

    Computed from [`slogdet`][structlin.slogdet]: `log|det A|` for a real operator,
    `log(sign) + log|det A|` (complex) for a complex one. A singular operator gives
    `-inf`. A real operator with a negative determinant has no real logarithm: that is
    a ValueError where the sign can be read, and `nan` inside `jax.jit` or `torch.compile`
    (traced values), as `torch.logdet` gives; use `slogdet` when the sign can be negative.

    Raises:
        ValueError: `A` is not square, or is real with a negative determinant.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> round(float(sl.logdet(sl.Diagonal(np.array([2.0, 3.0])))), 4)  # log 6
        1.7918
    """
    sign, logabsdet = slogdet(A, alg)
    backend = backend_of(logabsdet)
    if backend.is_complex(sign.dtype) or not backend.is_concrete(sign):
        return backend.log(sign) + logabsdet  # traced and real: nan for a negative sign
    if bool(sign < 0):
        raise ValueError(
            f"logdet: {type(A).__name__} of shape {_checks.shape_str(A.shape)} has a negative "
            f"determinant (log|det A| = {float(logabsdet):.6g}), whose logarithm is not real; "
            "use sl.slogdet(A), which returns (sign, log|det A|)"
        )
    return logabsdet  # sign 1, or 0 with log|det A| = -inf


def diag(A: LinearOperator, alg: Algorithm | None = None) -> Array:
    """The diagonal `A[i, i]`, `i < min(m, n)`: structured for Kron, BlockDiag,
    Diagonal, Permutation, LowRank, Identity, Sum, ScalarMul; dense otherwise.

    A new array, never sharing memory with the arrays `A` holds (for a `Diagonal`,
    a copy of its entries). `alg=sl.Hutchinson(...)` estimates it from products with `A`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.diag(sl.Kron(np.diag([1.0, 2.0]), np.diag([1.0, 10.0])))
        array([ 1., 10.,  2., 20.])
    """
    if alg is None:
        return _fresh(rules.diag(A), A)
    return _fresh(algorithms.plan("diag", A, alg).run(A), A)


def trace(A: LinearOperator, alg: Algorithm | None = None) -> Array:
    """`sum_i A[i, i]` of a square operator (Kron: the product of factor traces).

    `alg=sl.Hutchinson(...)` estimates it from products with `A` instead.

    Raises:
        ValueError: `A` is not square.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> float(sl.trace(sl.Kron(np.diag([1.0, 2.0]), np.diag([1.0, 10.0]))))  # 3 * 11
        33.0
    """
    _checks.square(A, "trace")
    if alg is None:
        return rules.trace(A)
    return algorithms.plan("trace", A, alg).run(A)


def eigh(A: LinearOperator, alg: Algorithm | None = None) -> tuple[Array, LinearOperator]:
    """`(w, Q)` with `A = Q diag(w) Q^H` for a Hermitian `A`: the eigenvalues `w` (a real
    array of `n`) and the eigenvectors as a unitary *operator* `Q`.

    Structured where the structure allows: a [`Kron`][structlin.Kron] gives the Kron of its
    factors' eigenvectors and the Kronecker product of their eigenvalues (`O(sum n_i^3)`,
    nothing `n x n`), a [`BlockDiag`][structlin.BlockDiag] the BlockDiag of its blocks',
    a [`Diagonal`][structlin.Diagonal] its entries and the identity, a symmetric
    [`Permutation`][structlin.Permutation] `+-1` and `O(n)` eigenvectors (any other
    permutation raises `ValueError`), a [`Monarch`][structlin.Monarch] that is a
    block-diagonal matrix in a permuted basis its blocks' behind the permutation, `B + c I`
    those of `B` shifted (and sums of terms in one eigenbasis, such as `A + exp(A)`, their
    summed eigenvalues), `c A` those of `A` scaled; otherwise the dense eigendecomposition, `O(n^3)`,
    with `Q` a [`Dense`][structlin.Dense]. Structured eigenvalues are in the structure's
    order, not sorted (the dense ones ascend, as NumPy's).

    `A` is taken as Hermitian, as `numpy.linalg.eigh` takes it, and not checked (a Kron's
    factors each). `alg=sl.Lanczos(steps=m)` gives `m` approximate extreme eigenpairs
    instead, from products with `A` only.

    Raises:
        ValueError: `A` is not square (or a structured factor or block is not).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> a, b = np.array([[2.0, 1.0], [1.0, 2.0]]), np.diag([1.0, 5.0])
        >>> w, Q = sl.eigh(sl.Kron(a, b))
        >>> type(Q).__name__, sorted(w.tolist())
        ('Kron', [1.0, 3.0, 5.0, 15.0])
        >>> K = sl.Kron(a, b).to_dense()
        >>> bool(np.allclose((Q @ np.diag(w) @ Q.T.to_dense()), K))
        True
    """
    _checks.square(A, "eigh")
    if alg is None:
        return rules.eigh(A)
    return algorithms.plan("eigh", A, alg).run(A)


def explain(function: Any, A: LinearOperator, *args: Any, alg: Algorithm | None = None) -> Plan:
    """Which path `function(A, *args, alg=alg)` takes and what it costs, without running it.

    `function` is one of [`solve`][structlin.solve], [`inv`][structlin.inv],
    [`slogdet`][structlin.slogdet], [`logdet`][structlin.logdet], [`eigh`][structlin.eigh],
    [`trace`][structlin.trace], [`diag`][structlin.diag], [`lstsq`][structlin.lstsq] and
    [`pinv`][structlin.pinv]. The
    [`Plan`][structlin.algorithms.Plan] it returns has the `path` (`"structured"`,
    `"shifted"`, `"cholesky"`, `"lu"`, `"cg"`, ...), the `reason` and the `cost`;
    `print` shows all three. Reads types, never values.

    Raises:
        TypeError: `function` is not one of those, or `alg` does not compute it.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> K = sl.Kron(sl.PSD(a), sl.PSD(a))
        >>> plan = sl.explain(sl.solve, K + 0.1 * sl.Identity(4), np.ones(4))
        >>> plan.path
        'shifted'
        >>> sl.explain(sl.solve, sl.Dense(a) + 0.1 * sl.Identity(2), np.ones(2)).path
        'lu'
    """
    operations = {
        solve: "solve",
        inv: "inv",
        slogdet: "slogdet",
        logdet: "slogdet",
        eigh: "eigh",
        trace: "trace",
        diag: "diag",
        lstsq: "lstsq",
        pinv: "pinv",
    }
    operation = operations.get(function)
    if operation is None:
        raise TypeError(
            "explain: function must be sl.solve, sl.inv, sl.slogdet, sl.logdet, sl.eigh, "
            f"sl.trace, sl.diag, sl.lstsq or sl.pinv, got {function!r}"
        )
    B = args[0] if args else None
    return algorithms.plan(operation, A, alg, B)


def is_symmetric(A: LinearOperator) -> bool:
    """Whether `A` is known to be symmetric (Hermitian if complex) from its structure and
    annotations alone, never from its values (see [`structlin.rules.is_symmetric`][]).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> sl.is_symmetric(sl.Dense(a)), sl.is_symmetric(sl.Symmetric(a))
        (False, True)
        >>> sl.is_symmetric(sl.Kron(sl.Symmetric(a), sl.Diagonal(np.ones(3))))
        True
    """
    return bool(rules.is_symmetric(A))


def is_psd(A: LinearOperator) -> bool:
    """Whether `A` is known to be Hermitian positive semi-definite from its structure and
    annotations alone, never from its values (see [`structlin.rules.is_psd`][]).

    Known: a [`PSD`][structlin.PSD] annotation, `Identity`, a Kron of PSD factors, a sum
    of PSD terms, a positive Python number times a PSD operator (so `PSD + c I` for
    `c > 0`), the inverse or transpose of a PSD operator, and `C.H @ C`, `C @ C.H`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> C = sl.Dense(np.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> sl.is_psd(C), sl.is_psd(C.T @ C), sl.is_psd(C @ C)
        (False, True, False)
    """
    return bool(rules.is_psd(A))


def _matrix_function(A: LinearOperator, f: ScalarFunction) -> LinearOperator:
    _checks.square(A, f.name)
    return annotate_function(A, f, rules.matrix_function(A, f))


def sqrt(A: LinearOperator) -> LinearOperator:
    """The principal square root `A^{1/2}` of a Hermitian positive semi-definite `A`.

    Structured through [`eigh`][structlin.eigh]: `sqrt(A ⊗ B) = sqrt(A) ⊗ sqrt(B)` for a
    Kron of [`PSD`][structlin.PSD] factors, the blocks' roots for a BlockDiag, the entries'
    for a Diagonal; `Q diag(sqrt(w)) Q^H` (a [`Spectral`][structlin.Spectral]) otherwise,
    with the structured `Q` of `eigh` where there is one. Eigenvalues below zero (rounding
    errors) are taken as zero. The result of a PSD operator is annotated PSD.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> K = sl.PSD(sl.Kron(sl.PSD(a), sl.PSD(a)))
        >>> R = sl.sqrt(K)
        >>> bool(np.allclose((R @ R).to_dense(), K.to_dense()))
        True
    """
    return _matrix_function(A, power_function(0.5))


def pow(A: LinearOperator, p: float) -> LinearOperator:
    """`A^p` of a Hermitian positive semi-definite `A` (any real `p`; an integer `p` for any
    Hermitian `A`), as [`sqrt`][structlin.sqrt]: `(A ⊗ B)^p = A^p ⊗ B^p` for PSD factors,
    `Q diag(w^p) Q^H` otherwise.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> D = sl.pow(sl.Diagonal(np.array([4.0, 9.0])), -0.5)
        >>> sl.diag(D)
        array([0.5       , 0.33333333])
    """
    return _matrix_function(A, power_function(float(p)))


def exp(A: LinearOperator) -> LinearOperator:
    """The matrix exponential of a Hermitian `A`: `Q diag(exp(w)) Q^H` from
    [`eigh`][structlin.eigh] (structured `Q` where `eigh` is; a Diagonal's entries,
    a BlockDiag's blocks). The result is PSD (annotated so where `A` is annotated).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.diag(sl.exp(sl.Diagonal(np.array([0.0, 1.0]))))
        array([1.        , 2.71828183])
    """
    return _matrix_function(A, ScalarFunction("exp", lambda b, w: b.exp(w), positive=True))


def log(A: LinearOperator) -> LinearOperator:
    """The principal logarithm of a Hermitian positive definite `A`: `Q diag(log w) Q^H`
    from [`eigh`][structlin.eigh] (structured `Q` where `eigh` is).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.diag(sl.log(sl.Diagonal(np.array([1.0, np.e]))))
        array([0., 1.])
    """
    return _matrix_function(A, ScalarFunction("log", lambda b, w: b.log(w)))


def apply(f: Any, A: LinearOperator) -> LinearOperator:
    """`f(A) = Q diag(f(w)) Q^H` for a Hermitian `A` and an elementwise function `f` of an
    array of eigenvalues (written with the array's library, e.g. `torch.tanh` for a
    PyTorch operator, or with operators such as `1 / (1 + w)`).

    Structured where [`eigh`][structlin.eigh] is: the result is a
    [`Spectral`][structlin.Spectral] with the structured `Q` (a Kron of the factors'
    eigenvectors), a Diagonal of `f` of the entries, or a BlockDiag of the blocks' `f`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> F = sl.apply(lambda w: 1 / (1 + w), sl.Diagonal(np.array([1.0, 3.0])))
        >>> sl.diag(F)
        array([0.5 , 0.25])
    """
    if not callable(f):
        raise TypeError(f"apply: f must be a function of an array of eigenvalues, got {f!r}")
    name = getattr(f, "__name__", "f")
    return _matrix_function(A, ScalarFunction(name, lambda b, w: f(w)))


def to(
    A: LinearOperator,
    dtype: DType = None,
    device: Device = None,
    backend: Backend | str | None = None,
) -> LinearOperator:
    """`A` with floating-point arrays cast to `dtype`, all arrays moved to `device`
    and, if given, converted to another `backend` (through NumPy; a copy); also spelled
    `A.to(...)`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Kron(np.eye(2), np.eye(3))
        >>> sl.to(A, dtype=np.float32).dtype
        dtype('float32')

    Raises:
        TypeError: `dtype` is not a floating-point or complex dtype (integer and
            boolean dtypes are refused), or it is real while `A` is complex: the cast
            would drop the imaginary part, so build the operator from the real parts
            of its arrays (`x.real`) instead if that is what you want.
        ValueError: a `device` the backend cannot place arrays on (NumPy: not the CPU).
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    target = backend if backend is not None else A.backend
    if dtype is not None:
        dtype = _checks.float_dtype(dtype, target, "to: dtype")
        if A.dtype is not None:
            source = A.backend if A.backend is not None else _checks.dtype_backend(A.dtype)
            real = not (target or _checks.dtype_backend(dtype)).is_complex(dtype)
            if source.is_complex(A.dtype) and real:
                raise TypeError(
                    f"to: casting the complex {type(A).__name__} ({A.dtype}) to the real dtype "
                    f"{dtype} would drop the imaginary part; structlin does not do that "
                    "silently: take the real part explicitly (e.g. sl.Dense(A.to_dense().real), "
                    "or build the operator from x.real of its arrays)"
                )
    if device is not None and target is not None:
        device = target.canonical_device(device)
    return rules.to(A, dtype, device, backend)


def project(W: Array, structure: type[LinearOperator], **spec: Any) -> LinearOperator:
    """The operator of type `structure` nearest to the dense matrix `W` in Frobenius norm.

    `W` is a 2-D floating-point array; the result lives on its backend, dtype and
    device, and is computed there (batched SVDs, no Python loop over blocks).
    `spec` gives the sizes of the target structure. Each structure's rule is documented
    below, under "Per structure"; in summary:

    | structure | spec | result |
    |---|---|---|
    | [`Dense`][structlin.Dense] | none | `W` itself |
    | [`Diagonal`][structlin.Diagonal] | none (square `W`) | optimal: the diagonal of `W` |
    | [`BlockDiag`][structlin.BlockDiag] | `nblocks` | optimal: the diagonal blocks |
    | [`LowRank`][structlin.LowRank] | `rank` | optimal: truncated SVD (Eckart-Young) |
    | [`Kron`][structlin.Kron] | `factor_shapes` | optimal: nearest Kronecker product (Van Loan-Pitsianis) |
    | [`Monarch`][structlin.Monarch] | `nblocks` or `blocks` | optimal: batched rank-r SVDs |
    | [`BTT`][structlin.BTT] | `ms`, `ns`, `ranks` | optimal for 2 cores; greedy for more |
    | [`TT`][structlin.TT] | `ms`, `ns`, `ranks` | TT-SVD: quasi-optimal (within `sqrt(c - 1)`) |

    Half precision `W` (float16, bfloat16), which LAPACK lacks, is decomposed in float32
    and the factors returned in `W`'s dtype. A `W` with inf or nan entries is refused
    (on such input LAPACK's SVD returns garbage or never returns); inside `jax.jit`
    (or `torch.compile`) the values cannot be checked, and the factors of such a `W` are NaN.

    Raises:
        TypeError: `W` is not a floating-point array, `structure` is not an operator
            class or has no projection, or `spec` has an option the structure does not
            take (the message lists those it takes) or lacks one it needs.
        ValueError: `W` is not 2-D, has inf or nan entries, or its shape does not fit
            the spec.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> W = np.random.default_rng(0).standard_normal((8, 8))
        >>> B = sl.project(W, sl.BlockDiag, nblocks=2)
        >>> B.blocks.shape
        (2, 4, 4)
    """
    W, _ = _checks.float_array(W, "project: W", ndim=2)
    if not (isinstance(structure, type) and issubclass(structure, LinearOperator)):
        raise TypeError(
            f"project: structure must be an operator class such as sl.Monarch, got {structure!r}"
        )
    _check_spec(structure, spec)
    _checks.finite(W, "project: W")
    return rules.project(W, structure, **spec)


def _check_spec(structure: type[LinearOperator], spec: dict[str, Any]) -> None:
    """Refuse keywords that `structure`'s projection does not take, or lacks, naming the valid ones."""
    # The projection registered for the nearest class in `structure`'s MRO, as plum picks it.
    best, method = len(structure.__mro__), None
    for types, implementation in rules.project.signatures:
        (target,) = typing.get_args(types[1]) or (None,)
        if target in structure.__mro__ and structure.__mro__.index(target) < best:
            best, method = structure.__mro__.index(target), implementation
    if method is None:
        return
    params = list(inspect.signature(method).parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # the generic fallback, which says there is no projection
    what = f"project(W, {structure.__name__})"
    _checks.keywords(what, spec, [p.name for p in params])
    missing = [p.name for p in params if p.default is p.empty and p.name not in spec]
    if missing:
        raise TypeError(
            f"{what} needs the option {missing[0]}=...; its options: "
            + ", ".join(p.name for p in params)
        )
