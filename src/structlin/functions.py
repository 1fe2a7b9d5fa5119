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

from structlin import _checks, rules
from structlin._convert import unify
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
from structlin.operator import LinearOperator

__all__ = [
    "adjoint",
    "diag",
    "inv",
    "is_scalar",
    "logdet",
    "matmat",
    "project",
    "rmatmat",
    "slogdet",
    "solve",
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


def _operand(A: LinearOperator, X: Any, what: str, axis: int) -> tuple[Any, LinearOperator]:
    """Check `X` against `A` and bring both to a common dtype."""
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
    return rules.compose(*unify((A, B), "A @ B"))


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
    return rules.transpose(A)


def adjoint(A: LinearOperator) -> LinearOperator:
    """`A^H = conj(A)^T`; equal to `transpose(A)` for real operators; also spelled `A.H`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> D = sl.Dense(np.array([[1 + 2j, 0], [3, 4j]]))
        >>> sl.adjoint(D).to_dense()
        array([[1.-2.j, 3.-0.j],
               [0.-0.j, 0.-4.j]])
    """
    return rules.adjoint(A)


def inv(A: LinearOperator) -> LinearOperator:
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

    Raises:
        ValueError: `A` is not square, or a matrix to factorise has inf or nan entries.
        SingularOperatorError: `A` is singular (where detectable eagerly).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> K = sl.Kron(2.0 * np.eye(2), np.array([[1.0, 1.0], [0.0, 1.0]]))
        >>> type(sl.inv(K)).__name__  # the Kronecker product of the factors' inverses
        'Kron'
        >>> bool(np.allclose(sl.inv(K).to_dense() @ K.to_dense(), np.eye(4)))
        True
    """
    _checks.square(A, "inv")
    return rules.inv(A)


def solve(A: LinearOperator, B: Array) -> Array:
    """`A^{-1} B` for `B` of shape `(n,)` or `(n, k)`, using the structured inverse where one exists.

    Half precision (float16, bfloat16), which LAPACK lacks, is factorised in float32
    and the result returned in the input's dtype. A matrix to factorise with inf or
    nan entries is refused (ValueError) where its values can be read; inside
    `jax.jit` or `torch.compile` they cannot, and the result has NaN entries instead.
    Non-finite entries of `B` are not refused: they propagate as in any product.

    Raises:
        ValueError: `A` is not square, `B` does not match it, or a matrix to factorise
            has inf or nan entries.
        TypeError: `B` is not a floating-point array of `A`'s backend.
        SingularOperatorError: `A` is singular (where detectable eagerly).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.solve(sl.Diagonal(np.array([2.0, 4.0])), np.array([1.0, 1.0]))
        array([0.5 , 0.25])
    """
    _checks.square(A, "solve")
    B, A = _operand(A, B, "solve(A, b)", 0)
    backend = backend_of(B)
    if len(B.shape) == 1:
        return backend.reshape(rules.solve(A, backend.reshape(B, (-1, 1))), (-1,))
    if len(B.shape) != 2:
        raise ValueError(
            f"solve(A, b): b must have shape (n,) or (n, k), got {_checks.shape_str(B.shape)}"
        )
    return rules.solve(A, B)


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


def slogdet(A: LinearOperator) -> tuple[Array, Array]:
    """`(sign, log|det A|)`, like `numpy.linalg.slogdet`.

    Structured for Kron (`sum_i (n/n_i) log|det A_i|`), BlockDiag and Monarch
    with square blocks (sums over blocks), Diagonal, Permutation (the sign of the permutation), Identity,
    ScalarMul, Product of square factors, Inverse and (conjugate) transposes;
    dense LU otherwise. A singular operator gives `(0, -inf)`.

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
    return rules.slogdet(A)


def logdet(A: LinearOperator) -> Array:
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
    sign, logabsdet = slogdet(A)
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


def diag(A: LinearOperator) -> Array:
    """The diagonal `A[i, i]`, `i < min(m, n)`: structured for Kron, BlockDiag,
    Diagonal, Permutation, LowRank, Identity, Sum, ScalarMul; dense otherwise.

    A new array, never sharing memory with the arrays `A` holds (for a `Diagonal`,
    a copy of its entries).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.diag(sl.Kron(np.diag([1.0, 2.0]), np.diag([1.0, 10.0])))
        array([ 1., 10.,  2., 20.])
    """
    return _fresh(rules.diag(A), A)


def trace(A: LinearOperator) -> Array:
    """`sum_i A[i, i]` of a square operator (Kron: the product of factor traces).

    Raises:
        ValueError: `A` is not square.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> float(sl.trace(sl.Kron(np.diag([1.0, 2.0]), np.diag([1.0, 10.0]))))  # 3 * 11
        33.0
    """
    _checks.square(A, "trace")
    return rules.trace(A)


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
