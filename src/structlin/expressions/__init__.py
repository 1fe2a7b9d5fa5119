"""The lazy expression nodes and the dense leaf: the operators every structure can form.

`A + B`, `A @ B`, `c * A`, `A.T`, `A.H` and `A.inv()` build these nodes where no
structured rule applies, and `sl.Dense` wraps an array as an operator. Each
module holds its node and its rules, including the generic fallback of the rule
it represents (`transpose` -> [`Transpose`][structlin.Transpose], `compose` ->
[`Product`][structlin.Product], ...). Importing this package registers them all;
`structlin.functions` does so.
"""

from structlin.expressions.annotations import PSD, Symmetric
from structlin.expressions.dense import Dense, as_operator
from structlin.expressions.inverse import Inverse
from structlin.expressions.product import Product
from structlin.expressions.pseudo_inverse import PseudoInverse
from structlin.expressions.scalar_mul import ScalarMul, is_scalar
from structlin.expressions.spectral import Spectral
from structlin.expressions.sum import Sum
from structlin.expressions.transpose import Adjoint, Transpose

__all__ = [
    "Adjoint",
    "Dense",
    "Inverse",
    "PSD",
    "Product",
    "PseudoInverse",
    "ScalarMul",
    "Spectral",
    "Sum",
    "Symmetric",
    "Transpose",
    "as_operator",
    "is_scalar",
]
