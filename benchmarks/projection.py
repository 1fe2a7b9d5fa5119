"""Projection of a dense matrix onto Monarch, BTT and Kron, against a plain NumPy closed form.

`sl.project(W, structure, ...)` of a `d x d` float64 `W` with N(0, 1) entries
(NumPy arrays, on the CPU whatever the device) against a straightforward NumPy
implementation of the same closed form written in this file: reshape and
transpose `W` into its blocks, `np.linalg.svd(..., full_matrices=False)`, keep
the leading triplets, assemble the factors. The structures: Monarch with
`nblocks` 4 and `sqrt(d)` (one batched SVD of `nblocks^2` square blocks of size
`d / nblocks`, keeping rank `d / nblocks^2` of each), the two-core BTT of rank 1
with `ms = ns = (sqrt(d), sqrt(d))` (`d` blocks of size `sqrt(d)`, rank 1 each),
and Kron, the nearest Kronecker product of two `sqrt(d) x sqrt(d)` factors
(Van Loan-Pitsianis: the leading singular triplet of the rearranged `W`, a
`d x d` matrix; NumPy has no partial SVD, so the plain closed form is its whole
SVD: 40 to 100 s a call at `d = 4096` on a shared 2-core machine, most of the
run). Both answers are checked to agree (dense matrices within `1e-8 ||W||_F`)
before timing; `rel_error` is `||W - P||_F / ||W||_F`. The same LAPACK SVD
takes nearly all the time of both contenders, so the ratio shows what structlin
adds around it. Cases whose calls take a second or more are timed over 3
rounds, and from ten seconds the checked call is the one sample: on a busy machine the multi-threaded SVD's
time varies severalfold between calls, so those ratios are rough.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import harness
import numpy as np

import structlin as sl

NAME = "projection"
DESCRIPTION = __doc__
PLOT = ("d", ["structure"])

Factors = tuple[np.ndarray, np.ndarray]


def monarch_numpy(W: np.ndarray, nb: int) -> Factors:
    """Square Monarch with `nb` blocks of size `b = d / nb` (`nb^2` divides `d`): `(blkdiag1, blkdiag2)`.

    Block `(kk, ll)` of `W` (rows `ss nb + ll`, columns `kk b + pp`) gets its
    rank-`c` truncated SVD, `c = b / nb`; triplet `a` goes to row `a nb + ll` of
    `blkdiag1[kk]` and column `kk c + a` of `blkdiag2[ll]`.
    """
    b = W.shape[0] // nb
    c = b // nb
    U, S, Vh = np.linalg.svd(W.reshape(b, nb, nb, b).transpose(2, 1, 0, 3), full_matrices=False)
    root = np.sqrt(S[..., :c])
    V = root[..., :, None] * Vh[..., :c, :]  # [kk, ll, a, pp]
    Us = U[..., :c] * root[..., None, :]  # [kk, ll, ss, a]
    blkdiag1 = V.transpose(0, 2, 1, 3).reshape(nb, b, b)
    blkdiag2 = Us.transpose(1, 2, 0, 3).reshape(nb, b, b)
    return blkdiag1, blkdiag2


def monarch_dense(factors: Factors) -> np.ndarray:
    """`M[(ss, ll), (kk, pp)] = sum_a blkdiag2[ll, ss, kk c + a] blkdiag1[kk, a nb + ll, pp]`."""
    blkdiag1, blkdiag2 = factors
    nb, b, _ = blkdiag1.shape
    c = b // nb
    left = blkdiag2.reshape(nb, b, nb, c).transpose(0, 2, 1, 3)  # [ll, kk, ss, a]
    right = blkdiag1.reshape(nb, c, nb, b).transpose(2, 0, 1, 3)  # [ll, kk, a, pp]
    return (left @ right).transpose(2, 0, 1, 3).reshape(nb * b, nb * b)


def btt_numpy(W: np.ndarray, m: int) -> Factors:
    """Two-core rank-1 BTT, `ms = ns = (m, m)`: cores `L (1, m, m, m)` and `R (m, 1, m, m)`.

    Block `(j1, i2)`, `B[i1, j2] = W[(i1, i2), (j1, j2)]`, gets its rank-1
    truncated SVD `u s v^T`: `L[0, i2, :, j1] = sqrt(s) u`, `R[j1, 0, i2, :] = sqrt(s) v`.
    """
    U, S, Vh = np.linalg.svd(W.reshape(m, m, m, m).transpose(2, 1, 0, 3), full_matrices=False)
    root = np.sqrt(S[..., 0])
    u = U[..., 0] * root[..., None]  # [j1, i2, i1]
    v = Vh[..., 0, :] * root[..., None]  # [j1, i2, j2]
    return u.transpose(1, 2, 0)[None], v[:, None]


def btt_dense(cores: Factors) -> np.ndarray:
    """`W[(i1, i2), (j1, j2)] = L[0, i2, i1, j1] R[j1, 0, i2, j2]` (rank 1)."""
    L, R = cores
    m = L.shape[1]
    return np.einsum("bij,jbk->ibjk", L[0], R[:, 0]).reshape(m * m, m * m)


def kron_numpy(W: np.ndarray, m: int) -> Factors:
    """Nearest `A ⊗ B` with `m x m` factors: the leading triplet of `R[(i1, j1), (i2, j2)] = W[(i1, i2), (j1, j2)]`."""
    R = W.reshape(m, m, m, m).transpose(0, 2, 1, 3).reshape(m * m, m * m)
    U, S, Vh = np.linalg.svd(R, full_matrices=False)
    root = np.sqrt(S[0])
    return (root * U[:, 0]).reshape(m, m), (root * Vh[0]).reshape(m, m)


def contenders(
    W: np.ndarray, structure: str, nb: int
) -> tuple[dict[str, Callable[[], object]], Callable[[object], np.ndarray]]:
    """The two contenders for one case, and the dense matrix of the NumPy answer."""
    m = math.isqrt(W.shape[0])
    if structure == "monarch":
        return {
            "structlin": lambda: sl.project(W, sl.Monarch, nblocks=nb),
            "numpy": lambda: monarch_numpy(W, nb),
        }, monarch_dense
    if structure == "btt":
        return {
            "structlin": lambda: sl.project(W, sl.BTT, ms=(m, m), ns=(m, m), ranks=1),
            "numpy": lambda: btt_numpy(W, m),
        }, btt_dense
    return {
        "structlin": lambda: sl.project(W, sl.Kron, factor_shapes=((m, m), (m, m))),
        "numpy": lambda: kron_numpy(W, m),
    }, lambda f: np.kron(*f)


def check(W: np.ndarray, ours: sl.LinearOperator, theirs: np.ndarray) -> float:
    """`||W - P|| / ||W||` after checking that both projections `P` agree."""
    norm = np.linalg.norm(W)
    gap = np.linalg.norm(np.asarray(ours.to_dense()) - theirs)
    if not gap <= 1e-8 * norm:
        raise AssertionError(
            f"structlin and NumPy projections differ: {gap:.3g} vs ||W|| {norm:.3g}"
        )
    return float(np.linalg.norm(W - theirs) / norm)


def one_sample(fns: dict[str, Callable[[], object]], ours_s: float, theirs_s: float):
    """Timings in `harness.compare`'s format from the single (checked) call of each contender."""
    return {"structlin": (ours_s, 0.0, ours_s / theirs_s), "numpy": (theirs_s, 0.0, 1.0)}


def fewer_rounds(settings: harness.Settings, seconds: float) -> harness.Settings:
    """At most 3 rounds for calls of a second or more and 1 from ten seconds, so the run takes minutes."""
    if seconds < 1:
        return settings
    return dataclasses.replace(settings, rounds=min(settings.rounds, 3 if seconds < 10 else 1))


def run(settings: harness.Settings) -> list[harness.Record]:
    rows: list[harness.Record] = []
    for d in (64, 256) if settings.quick else (1024, 4096):
        W = np.random.default_rng(0).standard_normal((d, d))
        root = math.isqrt(d)
        cases = [(f"monarch nb={nb}", "monarch", nb) for nb in (4, root)]
        cases += [("btt", "btt", root), ("kron", "kron", root)]
        for label, structure, nb in cases:
            fns, dense = contenders(W, structure, nb)
            start = time.perf_counter()
            ours = fns["structlin"]()
            ours_s = time.perf_counter() - start
            theirs = fns["numpy"]()
            theirs_s = time.perf_counter() - start - ours_s
            seconds = (ours_s + theirs_s) / 2
            rel_error = check(W, ours, dense(theirs))
            if seconds >= 10:  # the checked call was the one sample: another costs minutes
                timings = one_sample(fns, ours_s, theirs_s)
            else:
                timings = harness.compare(fns, fewer_rounds(settings, seconds), baseline="numpy")
            case = {"d": d, "structure": label}
            rows += harness.records(
                NAME, case, timings, {name: {"rel_error": rel_error} for name in fns}
            )
            print(
                f"   d={d} {label:14s} structlin {timings['structlin'][0]:.3g} s, "
                f"numpy {timings['numpy'][0]:.3g} s, ratio {timings['structlin'][2]:.3f}",
                flush=True,
            )
    return rows
