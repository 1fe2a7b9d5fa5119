"""structlin: structured linear operators on NumPy, PyTorch and JAX.

```python
import numpy as np
import structlin as sl

K = sl.Kron(np.random.randn(16, 16), np.random.randn(16, 16))
x = np.random.randn(256)
y = K.inv() @ x  # Kron of the factor inverses; no 256 x 256 matrix is formed
```
"""

from structlin import algorithms, backends, mup, pytree, rules
from structlin.algorithms import (
    CG,
    GMRES,
    LSQR,
    LU,
    MINRES,
    SLQ,
    Auto,
    Cholesky,
    Hutchinson,
    Lanczos,
    SolveInfo,
    cg,
    gmres,
    lsqr,
    minres,
)
from structlin.errors import (
    ConvergenceError,
    ConvergenceWarning,
    DenseFallbackWarning,
    NotPositiveDefiniteError,
    SingularOperatorError,
)
from structlin.expressions.annotations import PSD, Symmetric
from structlin.expressions.dense import Dense
from structlin.expressions.inverse import Inverse
from structlin.expressions.product import Product
from structlin.expressions.pseudo_inverse import PseudoInverse
from structlin.expressions.scalar_mul import ScalarMul
from structlin.expressions.spectral import Spectral
from structlin.expressions.sum import Sum
from structlin.expressions.transpose import Adjoint, Transpose
from structlin.functions import (
    adjoint,
    apply,
    diag,
    eigh,
    exp,
    explain,
    inv,
    is_psd,
    is_symmetric,
    log,
    logdet,
    lstsq,
    matmat,
    pinv,
    pow,
    project,
    rmatmat,
    slogdet,
    solve,
    sqrt,
    to,
    to_dense,
    trace,
    transpose,
)
from structlin.interop import from_cola, to_cola, to_scipy
from structlin.operator import LinearOperator
from structlin.operators import eigenbasis as _eigenbasis  # noqa: F401 (registers rules)
from structlin.operators.block_diag import BlockDiag
from structlin.operators.block_diagonal import BlockDiagonal
from structlin.operators.btt import BTT
from structlin.operators.circulant import (
    Circulant,
    Convolution,
    Toeplitz,
    circulant,
    convolution,
    toeplitz,
)
from structlin.operators.diagonal import Diagonal
from structlin.operators.identity import Identity
from structlin.operators.kron import Kron
from structlin.operators.low_rank import LowRank
from structlin.operators.monarch import GeneralizedMonarch, Monarch
from structlin.operators.permutation import Permutation, StridePermutation
from structlin.operators.sparse import Sparse
from structlin.operators.triangular import Triangular
from structlin.operators.tt import TT
from structlin.sharding import block_shardings
from structlin.transforms import dct, dft, dst, hadamard, idct, idst

__version__ = "0.1.0"

__all__ = [
    "Adjoint",
    "Auto",
    "BTT",
    "BlockDiag",
    "BlockDiagonal",
    "CG",
    "Cholesky",
    "Circulant",
    "ConvergenceError",
    "ConvergenceWarning",
    "Convolution",
    "Dense",
    "DenseFallbackWarning",
    "Diagonal",
    "GMRES",
    "GeneralizedMonarch",
    "Hutchinson",
    "Identity",
    "Inverse",
    "Kron",
    "LSQR",
    "LU",
    "Lanczos",
    "LinearOperator",
    "LowRank",
    "MINRES",
    "Monarch",
    "NotPositiveDefiniteError",
    "PSD",
    "Permutation",
    "Product",
    "PseudoInverse",
    "ScalarMul",
    "SLQ",
    "SingularOperatorError",
    "Sparse",
    "SolveInfo",
    "Spectral",
    "StridePermutation",
    "Sum",
    "Symmetric",
    "TT",
    "Toeplitz",
    "Transpose",
    "Triangular",
    "adjoint",
    "algorithms",
    "apply",
    "backends",
    "block_shardings",
    "cg",
    "circulant",
    "convolution",
    "dct",
    "dft",
    "diag",
    "dst",
    "eigh",
    "exp",
    "explain",
    "from_cola",
    "gmres",
    "hadamard",
    "idct",
    "idst",
    "inv",
    "is_psd",
    "is_symmetric",
    "log",
    "logdet",
    "lsqr",
    "lstsq",
    "matmat",
    "minres",
    "mup",
    "pinv",
    "pow",
    "project",
    "pytree",
    "rmatmat",
    "rules",
    "slogdet",
    "solve",
    "sqrt",
    "to",
    "to_cola",
    "to_dense",
    "to_scipy",
    "toeplitz",
    "trace",
    "transpose",
]
