"""The aliasing policy (docs/guides/operators.md, "Aliasing and in-place writes").

Operators hold the caller's arrays like views: no copy on construction, so a write
into those arrays shows through on the operator's next use (`.T`, `.H`, `.inv()`,
`solve`, `to_dense`, `diag`, `trace` all see it), and nothing value-dependent is
cached on an operator. Results never alias: what a function returns shares no
memory with the operator's arrays or with the operand, so writing into it changes
nothing else. The one exception is `Permutation`, which owns a checked copy of its indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import structlin as sl
from structlin.backends import backend_of, is_array
from structlin.pytree import tree_flatten

BACKENDS = ["numpy", "torch"]  # JAX arrays are immutable: nothing to alias


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _well(*shape: int) -> np.ndarray:
    n = shape[-1]
    return np.broadcast_to(np.eye(n), shape) + 0.2 * _rng().standard_normal(shape) / np.sqrt(n)


def _normal(*shape: int) -> np.ndarray:
    return _rng().standard_normal(shape)


# name -> (arrays, build(arrays) -> operator); every operator is square and invertible.
CASES: dict[str, tuple[Callable[[], list[np.ndarray]], Callable[..., sl.LinearOperator]]] = {
    "Dense": (lambda: [_well(4, 4)], lambda a: sl.Dense(a)),
    "Dense.T": (lambda: [_well(4, 4)], lambda a: sl.Dense(a).T),
    "Dense.H": (lambda: [_well(4, 4)], lambda a: sl.Dense(a).H),
    "Diagonal": (lambda: [1.0 + _rng().uniform(size=4)], lambda d: sl.Diagonal(d)),
    "BlockDiag": (lambda: [_well(2, 2, 2)], lambda b: sl.BlockDiag(b)),
    "BlockDiag one block": (lambda: [_well(1, 4, 4)], lambda b: sl.BlockDiag(b)),
    "LowRank": (lambda: [_well(4, 4), _well(4, 4)], lambda u, v: sl.LowRank(u, v)),
    "Kron": (lambda: [_well(2, 2), _well(2, 2)], lambda a, b: sl.Kron(a, b)),
    "Kron one factor": (lambda: [_well(4, 4)], lambda a: sl.Kron(a)),
    "Monarch": (lambda: [_well(2, 2, 2), _well(2, 2, 2)], lambda a, b: sl.Monarch(a, b)),
    "TT one core": (lambda: [_well(4, 4)[None, :, :, None]], lambda g: sl.TT(g)),
    "BTT one core": (lambda: [_well(4, 4)[None, None]], lambda g: sl.BTT(g)),
    "Sum": (
        lambda: [_well(4, 4), 1.0 + _rng().uniform(size=4)],
        lambda a, d: sl.Sum(a, sl.Diagonal(d)),
    ),
    "Sum one term": (lambda: [_well(4, 4)], lambda a: sl.Sum(a)),
    "ScalarMul": (lambda: [_well(4, 4)], lambda a: 2.0 * sl.Dense(a)),
    "Product": (
        lambda: [_well(4, 4), 1.0 + _rng().uniform(size=4)],
        lambda a, d: sl.Dense(a) @ sl.Diagonal(d),
    ),
    "Identity": (lambda: [], lambda: sl.Identity(4)),
    "StridePermutation (1, 4)": (lambda: [], lambda: sl.Permutation.stride(1, 4)),
    "StridePermutation (2, 2)": (lambda: [], lambda: sl.Permutation.stride(2, 2)),
}


def _arrays(name: str, backend: str) -> list[Any]:
    arrays = [np.ascontiguousarray(a) for a in CASES[name][0]()]
    if backend == "torch":
        torch = pytest.importorskip("torch")
        return [torch.from_numpy(a) for a in arrays]
    return arrays


def _np(x: Any) -> np.ndarray:
    return backend_of(x).to_numpy(x) if is_array(x) else np.asarray(x)


def _results(A: sl.LinearOperator, x: Any, X: Any) -> dict[str, Any]:
    return {
        "to_dense": A.to_dense(),
        "diag": sl.diag(A),
        "A @ x": A @ x,
        "A @ X": A @ X,
        "X^T @ A": X.T @ A,
        "solve(A, x)": sl.solve(A, x),
        "solve(A, X)": sl.solve(A, X),
        "A.inv() @ X": A.inv() @ X,
        "x @ A": x @ A,
        "trace": sl.trace(A),
    }


def _operands(A: sl.LinearOperator, backend: str) -> tuple[Any, Any]:
    n = A.shape[0]
    x, X = np.arange(1.0, n + 1), _normal(n, 3)
    if backend == "torch":
        import torch

        return torch.from_numpy(x), torch.from_numpy(X)
    return x, X


def _shares(backend: str, a: Any, b: Any) -> bool:
    if not is_array(a) or not is_array(b) or backend_of(a) is not backend_of(b):
        return False
    if backend_of(a).name == "numpy":
        return np.shares_memory(a, b)
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_results_share_no_memory(backend: str, name: str) -> None:
    arrays = _arrays(name, backend)
    A = CASES[name][1](*arrays)
    x, X = _operands(A, backend)
    held = [leaf for leaf in tree_flatten(A)[0] if is_array(leaf)] + arrays
    for what, result in _results(A, x, X).items():
        for other in [*held, x, X]:
            assert not _shares(backend, result, other), f"{name}: {what} aliases an input"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_writing_into_results_changes_nothing(backend: str, name: str) -> None:
    arrays = _arrays(name, backend)
    A = CASES[name][1](*arrays)
    x, X = _operands(A, backend)
    before = _np(A.to_dense()).copy()
    x0, X0 = _np(x).copy(), _np(X).copy()
    for result in _results(A, x, X).values():
        if is_array(result) and len(result.shape):
            result[...] = 7.0
    np.testing.assert_array_equal(_np(A.to_dense()), before)
    np.testing.assert_array_equal(_np(x), x0)
    np.testing.assert_array_equal(_np(X), X0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][0]()])
def test_writes_into_held_arrays_show_through(backend: str, name: str) -> None:
    """No copy on construction and no cached values: after the caller writes into the
    arrays, everything derived from the operator, including `.T`/`.H` taken before the
    write, sees the new values."""
    arrays = _arrays(name, backend)
    build = CASES[name][1]
    A = build(*arrays)
    T, H = A.T, A.H
    _ = (A.inv(), sl.diag(A), A.to_dense(), sl.trace(A))  # nothing computed here may stick
    for a in arrays:
        a *= 1.5
    ref = _np(build(*[backend_of(a).copy(a) for a in arrays]).to_dense())
    assert not np.allclose(ref, _np(CASES[name][1](*_arrays(name, backend)).to_dense()))
    _, X = _operands(A, backend)
    np.testing.assert_allclose(_np(A.to_dense()), ref)
    np.testing.assert_allclose(_np(T.to_dense()), ref.T)
    np.testing.assert_allclose(_np(H.to_dense()), ref.conj().T)
    np.testing.assert_allclose(_np(A.T.to_dense()), ref.T)
    np.testing.assert_allclose(_np(A.inv().to_dense()), np.linalg.inv(ref), atol=1e-12)
    np.testing.assert_allclose(_np(sl.solve(A, X)), np.linalg.solve(ref, _np(X)), atol=1e-12)
    np.testing.assert_allclose(_np(A @ X), ref @ _np(X), atol=1e-12)
    np.testing.assert_allclose(_np(sl.diag(A)), np.diag(ref))
    np.testing.assert_allclose(_np(sl.trace(A)), np.trace(ref))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_permutation_owns_its_indices(backend: str) -> None:
    """The documented exception: the checked indices are copied, so a later write into
    the caller's array cannot make the operator a non-permutation."""
    p = np.array([2, 0, 1])
    if backend == "torch":
        torch = pytest.importorskip("torch")
        p = torch.from_numpy(p)
    P = sl.Permutation(p)
    T = P.T
    p[0] = 0  # no longer a permutation
    x = np.array([10.0, 20.0, 30.0])
    x = x if backend == "numpy" else torch.from_numpy(x)
    np.testing.assert_array_equal(_np(P @ x), [30.0, 10.0, 20.0])
    np.testing.assert_array_equal(_np(T @ (P @ x)), _np(x))
    np.testing.assert_array_equal(_np(P.to_dense()), np.eye(3)[[2, 0, 1]])
    assert float(_np(sl.slogdet(P)[0])) == 1.0
    np.testing.assert_array_equal(_np(P.perm), [2, 0, 1])


def test_cast_on_construction_holds_the_cast_copy() -> None:
    """Where a constructor must convert an array (here: cast float32 to the factors'
    common float64) the operator holds the converted copy, as documented."""
    a = np.eye(2, dtype=np.float32)
    K = sl.Kron(a, np.eye(2))
    a[0, 0] = 5.0
    np.testing.assert_array_equal(K.to_dense(), np.eye(4))


def test_no_value_cached_on_operators() -> None:
    """Everything an operator caches (its backend, dtype, device) depends on the types of
    its arrays, never on their values: a cached attribute is one of these names."""
    allowed = {"backend", "device", "dtype", "_plain_operand"}
    A = 2.0 * (sl.Dense(_well(4, 4)) + sl.Monarch(_well(2, 2, 2), _well(2, 2, 2)))
    for op in (A, A.op, *A.op.ops):
        _ = (op.backend, op.device, op.dtype, op._plain_operand, op.T, op.inv(), sl.diag(op))
        cached = set(vars(op)) - set(type(op)._children) - set(type(op)._static)
        assert cached <= allowed, f"{type(op).__name__} caches {cached - allowed}"
