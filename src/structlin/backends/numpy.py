"""NumPy backend."""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any

import numpy as np

from structlin.backends.base import Array, Backend, Device, DType
from structlin.errors import NotPositiveDefiniteError, SingularOperatorError


class NumpyBackend(Backend):
    name = "numpy"
    cola_functions = "np_fns"

    def is_array(self, x: object) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def admit_type(self, x: Array) -> bool:
        # Subclasses (`numpy.matrix`, memory maps) are NumPy's, but their types are not
        # remembered: the public entry points view them as plain arrays first.
        if isinstance(x, np.ndarray) and type(x) is not np.ndarray:
            if isinstance(x, np.ma.MaskedArray):
                raise TypeError(
                    "numpy masked arrays are not supported (a mask has no linear-algebra "
                    "meaning); pass x.filled(value) or x.data"
                )
            return False
        return True

    def plain_array(self, x: Array, what: str) -> Array:
        # A `numpy.matrix` would turn every product into a 2-D matrix, and other
        # subclasses' extra meaning (units, memory maps) is not linear algebra. Masked
        # arrays are refused: dropping the mask silently would compute with the hidden
        # entries.
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                f"{what}: got a numpy masked array; structlin does not support masks (a mask "
                "has no linear-algebra meaning): pass x.filled(value) to fill the masked "
                "entries, or x.data to use the stored values as they are"
            )
        if isinstance(x, np.ndarray) and type(x) is not np.ndarray:
            return np.asarray(x)
        return x

    def device(self, x: Array) -> Device:
        return None

    def is_floating(self, dtype: DType) -> bool:
        return np.dtype(dtype).kind in "fc"

    def is_complex(self, dtype: DType) -> bool:
        return np.dtype(dtype).kind == "c"

    def is_integer(self, dtype: DType) -> bool:
        return np.issubdtype(dtype, np.integer)

    def result_type(self, *dtypes: DType) -> DType:
        return np.result_type(*dtypes)

    def default_float(self) -> DType:
        return np.dtype(np.float64)

    def index_dtype(self) -> DType:
        return np.dtype(np.int64)

    def asarray(self, x: Any, dtype: DType = None, device: Device = None) -> Array:
        return np.asarray(x, dtype=dtype)

    def astype(self, x: Array, dtype: DType) -> Array:
        return x.astype(dtype, copy=False)

    def copy(self, x: Array) -> Array:
        return np.array(x, copy=True)

    def may_share_memory(self, a: Array, b: Array) -> bool:
        return np.may_share_memory(a, b)

    def canonical_device(self, device: Device) -> Device:
        if device is None or str(device) == "cpu":
            return None
        raise ValueError(f"NumPy arrays live on the CPU; cannot place them on device {device!r}")

    def to_device(self, x: Array, device: Device) -> Array:
        if device not in (None, "cpu"):
            raise ValueError(f"NumPy arrays live on the CPU; cannot move to device {device!r}")
        return x

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def import_array(self, host: Any, dtype: DType | str) -> Array:
        try:
            canonical = self.canonical_dtype(dtype)
        except TypeError:
            canonical = None
        if canonical is None or canonical.isbuiltin != 1:
            name = str(dtype).removeprefix("torch.")
            raise TypeError(
                f"NumPy has no {name} dtype; convert to a dtype it has as well, e.g. "
                "op.to(dtype=numpy.float32, backend='numpy')"
            )
        return np.asarray(host, dtype=canonical)

    def eye(self, n: int, dtype: DType, device: Device = None) -> Array:
        return np.eye(n, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: DType, device: Device = None) -> Array:
        return np.zeros(shape, dtype=dtype)

    def arange(self, n: int, device: Device = None) -> Array:
        return np.arange(n, dtype=np.int64)

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        return x.reshape(shape)

    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array:
        return np.transpose(x, axes)

    def swap_last(self, x: Array) -> Array:
        return np.swapaxes(x, -1, -2)

    def take(self, x: Array, indices: Array, axis: int) -> Array:
        return np.take(x, indices, axis=axis)

    def concatenate(self, xs: list[Array], axis: int = 0) -> Array:
        return np.concatenate(xs, axis=axis)

    def stack(self, xs: list[Array], axis: int = 0) -> Array:
        return np.stack(xs, axis=axis)

    def conj(self, x: Array) -> Array:
        # Real arrays as they are (as PyTorch's does), so that `A.H` of a real operator
        # holds views of its arrays like `A.T` rather than copies.
        return np.conj(x) if np.iscomplexobj(x) else x

    def real(self, x: Array) -> Array:
        return np.real(x)

    def abs(self, x: Array) -> Array:
        return np.abs(x)

    def log(self, x: Array) -> Array:
        with np.errstate(divide="ignore"):  # log(0) = -inf is the answer (a singular slogdet)
            return np.log(x)

    def sum(self, x: Array, axis: int | None = None) -> Array:
        return np.sum(x, axis=axis)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def exp(self, x: Array) -> Array:
        return np.exp(x)

    def real(self, x: Array) -> Array:
        return np.real(x) if np.iscomplexobj(x) else x

    def where(self, condition: Array, x: Array, y: Array) -> Array:
        return np.where(condition, x, y)

    def any(self, x: Array) -> Array:
        return np.any(x)

    def prod(self, x: Array, axis: int | None = None) -> Array:
        return np.prod(x, axis=axis)

    def minimum(self, x: Array, y: Array) -> Array:
        return np.minimum(x, y)

    def all(self, x: Array) -> Array:
        return np.all(x)

    def isfinite(self, x: Array) -> Array:
        return np.isfinite(x)

    def sort(self, x: Array) -> Array:
        return np.sort(x)

    def argsort(self, x: Array) -> Array:
        return np.argsort(x)

    # The library's own function, with no Python frame around it: operators' rules call it
    # on every product, where the frame's cost shows (64 x 64).
    matmul = staticmethod(np.matmul)
    block_matmul = staticmethod(np.matmul)

    def einsum(self, subscripts: str, *operands: Array) -> Array:
        return np.einsum(subscripts, *operands, optimize=True)

    def diagonal(self, x: Array) -> Array:
        # A copy (`O(n)`): NumPy's is a read-only view, which would keep a whole matrix
        # alive for its diagonal and give `diag` results that cannot be written into.
        return np.diagonal(x, axis1=-2, axis2=-1).copy()

    def kron(self, a: Array, b: Array) -> Array:
        return np.kron(a, b)

    def _solve(self, a: Array, b: Array) -> Array:
        try:
            return np.linalg.solve(a, b)
        except np.linalg.LinAlgError as e:
            raise SingularOperatorError(f"singular matrix of shape {a.shape}: {e}") from None

    def _inv(self, a: Array) -> Array:
        try:
            return np.linalg.inv(a)
        except np.linalg.LinAlgError as e:
            raise SingularOperatorError(f"singular matrix of shape {a.shape}: {e}") from None

    def _slogdet(self, a: Array) -> tuple[Array, Array]:
        sign, logabsdet = np.linalg.slogdet(a)
        return sign, logabsdet

    def _svd(self, a: Array) -> tuple[Array, Array, Array]:
        u, s, vh = np.linalg.svd(a, full_matrices=False)
        return u, s, vh

    def _eigh(self, a: Array) -> tuple[Array, Array]:
        w, v = np.linalg.eigh(a)
        return w, v

    def _cholesky(self, a: Array) -> Array:
        try:
            return np.linalg.cholesky(a)
        except np.linalg.LinAlgError as e:
            raise NotPositiveDefiniteError(
                f"Cholesky factorisation failed for a matrix of shape {a.shape}: {e}"
            ) from None

    def _cholesky_solve(self, L: Array, b: Array) -> Array:
        try:  # two triangular solves, O(n^2 k), where SciPy is installed
            from scipy.linalg import solve_triangular
        except ImportError:  # two general solves, O(n^3)
            return np.linalg.solve(np.conj(np.swapaxes(L, -1, -2)), np.linalg.solve(L, b))
        y = solve_triangular(L, b, lower=True)
        return solve_triangular(L, y, lower=True, trans="C")

    def triangle(self, x: Array, lower: bool) -> Array:
        return np.tril(x) if lower else np.triu(x)

    def _solve_triangular(self, a: Array, b: Array, lower: bool) -> Array:
        if not _has_scipy() or a.ndim != 2:
            return np.linalg.solve(self.triangle(a, lower), b)  # O(n^3), without SciPy
        from scipy.linalg import solve_triangular

        # check_finite=False: `solve_triangular` has refused non-finite `a` already, and a
        # zero pivot gives inf (the callers check the diagonal first).
        with np.errstate(divide="ignore", invalid="ignore"):
            return solve_triangular(a, b, lower=lower, check_finite=False)

    def index_add(self, x: Array, index: Array, values: Array) -> Array:
        out = np.array(x, copy=True)
        np.add.at(out, index, values)
        return out

    def sparse_matmul(self, values: Array, rows: Array, cols: Array, m: int, X: Array) -> Array:
        if not _has_scipy():
            return super().sparse_matmul(values, rows, cols, m, X)
        import scipy.sparse

        S = scipy.sparse.coo_array((values, (rows, cols)), shape=(m, X.shape[0]))
        return np.asarray(S @ X)

    def sparse_entries(self, x: Any) -> tuple[Array, Array, Array, tuple[int, int]] | None:
        sparse = sys.modules.get("scipy.sparse")  # a SciPy matrix exists only once it is imported
        if sparse is None or not sparse.issparse(x):
            return None
        if len(x.shape) != 2:
            raise ValueError(
                f"Sparse needs a 2-D sparse matrix, got a {type(x).__name__} of shape {x.shape}"
            )
        coo = x.tocoo()  # COO as it is; CSR, CSC, BSR, DOK, LIL and DIA converted
        rows, cols = coo.coords if hasattr(coo, "coords") else (coo.row, coo.col)
        m, n = x.shape
        return coo.data, rows.astype(np.int64), cols.astype(np.int64), (int(m), int(n))

    def has_sparse_factor(self) -> bool:
        return _has_scipy()

    def sparse_factor(self, values: Array, rows: Array, cols: Array, n: int) -> Any:
        if not _has_scipy():
            return None
        return _SparseLU(values, rows, cols, n)


@functools.lru_cache(maxsize=1)
def _has_scipy() -> bool:
    return importlib.util.find_spec("scipy") is not None


def _parity(perm: np.ndarray) -> int:
    """`+1` or `-1`, the sign of the permutation `perm` (by its cycles, `O(n)`)."""
    seen = np.zeros(perm.shape[0], bool)
    transpositions = 0
    for start in range(perm.shape[0]):
        length = 0
        i = start
        while not seen[i]:
            seen[i] = True
            i = perm[i]
            length += 1
        transpositions += max(length - 1, 0)
    return -1 if transpositions % 2 else 1


class _SparseLU:
    """SciPy's SuperLU factorisation `P_r A P_c = L U` of a sparse matrix (`splu`)."""

    def __init__(self, values: Array, rows: Array, cols: Array, n: int):
        import scipy.sparse
        import scipy.sparse.linalg

        A = scipy.sparse.csc_array((values, (rows, cols)), shape=(n, n))
        try:
            self.lu = scipy.sparse.linalg.splu(A)
        except RuntimeError as e:  # "Factor is exactly singular"
            raise SingularOperatorError(f"singular sparse matrix of shape {(n, n)}: {e}") from None
        self.dtype = A.dtype

    def solve(self, B: Array) -> Array:
        dtype = np.result_type(self.dtype, B.dtype)
        if dtype != self.dtype:  # a real factorisation applied to complex B: by parts
            return self.lu.solve(np.ascontiguousarray(B.real)) + 1j * self.lu.solve(
                np.ascontiguousarray(B.imag)
            )
        return self.lu.solve(np.ascontiguousarray(B, dtype=dtype))

    def slogdet(self) -> tuple[Array, Array]:
        # det A = det(P_r) det(P_c) prod diag(U): L has a unit diagonal.
        u = self.lu.U.diagonal()
        mag = np.abs(u)
        sign = _parity(self.lu.perm_r) * _parity(self.lu.perm_c) * np.prod(u / mag)
        return np.asarray(sign, self.dtype), np.sum(np.log(mag))
