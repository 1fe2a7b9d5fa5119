"""Sums in one eigenbasis: `B + c I`, `A + f(A)`, `f(A) + g(A)` and `A + D`, solved exactly.

Terms that share the eigenvectors `Q` of a Hermitian operator add their eigenvalues:
`sum_k Q diag(w_k) Q^H = Q diag(sum_k w_k) Q^H`. So the sum's solve, inverse,
log-determinant and eigendecomposition cost one structured `eigh` (`O(sum n_i^3)` for a
Kron) and products with `Q`, never `O(n^3)`. The forms recognised, from types and object
identity alone (never values, so the same under `jax.jit`):

- `B + c I`: `B` symmetric with a structured eigendecomposition (a Kron of symmetric
  factors, a BlockDiag, a Diagonal, a symmetric Monarch or permutation, a `Spectral`);
  `w + c`. [`explain`][structlin.explain] calls this path `"shifted"`.
- `A + f(A)`, `f(A) + g(A)`: `f(A)` a [`Spectral`][structlin.Spectral] that
  [`sqrt`][structlin.sqrt], [`exp`][structlin.exp], [`log`][structlin.log],
  [`pow`][structlin.pow], [`apply`][structlin.apply] or [`inv`][structlin.inv] built from
  `eigh(A)` of this very `A` (they leave a note of it on their result); and
  `Spectral(Q, u) + Spectral(Q, v)` with the same `Q` object. Path `"eigenbasis"`.
- `A + D` for a [`Diagonal`][structlin.Diagonal] `D` where `A`'s eigenvectors are
  monomial (a permutation of a diagonal of unit entries: a Diagonal's, a Kron of
  Diagonals', a BlockDiag of `1 x 1` blocks', a `Spectral` with a monomial `Q`): then
  `Q^H D Q` is diagonal, `|Q|^2^T d`. Path `"eigenbasis"`.

Any multiple (`c A`), annotation (`sl.PSD(A)`) and number of such terms may appear, and at
most one term whose `eigh` is computed. Anything else (two unrelated Krons, `A + D` with a
non-monomial `Q`, a `Spectral` of another basis) has no eigenbasis in common that the
types show: its solve is the dense one, or an iterative method from
[`Auto`][structlin.Auto] for a large operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from structlin._dispatch import dispatch
from structlin.backends import backend_of
from structlin.expressions.annotations import PSD, Symmetric
from structlin.expressions.inverse import Inverse
from structlin.expressions.scalar_mul import ScalarMul
from structlin.expressions.spectral import (
    Spectral,
    abs_squared,
    dense_eigh,
    monomial,
    monomial_eigenvectors,
    structured_eigh,
)
from structlin.expressions.sum import Sum
from structlin.operator import LinearOperator
from structlin.operators.diagonal import Diagonal
from structlin.operators.identity import Identity
from structlin.rules import dense_slogdet, dense_solve, is_psd, is_symmetric, matmat, transpose


def _identity_multiple(op: LinearOperator) -> Any:
    """`c` if `op` is `c I` (an `Identity`, a multiple of one, or an annotated one), else `None`."""
    if isinstance(op, Identity):
        return 1
    if isinstance(op, ScalarMul):
        inner = _identity_multiple(op.op)
        return None if inner is None else op.scalar * inner
    if isinstance(op, Symmetric):
        return _identity_multiple(op.op)
    return None


def _peel(op: LinearOperator) -> list[tuple[Any, LinearOperator]]:
    """`op` and what it multiplies or annotates, outermost first, each with the scalar that
    multiplies it in `op`: `2 * PSD(K)` gives `[(1, 2 PSD(K)), (2, PSD(K)), (2, K)]`."""
    chain, scale = [(1, op)], 1
    while isinstance(op, (ScalarMul, Symmetric)):
        if isinstance(op, ScalarMul):
            scale = scale * op.scalar
        op = op.op
        chain.append((scale, op))
    return chain


@dataclass(frozen=True)
class _Terms:
    """A sum read as terms in one eigenbasis: each entry is `(scale, operator)`."""

    base: tuple[Any, LinearOperator] | None  # the term whose eigh gives the basis
    spectral: tuple[tuple[Any, Spectral], ...]  # Spectral terms in that basis
    diagonals: tuple[tuple[Any, Diagonal], ...]
    shift: Any  # the sum of the c I terms, or None


def _eigh_of(S: Spectral) -> tuple[LinearOperator, Any] | None:
    return S.__dict__.get("_eigh_of")


def _basis_key(S: Spectral) -> LinearOperator:
    """What identifies `S`'s eigenbasis: the operator `eigh` took apart for it, else its `Q`."""
    noted = _eigh_of(S)
    return S.vectors if noted is None else noted[0]


def _terms(A: Sum) -> _Terms | None:
    """`A` as terms in one eigenbasis, or `None`: types and object identity only."""
    structured, spectral, diagonals, shift = [], [], [], None
    for op in A.ops:
        c = _identity_multiple(op)
        if c is not None:
            shift = c if shift is None else shift + c
            continue
        if not is_symmetric(op):
            return None
        chain = _peel(op)
        scale, inner = chain[-1]
        if isinstance(inner, Diagonal):
            diagonals.append((scale, inner))
        elif isinstance(inner, Spectral):
            spectral.append((scale, inner))
        elif structured_eigh(inner):
            structured.append(chain)
        else:
            return None
    keys = {id(_basis_key(S)) for _, S in spectral}
    if len(structured) > 1 or len(keys) > 1:
        return None
    base = None
    if structured:
        (chain,) = structured
        if spectral:
            # The base must be what the Spectral terms decomposed, at some level of its
            # multiples and annotations: its eigenvalues are then the noted ones, scaled.
            key = _basis_key(spectral[0][1])
            found = [(s, op) for s, op in chain if op is key]
            if not found or _eigh_of(spectral[0][1]) is None:
                return None
            base = found[0]
        else:
            base = chain[-1]
    if diagonals:
        if spectral:
            monomial_basis = monomial(spectral[0][1].vectors)
        elif base is not None:
            monomial_basis = monomial_eigenvectors(base[1])
        else:
            monomial_basis = True  # only diagonals and shifts: the identity
        if not monomial_basis:
            return None
    if base is None and not spectral and not diagonals:
        return None
    if base is not None and not spectral and not diagonals and shift is None:
        return None  # a sum of one term: nothing to share
    return _Terms(base, tuple(spectral), tuple(diagonals), shift)


def _path(terms: _Terms | None) -> str:
    if terms is None:
        return "dense"
    return "shifted" if not (terms.spectral or terms.diagonals) else "eigenbasis"


def _spectral(A: Sum) -> Spectral | None:
    """`A` as one `Spectral`, `Q diag(sum of the terms' eigenvalues) Q^H`, or `None`."""
    terms = _terms(A)
    if terms is None:
        return None
    values = None

    def add(v: Any) -> None:
        nonlocal values
        values = v if values is None else values + v

    if terms.spectral:
        Q = terms.spectral[0][1].vectors
        for scale, S in terms.spectral:
            add(scale * S.values)
        if terms.base is not None:
            scale, _ = terms.base
            add(scale * _eigh_of(terms.spectral[0][1])[1])
    elif terms.base is not None:
        scale, B = terms.base
        w, Q = eigh(B)
        add(scale * w)
    else:
        Q = Identity.like(terms.diagonals[0][1])
    if terms.diagonals:
        # Q^H D Q is diagonal for a monomial Q: entry j is sum_i |Q_ij|^2 d_i.
        weights = transpose(abs_squared(Q))
        for scale, D in terms.diagonals:
            backend = backend_of(D.diag)
            d = backend.reshape(D.diag, (-1, 1))
            add(scale * backend.reshape(matmat(weights, d), (-1,)))
    if terms.shift is not None:
        values = values + terms.shift
    return Spectral(Q, values)


@dispatch
def solve(A: Sum, B: object):
    """`Q diag(1 / w) Q^H X` where `A`'s terms share the eigenbasis `Q` (`B + c I`,
    `A + f(A)`, `A + D` for a monomial `Q`, see `structlin.operators.eigenbasis`):
    `O(eigh + k n sum n_i)` for a Kron; else the dense solve."""
    S = _spectral(A)
    return dense_solve(A, B) if S is None else solve(S, B)


@dispatch
def inv(A: Sum):
    """`Q diag(1 / w) Q^H` (a [`Spectral`][structlin.Spectral]) for terms in one eigenbasis,
    else a lazy [`Inverse`][structlin.Inverse]."""
    S = _spectral(A)
    if S is None:
        return Inverse(A)
    out = inv(S)
    return PSD(out) if is_psd(A) else out


@dispatch
def slogdet(A: Sum):
    """`sum log|w_i|` for terms in one eigenbasis, else from the dense matrix."""
    S = _spectral(A)
    return dense_slogdet(A) if S is None else slogdet(S)


@dispatch
def eigh(A: Sum):
    S = _spectral(A)
    return dense_eigh(A) if S is None else (S.values, S.vectors)


@dispatch
def structured_eigh(A: Sum):
    return _terms(A) is not None


@dispatch
def _exact_path(A: Sum, operation: object):
    if operation == "pinv":
        return "dense"  # no structured pseudo-inverse of a sum
    if operation in ("solve", "inv", "slogdet", "eigh"):
        return _path(_terms(A))
    return "structured"
