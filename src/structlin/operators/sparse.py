"""`Sparse`: a sparse matrix of SciPy, PyTorch or JAX, held as COO triples."""

from __future__ import annotations

from typing import Any

import numpy as np

from structlin import _checks
from structlin._convert import convert_array
from structlin._dispatch import dispatch
from structlin.backends import Array, DType, backend_of, imported_backends, is_array
from structlin.component import Component
from structlin.expressions.sum import Sum
from structlin.operator import LinearOperator
from structlin.rules import dense_slogdet, dense_solve

_FORMATS = (
    "a scipy.sparse matrix or array (any format), a PyTorch sparse tensor "
    "(torch.sparse_coo or torch.sparse_csr) or a JAX jax.experimental.sparse BCOO or BCSR"
)


class Sparse(LinearOperator):
    """A sparse `(m, n)` matrix: `nnz` entries `values[i]` at `(rows[i], cols[i])`.

    Built from a sparse matrix of the array library, `Sparse(matrix)`: a
    `scipy.sparse` matrix or array of any format (NumPy backend), a PyTorch
    `torch.sparse_coo` or `torch.sparse_csr` tensor, or a JAX
    `jax.experimental.sparse` `BCOO` or `BCSR`; or from COO triples with
    [`Sparse.from_coo`][structlin.Sparse.from_coo]. It is held as the triples
    (three 1-D arrays; entries at a repeated position add up), and each product makes
    the library's sparse matrix from them (SciPy's `coo_array`, a PyTorch COO tensor, a
    JAX `BCOO`: no copy of the values) and multiplies.

    `values` is the operator's one floating-point leaf, so gradients reach the nonzero
    entries (PyTorch autograd, `jax.grad`) and layers learn them; `rows` and `cols` are
    integer leaves. The sparsity pattern is fixed: nothing here ever densifies the matrix
    but `to_dense` and the dense fallbacks below.

    Costs: `A @ X` and `X @ A` are `O(nnz k)`; `A^T` swaps `rows` and `cols` (`O(1)`),
    `A^H` conjugates the values; `diag` and `trace` `O(nnz)`; `c A` and the sum of two
    `Sparse` matrices stay sparse (the triples scaled, or concatenated). No sparse direct
    solver runs on every backend: on NumPy, with SciPy installed, `solve`, `slogdet` and
    the applications of `inv` use SciPy's sparse LU (`splu`, SuperLU: exact, its cost set
    by the fill-in); on PyTorch and JAX they take [`Auto`][structlin.Auto]'s general path:
    the dense factorisation up to its `dense_limit`, an iterative method above it (CG for
    an operator annotated [`PSD`][structlin.PSD], GMRES otherwise), or choose one with
    `alg=sl.CG()`. [`explain`][structlin.explain] says which.

    Args:
        matrix: A 2-D sparse matrix of one of the formats above, floating point or complex.

    Raises:
        TypeError: `matrix` is a dense array or not a supported sparse format (the message
            names those that are), or has an integer or boolean dtype.
        ValueError: `matrix` is not 2-D (a batch, or a hybrid tensor with dense dimensions).

    Examples:
        >>> import numpy as np, scipy.sparse, structlin as sl
        >>> S = sl.Sparse(scipy.sparse.csr_array(np.array([[2.0, 0.0], [1.0, 4.0]])))
        >>> S @ np.ones(2)
        array([2., 5.])
        >>> S.nnz, sl.trace(S)
        (3, np.float64(6.0))
        >>> sl.solve(S, np.array([2.0, 9.0]))  # SciPy's sparse LU
        array([1., 2.])
    """

    _children = ("values", "rows", "cols")
    _static = ("_shape",)

    values: Array
    rows: Array
    cols: Array

    def __init__(self, matrix: Any):
        entries = None
        for backend in imported_backends():
            entries = backend.sparse_entries(matrix)
            if entries is not None:
                break
        if entries is None:
            dense = is_array(matrix)
            fix = (
                "for a dense array use sl.Dense, or make it sparse first "
                "(scipy.sparse.csr_array(x), x.to_sparse(), BCOO.fromdense(x))"
                if dense
                else "or build one from COO triples with sl.Sparse.from_coo(values, rows, cols, shape)"
            )
            what = f"a dense {type(matrix).__name__}" if dense else type(matrix).__name__
            raise TypeError(f"Sparse takes {_FORMATS}; got {what}; {fix}")
        values, rows, cols, shape = entries
        self._set(**_checked(values, rows, cols, shape, check_indices=False))

    @classmethod
    def from_coo(cls, values: Array, rows: Array, cols: Array, shape: tuple[int, int]) -> Sparse:
        """The `(m, n)` sparse matrix with `values[i]` at `(rows[i], cols[i])` (repeated
        positions add up), from three 1-D arrays of one backend: `values` floating point
        or complex, `rows` and `cols` integers in range (checked where values can be read).

        Raises:
            TypeError: `values` is not floating point, or `rows`/`cols` not integer arrays
                of its backend.
            ValueError: the arrays are not 1-D of one length, `shape` is not a pair of
                positive sizes, or an index is out of range.

        Examples:
            >>> import numpy as np, structlin as sl
            >>> S = sl.Sparse.from_coo(np.array([1.0, 2.0]), np.array([0, 1]), np.array([1, 1]), (2, 3))
            >>> S.to_dense()
            array([[0., 1., 0.],
                   [0., 2., 0.]])
        """
        op = object.__new__(cls)
        op._set(**_checked(values, rows, cols, shape, check_indices=True))
        return op

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def dtype(self) -> DType:
        return self.values.dtype  # not the integer indices'

    @property
    def nnz(self) -> int:
        """The number of stored entries (repeated positions counted each time)."""
        return int(self.values.shape[0])


def _checked(values: Any, rows: Any, cols: Any, shape: Any, check_indices: bool) -> dict[str, Any]:
    """The fields of a `Sparse`, checked: indices in the backend's index dtype."""
    if not is_array(values):
        raise TypeError(
            f"Sparse values must be a 1-D array, got {type(values).__name__}; "
            "convert it with numpy.asarray (or torch.as_tensor / jax.numpy.asarray)"
        )
    backend = backend_of(values)
    if not backend.is_floating(values.dtype):
        raise TypeError(
            f"Sparse values have dtype {values.dtype}; structlin needs floating-point or complex "
            "values, cast the matrix first (e.g. S.astype(numpy.float64), S.double())"
        )
    values, _ = _checks.float_array(values, "Sparse values", ndim=1)
    index = backend.index_dtype()
    out = []
    for name, x in (("rows", rows), ("cols", cols)):
        if not is_array(x) or backend_of(x) is not backend or not backend.is_integer(x.dtype):
            raise TypeError(
                f"Sparse {name} must be an integer array of the values' backend "
                f"({backend.name}), got {getattr(x, 'dtype', type(x).__name__)}"
            )
        if tuple(x.shape) != tuple(values.shape):
            raise ValueError(
                f"Sparse {name} must be 1-D of the values' length {values.shape[0]}, got shape "
                f"{_checks.shape_str(x.shape)}"
            )
        out.append(x if x.dtype == index else backend.astype(x, index))
    if isinstance(shape, str) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise ValueError(f"Sparse shape must be a pair (m, n), got {shape!r}")
    shape = (_checks.size(shape[0], "Sparse shape[0]"), _checks.size(shape[1], "Sparse shape[1]"))
    if check_indices and backend.is_concrete(out[0]):
        for name, x, size in (("rows", out[0], shape[0]), ("cols", out[1], shape[1])):
            host = backend.to_numpy(x)
            bad = host[(host < 0) | (host >= size)]
            if bad.size:
                raise ValueError(
                    f"Sparse {name} must lie in 0..{size - 1} for shape {shape}, got "
                    f"{bad[:10].tolist()}"
                )
    _checks.same_backend((values, *out), "Sparse")
    return {"values": values, "rows": out[0], "cols": out[1], "_shape": shape}


def _wrap(values: Array, rows: Array, cols: Array, shape: tuple[int, int]) -> Sparse:
    op = object.__new__(Sparse)
    op._set(values=values, rows=rows, cols=cols, _shape=shape)
    return op


@dispatch
def matmat(A: Sparse, X: object):
    return A.backend.sparse_matmul(A.values, A.rows, A.cols, A.shape[0], X)


@dispatch
def rmatmat(X: object, A: Sparse):
    # X A = (A^T X^T)^T: the transpose's product, with rows and columns swapped.
    backend = A.backend
    Y = backend.sparse_matmul(A.values, A.cols, A.rows, A.shape[1], backend.swap_last(X))
    return backend.swap_last(Y)


@dispatch
def to_dense(A: Sparse):
    backend = A.backend
    m, n = A.shape
    flat = backend.zeros((m * n,), A.dtype, A.device)
    return backend.reshape(backend.index_add(flat, A.rows * n + A.cols, A.values), (m, n))


@dispatch
def transpose(A: Sparse):
    m, n = A.shape
    return _wrap(A.values, A.cols, A.rows, (n, m))


@dispatch
def adjoint(A: Sparse):
    m, n = A.shape
    return _wrap(A.backend.conj(A.values), A.cols, A.rows, (n, m))


def _on_diagonal(A: Sparse) -> Array:
    """Whether each entry lies on the diagonal (and in range: JAX pads with out-of-range
    indices)."""
    return (A.rows == A.cols) & (A.rows < min(A.shape))


@dispatch
def diag(A: Sparse):
    backend = A.backend
    k = min(A.shape)
    # Entries off the diagonal go to a spare slot k, dropped after: no shape depends on values.
    slot = backend.where(_on_diagonal(A), A.rows, k + 0 * A.rows)
    return backend.index_add(backend.zeros((k + 1,), A.dtype, A.device), slot, A.values)[:k]


@dispatch
def trace(A: Sparse):
    backend = A.backend
    return backend.sum(backend.where(_on_diagonal(A), A.values, 0 * A.values))


@dispatch
def scale(c: object, A: Sparse):
    return _wrap(c * A.values, A.rows, A.cols, A.shape)


@dispatch
def add(A: Sparse, B: Sparse):
    """The triples of both, concatenated (`O(nnz_A + nnz_B)`): positions in both add up."""
    if A.shape != B.shape:
        return Sum(A, B)
    backend = A.backend
    return _wrap(
        backend.concatenate([A.values, B.values]),
        backend.concatenate([A.rows, B.rows]),
        backend.concatenate([A.cols, B.cols]),
        A.shape,
    )


# -- solves: SciPy's sparse LU where the backend has one, else the general paths ---------------


def _factor(A: Sparse) -> Any:
    return A.backend.sparse_factor(A.values, A.rows, A.cols, A.shape[0])


@dispatch
def _exact_path(A: Sparse, operation: object):
    # With a sparse LU (NumPy and SciPy): solve and slogdet factorise sparsely, and the lazy
    # inverse `inv` builds solves with each application.
    if operation in ("solve", "slogdet", "inv") and A.backend.has_sparse_factor():
        return "structured"
    return "dense"


@dispatch
def solve(A: Sparse, B: object):
    """SciPy's sparse LU on NumPy (`splu`: exact, `O(fill-in)`); else the dense solve."""
    factor = _factor(A)
    if factor is None:
        return dense_solve(A, B)
    return factor.solve(B)


@dispatch
def slogdet(A: Sparse):
    """From SciPy's sparse LU on NumPy (`(0, -inf)` for a singular matrix); else dense."""
    if not A.backend.has_sparse_factor():
        return dense_slogdet(A)
    from structlin.errors import SingularOperatorError

    try:
        return _factor(A).slogdet()
    except SingularOperatorError:
        zero = np.zeros((), A.dtype)
        return zero, np.abs(zero) - np.inf


@dispatch
def components(A: Sparse):
    # The nnz values, each output reading about nnz / m inputs; the indices are not learnable.
    m = A.shape[0]
    return (Component(1, m, max(1, A.nnz // m)), None, None)


@dispatch
def to(A: Sparse, dtype: object, device: object, backend: object):
    """The values converted as any leaf; the indices in the target's index dtype."""
    values = convert_array(A.values, dtype, device, backend)
    target = backend_of(values)
    index = target.index_dtype()

    def indices(x: Array) -> Array:
        if backend is not None and backend is not A.backend:
            host = A.backend.to_numpy(x).astype(np.dtype(str(index).removeprefix("torch.")))
            return target.asarray(host, dtype=index, device=target.device(values))
        return convert_array(x, None, device, None)

    return _wrap(values, indices(A.rows), indices(A.cols), A.shape)
