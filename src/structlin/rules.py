"""The plum-dispatched rules: the extension point for new structures.

Each rule is one plum `Function`. A structure registers its methods next to its
class (for example `structlin/operators/kron.py` holds every Kronecker rule),
using the shared dispatcher:

```python
from structlin.rules import dispatch

@dispatch
def matmat(A: MyOperator, X: object):
    ...
```

Rules carry no return annotation on purpose: plum converts every result to
the annotated return type, a type check on each call.

Rules take already-checked arguments (the public functions in
[`structlin`][structlin] do the checking): `X` is a 2-D array of the operator's
backend with `X.shape[0] == A.shape[1]` and a compatible dtype.

This module holds the generic fallbacks, used when no structured rule matches.
Each one is correct for any operator and states its cost.
"""

from __future__ import annotations

import typing

from structlin._checks import dense_backend
from structlin._dispatch import dispatch
from structlin.backends import backend_of
from structlin.operator import LinearOperator

__all__ = [
    "dispatch",
    "add",
    "adjoint",
    "components",
    "compose",
    "diag",
    "inv",
    "matmat",
    "project",
    "rmatmat",
    "scale",
    "slogdet",
    "solve",
    "to",
    "to_dense",
    "trace",
    "transpose",
]


@dispatch
def matmat(A: LinearOperator, X: object):
    """`A @ X` for a 2-D `X`. Every operator class must register this rule."""
    raise TypeError(
        f"no matmat rule for {type(A).__name__}; register one with "
        "`@structlin.rules.dispatch def matmat(A: YourOperator, X: object)`"
    )


@dispatch
def rmatmat(X: object, A: LinearOperator):
    """`X @ A` for a 2-D `X`: `(A^T X^T)^T` through the structured transpose."""
    backend = backend_of(X)
    return backend.swap_last(matmat(transpose(A), backend.swap_last(X)))


@dispatch
def to_dense(A: LinearOperator):
    """Fallback: `A @ I`, one application of `A` to the identity (`O(matmat(n))`)."""
    backend, dtype, device = dense_backend(A)
    return matmat(A, backend.eye(A.shape[1], dtype, device))


@dispatch
def slogdet(A: LinearOperator):
    """Fallback: LU of the dense matrix, `O(n^3)` time and `O(n^2)` memory."""
    return dense_backend(A)[0].slogdet(to_dense(A))


@dispatch
def diag(A: LinearOperator):
    """Fallback: the diagonal of the dense matrix, `O(n^2)` memory."""
    return dense_backend(A)[0].diagonal(to_dense(A))


@dispatch
def trace(A: LinearOperator):
    """Sum of [`diag`][structlin.rules.diag], with whatever cost that has."""
    return dense_backend(A)[0].sum(diag(A))


@dispatch
def components(A: LinearOperator):
    """The learnable dense components of `A`, one [`Component`][structlin.mup.Component]
    (or `None` for a leaf that is not learnable) per leaf of `A`'s pytree, in
    `structlin.pytree.tree_flatten` order. Used by [`structlin.mup`][structlin.mup]
    and the layers of [`structlin.nn`][structlin.nn]."""
    raise TypeError(
        f"no components rule for {type(A).__name__}, so structure-aware μP cannot size its "
        "parameters; register one with "
        f"`@structlin.rules.dispatch def components(A: {type(A).__name__})`"
    )


@dispatch
def project(W: object, structure: type[LinearOperator], **spec):
    """`argmin_{A in structure} ||W - A||_F`; structures register their own method.

    `structure` is the operator class; `spec` its size parameters (e.g. `nblocks`).
    """
    # The classes with a projection, read from the registered methods when raising.
    targets = [t for types, _ in project.signatures for t in typing.get_args(types[1])]
    names = [t.__name__ for t in targets if t is not LinearOperator]
    raise TypeError(
        f"no projection onto {structure.__name__}; structlin projects onto "
        f"{', '.join(names[:-1])} and {names[-1]}. Register one with "
        f"`@structlin.rules.dispatch def project(W: object, structure: type[{structure.__name__}], ...)`"
    )


# `transpose`, `adjoint`, `inv`, `solve`, `compose`, `add`, `scale` and `to` get their
# generic methods from the expression that represents them lazily
# (`operators/transpose.py`, `inverse.py`, `product.py`, `sum.py`, `scalar_mul.py`)
# and from `operators/_convert.py`; these imports make sure those are registered.
from structlin.operators._convert import to  # noqa: E402
from structlin.operators.inverse import inv, solve  # noqa: E402
from structlin.operators.product import compose  # noqa: E402
from structlin.operators.scalar_mul import scale  # noqa: E402
from structlin.operators.sum import add  # noqa: E402
from structlin.operators.transpose import adjoint, transpose  # noqa: E402
