"""`to_scipy`: a NumPy-backed operator as a `scipy.sparse.linalg.LinearOperator`."""

from __future__ import annotations

from typing import Any

import numpy as np

from structlin import _checks
from structlin.backends import get_backend
from structlin.operator import LinearOperator

__all__ = ["to_scipy"]


def to_scipy(op: LinearOperator) -> Any:
    """`op` as a `scipy.sparse.linalg.LinearOperator`, for SciPy's iterative solvers and eigensolvers.

    The result has `op`'s `shape` and `dtype` and computes, through `op`'s
    structured rules (each product costs what `op @ X` costs; nothing dense is formed):

    - `matvec(v)` and `matmat(V)`: `op @ v`, `op @ V`;
    - `rmatvec(v)` and `rmatmat(V)`: `op^H @ v`, `op^H @ V` (SciPy's adjoint
      products, through `op.H`, the structured conjugate transpose, built once).

    So `scipy.sparse.linalg.cg`, `gmres`, `minres`, `lsqr`, `eigsh`, `eigs` and
    `svds` run on any NumPy operator. Value-free operators (a generic
    [`Identity`][structlin.Identity]) report `float64`.

    Args:
        op: A structlin operator whose arrays are NumPy arrays.

    Raises:
        TypeError: `op` is not a structlin operator, or is a PyTorch or JAX
            operator (SciPy computes with NumPy arrays): convert it first with
            `op.to(backend="numpy")` (a copy to host memory).
        ImportError: SciPy is not installed.

    Examples:
        >>> import numpy as np, scipy.sparse.linalg as spla, structlin as sl
        >>> K = sl.Kron(np.diag([1.0, 2.0]), np.diag([1.0, 3.0]))  # SPD, eigenvalues 1, 2, 3, 6
        >>> x, info = spla.cg(sl.to_scipy(K), np.ones(4), rtol=1e-12)
        >>> info, np.round(x, 6).tolist()
        (0, [1.0, 0.333333, 0.5, 0.166667])
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"to_scipy needs a structlin operator, got {type(op).__name__}; "
            "wrap an array with structlin.Dense"
        )
    if op.backend is not None and op.backend is not get_backend("numpy"):
        raise TypeError(
            f"to_scipy needs a NumPy operator, but {type(op).__name__} of shape "
            f"{_checks.shape_str(op.shape)} is {op.backend.name}; SciPy computes with NumPy "
            "arrays, so convert it first with op.to(backend='numpy')"
        )
    try:
        import scipy.sparse.linalg as spla
    except ModuleNotFoundError as error:  # pragma: no cover - scipy is in the test extra
        raise ImportError("to_scipy needs SciPy: pip install scipy") from error

    dtype = np.dtype(op.dtype) if op.dtype is not None else np.dtype(np.float64)
    adjoint = op.H

    def apply(A: LinearOperator, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if not np.issubdtype(X.dtype, np.inexact):  # SciPy passes integer test vectors as given
            X = X.astype(dtype)
        return np.asarray(A @ X)

    return spla.LinearOperator(
        op.shape,
        matvec=lambda v: apply(op, v),
        rmatvec=lambda v: apply(adjoint, v),
        matmat=lambda V: apply(op, V),
        rmatmat=lambda V: apply(adjoint, V),
        dtype=dtype,
    )
