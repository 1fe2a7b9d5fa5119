"""Per-call overhead of `A @ x` and `x @ A` against the backend's own matmul on the raw arrays.

At 64 x 64 (float32) the product itself takes a microsecond or two, so the ratio
is what structlin adds per call: the operand checks, the rule lookup and the
calls between them. "direct" is `W @ x` (or `x @ W`) on the array, "structlin"
the same product through `A = sl.Dense(W)`; the target is a ratio of at most 2
on NumPy and PyTorch. `x` is a vector `(64,)` or a matrix, `(64, 8)` for
`A @ x` and `(8, 64)` for `x @ A`. JAX runs eagerly (no `jit`), where its own
dispatch of every operation already costs tens of microseconds: reported, not a
target. Informative, without a target: a Monarch with 8 blocks of 8 x 8 against
the same two batched matmuls and permutations written by hand (on PyTorch
structlin runs its autograd kernel, whose `Function.apply` has a cost of its
own), and a `Diagonal` against the broadcast multiply. PyTorch runs on one CPU
thread here: products this small gain nothing from more.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import harness
import numpy as np

import structlin as sl

NAME = "dispatch"
DESCRIPTION = __doc__
PLOT = None

N = 64  # the operator is N x N
K = 8  # columns of a matrix operand (rows for x @ A), and Monarch's number of blocks

Array = Any
Contenders = dict[str, Callable[[], Any]]


def _convert(backend: str, device: str) -> Callable[[np.ndarray], Array]:
    """NumPy float32 arrays to `backend`'s arrays (PyTorch on `device`; JAX on its default)."""
    if backend == "numpy":
        return lambda a: a
    if backend == "torch":
        import torch

        return lambda a: torch.from_numpy(a).to(device)
    import jax.numpy as jnp

    return jnp.asarray


def _backends(device: str) -> list[str]:
    """NumPy, PyTorch (on `device`) and, when `device` is the CPU, JAX where it is installed."""
    names = ["numpy", "torch"]
    if importlib.util.find_spec("jax") is not None and not device.startswith("cuda"):
        names.append("jax")
    return names


def _operands(side: str, convert: Callable[[np.ndarray], Array]) -> dict[str, Array]:
    """The vector and the matrix `x` of `A @ x` (`side == "A @ x"`) or `x @ A`."""
    rng = np.random.default_rng(1)
    shape = (N, K) if side == "A @ x" else (K, N)
    return {
        f"({N},)": convert(rng.standard_normal(N, dtype=np.float32)),
        str(shape): convert(rng.standard_normal(shape, dtype=np.float32)),
    }


def _product(side: str, A: Any, x: Array) -> Callable[[], Any]:
    if side == "A @ x":
        return lambda: A @ x
    return lambda: x @ A


def _diagonal_direct(d: Array, side: str, x: Array) -> Callable[[], Any]:
    if side == "x @ A":
        return lambda: x * d
    if len(x.shape) == 1:
        return lambda: d * x
    return lambda: d[:, None] * x


def _monarch_direct(M: sl.Monarch, side: str, x: Array) -> Callable[[], Any]:
    """`M = P_out B_2 P_mid B_1` by hand: two batched matmuls around the block transposes."""
    B1, B2 = M.blkdiag1, M.blkdiag2
    k, q, p = B1.shape  # B_1: k blocks (q, p)
    nb, s, r = B2.shape  # B_2: nb blocks (s, r)
    backend = M.backend
    matmul, permute, reshape = backend.matmul, backend.permute_dims, backend.reshape
    if side == "A @ x":
        cols = tuple(x.shape[1:])  # () for a vector

        def columns() -> Array:
            Y = matmul(B1, reshape(x, (k, p, -1)))  # (k, q, c): B_1 block by block
            Y = matmul(B2, permute(reshape(Y, (r, nb, -1)), (1, 0, 2)))  # P_mid, then B_2
            return reshape(permute(Y, (1, 0, 2)), (s * nb, *cols))  # P_out

        return columns
    lead = tuple(x.shape[:-1])  # () for a vector

    def rows() -> Array:
        Y = matmul(permute(reshape(x, (-1, s, nb)), (2, 0, 1)), B2)  # x P_out, then B_2
        Y = permute(reshape(permute(Y, (1, 2, 0)), (-1, k, q)), (1, 0, 2))  # P_mid
        return reshape(permute(matmul(Y, B1), (1, 0, 2)), (*lead, k * p))  # B_1

    return rows


def _operators(backend: str, device: str) -> dict[str, tuple[Array, sl.LinearOperator]]:
    """`{name: (what the direct contender uses, the operator)}`, all float32 on `backend`."""
    convert = _convert(backend, device)
    rng = np.random.default_rng(0)
    W = convert((rng.standard_normal((N, N)) / N**0.5).astype(np.float32))
    d = convert(rng.standard_normal(N).astype(np.float32))
    M = sl.Monarch.random(
        N,
        N,
        nblocks=K,
        rng=0,
        dtype=W.dtype,
        backend=backend,
        device=device if backend == "torch" else None,
    )
    return {"dense": (W, sl.Dense(W)), "monarch": (M, M), "diagonal": (d, sl.Diagonal(d))}


def _contenders(operator: str, raw: Any, A: sl.LinearOperator, side: str, x: Array) -> Contenders:
    if operator == "dense":
        direct = _product(side, raw, x)
    elif operator == "diagonal":
        direct = _diagonal_direct(raw, side, x)
    else:
        direct = _monarch_direct(raw, side, x)
    return {"direct": direct, "structlin": _product(side, A, x)}


def _to_numpy(y: Any) -> np.ndarray:
    if hasattr(y, "detach"):
        return y.detach().cpu().numpy()
    return np.asarray(y)


def _check(contenders: Contenders) -> None:
    """Both contenders compute the same product, so the timings compare like with like."""
    direct, structlin = (_to_numpy(fn()) for fn in contenders.values())
    np.testing.assert_allclose(structlin, direct, rtol=1e-4, atol=1e-5)


def _cases(settings: harness.Settings) -> Iterator[tuple[str, str, str, int]]:
    """`(backend, operator, side, operand index)`; quick mode keeps one operand per side
    (the vector for `A @ x`, the matrix for `x @ A`) and, on JAX, only `Dense`."""
    for backend in _backends(settings.device):
        for operator in ("dense", "monarch", "diagonal"):
            if settings.quick and backend == "jax" and operator != "dense":
                continue
            for side in ("A @ x", "x @ A"):
                for index in (0, 1):
                    if not settings.quick or index == (side == "x @ A"):
                        yield backend, operator, side, index


@contextlib.contextmanager
def _one_torch_thread(device: str) -> Iterator[None]:
    """PyTorch on one CPU thread for the duration: on a busy machine, worker threads that
    wait for each other add more noise to a microsecond product than they save."""
    import torch

    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run(settings: harness.Settings) -> list[harness.Record]:
    with _one_torch_thread(settings.device):
        return _run(settings)


def _run(settings: harness.Settings) -> list[harness.Record]:
    rows: list[harness.Record] = []
    built: dict[str, dict[str, tuple[Array, sl.LinearOperator]]] = {}
    for backend, operator, side, index in _cases(settings):
        if backend not in built:
            built[backend] = _operators(backend, settings.device)
        raw, A = built[backend][operator]
        shape, x = list(_operands(side, _convert(backend, settings.device)).items())[index]
        contenders = _contenders(operator, raw, A, side, x)
        _check(contenders)
        timings = harness.compare(contenders, settings, baseline="direct")
        case = {"backend": backend, "operator": operator, "product": side, "x": shape}
        rows += harness.records(NAME, case, timings)
        print(
            f"   {backend:5s} {operator:8s} {side} x{shape:8s} ratio {timings['structlin'][2]:.2f}",
            flush=True,
        )
    return rows
