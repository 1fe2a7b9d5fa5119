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

## The operator protocol

What an operator class (a subclass of [`LinearOperator`][structlin.LinearOperator]
with `shape` and `_children`/`_static`) registers, and what each missing rule costs:

| rule | status | without it |
|---|---|---|
| `matmat(A, X)` | required | every use raises `TypeError` naming the rule |
| `transpose(A)` | required, or `rmatmat` | `A^T` is a lazy `Transpose`: `X @ A`, `A.T @ x` and the `structlin.nn` layers (`X @ A^T`) build the dense matrix on every call (`O(mn)` memory); warns once per class with a [`DenseFallbackWarning`][structlin.DenseFallbackWarning] |
| `rmatmat(X, A)` | optional with `transpose` | `(A^T X^T)^T` through `transpose`: free when that is structured |
| `adjoint(A)` | required for complex operators | `transpose(A)` for real `A` (free); a lazy, dense `Adjoint` for complex `A`, which warns |
| `to_dense(A)` | optional | `A @ I`: one `matmat` with `n` columns |
| `inv(A)`, `solve(A, B)` | optional | a lazy `Inverse`; LU of the dense matrix, `O(n^3)` time, `O(n^2)` memory |
| `slogdet(A)` | optional | LU of the dense matrix, `O(n^3)` |
| `diag(A)`, `trace(A)` | optional | the dense matrix's diagonal, `O(n^2)` memory; the sum of `diag` |
| `compose`, `add`, `scale` | optional | lazy `Product`, `Sum`, `ScalarMul` (exact, no dense matrix) |
| `to(A, ...)` | optional | rebuilds `A` from its converted leaves (right for most classes) |
| `project(W, cls, **spec)` | optional | `TypeError`: no projection onto the class |
| `components(A)` | for `structlin.nn` and `structlin.mup` | `structlin.nn.Linear.from_operator` and μP raise `TypeError` naming the rule |

The protocol cannot be checked when a class is defined, since its rules are
registered below it; it is checked on use: the first time a missing rule makes a
call build a dense matrix, a `DenseFallbackWarning` names the rule to register, once
per class. [`structlin.testing`][structlin.testing] checks every rule of an operator
against its dense matrix.
"""

from __future__ import annotations

import typing

import numpy as np

from structlin._checks import dense_backend
from structlin._dispatch import Rule, dense_method, dispatch, is_dense_method
from structlin.backends import backend_of
from structlin.errors import NotPositiveDefiniteError
from structlin.operator import LinearOperator

__all__ = [
    "dispatch",
    "add",
    "adjoint",
    "components",
    "compose",
    "diag",
    "eigh",
    "matrix_function",
    "inv",
    "pinv",
    "is_psd",
    "is_symmetric",
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
@dense_method
def slogdet(A: LinearOperator):
    """Fallback: LU of the dense matrix, `O(n^3)` time and `O(n^2)` memory (Cholesky where
    [`is_psd`][structlin.rules.is_psd])."""
    return dense_slogdet(A)


def dense_solve(A: LinearOperator, B: object) -> object:
    """`A^{-1} B` through the dense matrix: Cholesky where `is_psd(A)` (LU if it then
    turns out not to be positive definite), LU otherwise; `O(n^3)` time, `O(n^2)` memory."""
    backend = dense_backend(A)[0]
    dense = to_dense(A)
    if is_psd(A):
        try:
            return backend.cholesky_solve(backend.cholesky(dense), B)
        except NotPositiveDefiniteError:
            pass  # singular or indefinite after all: LU says which
    return backend.solve(dense, B)


def dense_slogdet(A: LinearOperator) -> tuple[object, object]:
    """`slogdet` of the dense matrix: `2 sum log diag L` from Cholesky where `is_psd(A)`
    (LU if it then turns out not to be positive definite), LU otherwise; `O(n^3)`."""
    backend = dense_backend(A)[0]
    dense = to_dense(A)
    if is_psd(A):
        try:
            L = backend.cholesky(dense)
        except NotPositiveDefiniteError:
            pass
        else:
            logabsdet = 2 * backend.sum(backend.log(backend.real(backend.diagonal(L))))
            return backend.zeros((), logabsdet.dtype, dense_backend(A)[2]) + 1, logabsdet
    return backend.slogdet(dense)


def machine_epsilon(dtype: object) -> float:
    """The spacing of floating-point numbers of `dtype` (of any backend) at 1: its real part's."""
    name = str(dtype).removeprefix("torch.")
    if name == "bfloat16":  # unknown to NumPy
        return 2.0**-7
    if name == "complex32":
        name = "float16"
    return float(np.finfo(np.dtype(name)).eps)


def pinv_cutoff(dtype: object, m: int, n: int) -> float:
    """The relative cutoff of the pseudo-inverse of an `m x n` matrix: singular values at
    most `max(m, n) eps` times the largest count as zero, as `numpy.linalg.lstsq` with
    `rcond=None` and `torch.linalg.pinv` take them."""
    return max(m, n, 1) * machine_epsilon(dtype)


def pinv_array(a: object) -> object:
    """The Moore-Penrose pseudo-inverse of a (batch of) matrices `(..., m, n)` by the thin
    SVD `a = U diag(s) V^H`: `V diag(s^+) U^H`, where `s^+` inverts the singular values
    above [`pinv_cutoff`][structlin.rules.pinv_cutoff] times the largest and leaves the
    others zero; `O(m n min(m, n))` per matrix, differentiable where the rank is constant."""
    backend = backend_of(a)
    U, S, Vh = backend.svd(a)
    m, n = a.shape[-2:]
    if S.shape[-1] == 0:
        return backend.swap_last(a)
    kept = pinv_cutoff(S.dtype, m, n) * S[..., :1] < S  # S descends: S[..., :1] is the largest
    # `where` twice: the discarded entries' 1/s must not be inf, or their gradient is NaN.
    inverse = backend.where(kept, 1 / backend.where(kept, S, 1 + 0 * S), 0 * S)
    return backend.matmul(
        backend.conj(backend.swap_last(Vh)) * inverse[..., None, :],
        backend.conj(backend.swap_last(U)),
    )


def exact_path(A: LinearOperator, operation: str) -> str:
    """How `operation` (`"solve"`, `"inv"`, `"slogdet"`, `"eigh"`, `"pinv"`) runs on `A` by its
    rules: `"dense"` where the rule that matches works on the dense matrix (the generic
    fallbacks, `Dense`), `"shifted"` for `B + c I` solved through `B`'s structured
    eigendecomposition, `"structured"` otherwise. Reads types only, never values."""
    return _exact_path(A, operation)


@dispatch
def _exact_path(A: LinearOperator, operation: object):
    rule = {"solve": solve, "inv": inv, "slogdet": slogdet, "eigh": eigh, "pinv": pinv}[operation]
    types = (type(A), object) if operation == "solve" else (type(A),)
    return "dense" if is_dense_method(rule.resolve(*types)) else "structured"


@dispatch
@dense_method
def diag(A: LinearOperator):
    """Fallback: the diagonal of the dense matrix, `O(n^2)` memory."""
    return dense_backend(A)[0].diagonal(to_dense(A))


@dispatch
def trace(A: LinearOperator):
    """Sum of [`diag`][structlin.rules.diag], with whatever cost that has."""
    return dense_backend(A)[0].sum(diag(A))


class _PropertyRule(Rule):
    """`is_symmetric` and `is_psd`, which first read the mark `A.H @ A` and `A @ A.H` leave
    on their result (`_gram`, see `structlin.functions.compose`), whatever its structure."""

    def __call__(self, A: LinearOperator) -> bool:
        if A.__dict__.get("_gram", False):
            return True
        return super().__call__(A)


dispatch.rule_classes["is_symmetric"] = dispatch.rule_classes["is_psd"] = _PropertyRule


@dispatch
def is_symmetric(A: LinearOperator):
    """Whether `A` is known to be symmetric (Hermitian if complex) from its structure alone.

    Never reads values (so the answer is the same under `jax.jit`): a structure says so
    (`Identity`, a real `Diagonal`), or an annotation ([`Symmetric`][structlin.Symmetric],
    [`PSD`][structlin.PSD]), or a rule that propagates it (a `Kron` of symmetric factors,
    a `Sum` of symmetric terms, a real multiple, a transpose or inverse). The fallback: `False`.
    """
    return False


@dispatch
def is_psd(A: LinearOperator):
    """Whether `A` is known to be Hermitian positive semi-definite from its structure alone.

    Never reads values: a [`PSD`][structlin.PSD] annotation, `Identity`, and the rules
    that propagate it (a `Kron` of PSD factors, a `Sum` of PSD terms, a positive Python
    number times a PSD operator, the inverse of a PSD operator, `A^H A` and `A A^H` as
    `A.H @ A` builds them). The fallback: `False`.
    """
    return False


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


# Rules whose generic fallback is the lazy expression that represents them: their methods
# live with those expressions (`structlin/expressions/`) and `structlin/_convert.py`,
# which sit above this module, so they are declared here and filled in there.


@dispatch.declare
def transpose(A):
    """`A^T`. Structures register a structured transpose; the fallback is a lazy
    [`Transpose`][structlin.Transpose]."""


@dispatch.declare
def adjoint(A):
    """`A^H`. Structures register a structured adjoint; the fallback is `transpose(A)`
    for real `A` and a lazy [`Adjoint`][structlin.Adjoint] otherwise."""


@dispatch.declare
def inv(A):
    """`A^{-1}`. Structures register a structured inverse; the fallback is a lazy
    [`Inverse`][structlin.Inverse]."""


@dispatch.declare
def pinv(A):
    """The Moore-Penrose pseudo-inverse `A^+` of an `m x n` operator, an `n x m` operator.
    Structures register a structured one (Diagonal: the reciprocals of the nonzero
    entries; Kron: the Kron of the factors' pseudo-inverses); the fallback is a lazy
    [`PseudoInverse`][structlin.PseudoInverse] that solves the least-squares problem
    with the dense SVD."""


@dispatch.declare
def solve(A, B):
    """`A^{-1} B` for a 2-D `B`. Structures register a structured solve; the fallback
    is an LU solve with the dense matrix."""


@dispatch.declare
def compose(A, B):
    """`A B`. Structures register products that stay structured; the fallback is a
    lazy [`Product`][structlin.Product]."""


@dispatch.declare
def add(A, B):
    """`A + B`. Structures register sums that stay structured; the fallback is a lazy
    [`Sum`][structlin.Sum]."""


@dispatch.declare
def scale(c, A):
    """`c A` for a scalar `c`. Structures register a structured scaling; the fallback
    is a lazy [`ScalarMul`][structlin.ScalarMul]."""


@dispatch.declare
def eigh(A):
    """`(w, Q)` with `A = Q diag(w) Q^H` for a Hermitian `A`: `w` an array of `n`
    eigenvalues, `Q` a unitary operator. Structures register a structured one (Kron: Kron
    of the factors' eigenvectors); the fallback (in `structlin/expressions/spectral.py`) is
    the dense `eigh`, `O(n^3)`."""


@dispatch.declare
def matrix_function(A, f):
    """`f(A)` for a Hermitian `A` and a `ScalarFunction` (`structlin.expressions.spectral`)
    `f` applied to its eigenvalues. Structures register structured ones (`Diagonal`:
    `f` of the entries; `Kron` of PSD factors and a power: the Kron of the factors'
    powers); the fallback is `Q diag(f(w)) Q^H` from [`eigh`][structlin.rules.eigh]."""


@dispatch.declare
def to(A, dtype, device, backend):
    """`A` with its arrays converted; the fallback rebuilds `A` from its converted leaves."""
