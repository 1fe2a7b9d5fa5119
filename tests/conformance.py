"""The conformance kit: every operator checked against its dense matrix.

A *case* is a function `case(gen) -> Built` that draws shapes and values with
`gen` (a [`Gen`][]) and returns a builder of the operator from arrays of any
backend plus an independent dense NumPy reference (computed from the same
values without structlin). [`check_operator`][] then verifies, on one backend
and dtype:

- `A @ x`, `A @ X`, `x @ A`, `X @ A` (with batch axes) and `to_dense()`;
- `A.T`, `A.H` (structured: no lazy `Transpose` node) and the adjoint dot-test
  `<A x, y> = <x, A^H y>`;
- `diag`, `trace`, `slogdet`, `logdet` for square operators;
- `inv`, `solve` and `inv() @ x` for invertible ones, and that a structured
  inverse is not a dense matrix;
- pytree flatten/unflatten, `.to(dtype)`;
- on JAX: `jax.tree_util` round trip, `jax.jit` and `jax.vmap` over `A @ x`,
  `jax.grad` with respect to `x` and to the operator's leaves (against central
  finite differences);
- on PyTorch: autograd through `A @ x` with respect to `x` and the leaves.

New operators join by adding a case to `tests/operators/test_conformance.py`
(or by calling `check_operator` from their own test module).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import structlin as sl

BACKENDS = [b for b in ("numpy", "torch", "jax") if b == "numpy" or importlib.util.find_spec(b)]
DTYPES = ["float32", "float64", "complex128"]
RTOL = {"float32": 2e-4, "float64": 1e-9, "complex128": 1e-9}


def examples(backend: str, dtype: str) -> int:
    """Hypothesis examples per (case, backend, dtype).

    JAX compiles every primitive anew for each new shape, a few seconds per
    drawn case, so it gets fewer draws; `STRUCTLIN_EXAMPLES` scales all counts
    for a deeper local run.
    """
    scale = float(os.environ.get("STRUCTLIN_EXAMPLES", "1"))
    base = {"numpy": 10, "torch": 8, "jax": 3 if dtype == "float64" else 2}[backend]
    return max(1, round(base * scale))


# -- arrays of every backend -------------------------------------------------------------
def to_backend(x: np.ndarray, backend: str, device: Any = None) -> Any:
    if backend == "numpy":
        return np.asarray(x)
    if backend == "torch":
        import torch

        return torch.as_tensor(np.array(x), device=device)
    import jax.numpy as jnp

    return jnp.asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().resolve_conj().numpy()
    return np.asarray(x)


def assert_close(actual: Any, expected: np.ndarray, rtol: float, what: str) -> None:
    """`||actual - expected|| <= rtol * (||expected|| + 1)`, in the Frobenius norm."""
    actual = to_numpy(actual)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != expected {expected.shape}"
    )
    err = np.linalg.norm(actual.astype(np.complex128) - expected)
    scale = np.linalg.norm(expected) + 1
    assert err <= rtol * scale, f"{what}: error {err:.3e} > {rtol:.1e} * {scale:.3e}"


# -- drawing cases -------------------------------------------------------------------------
@dataclass
class Gen:
    """Draws shapes through hypothesis and values through a seeded NumPy generator.

    Values are rounded to the target dtype so that the float64 reference is
    computed from exactly the numbers the operator holds.
    """

    draw: Callable[[Any], Any]
    dtype: str
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        from hypothesis import strategies as st

        self.rng = np.random.default_rng(self.draw(st.integers(0, 2**32 - 1)))

    def size(self, lo: int = 1, hi: int = 5) -> int:
        from hypothesis import strategies as st

        return self.draw(st.integers(lo, hi))

    def choice(self, options: list[Any]) -> Any:
        from hypothesis import strategies as st

        return self.draw(st.sampled_from(options))

    @property
    def complex(self) -> bool:
        return self.dtype.startswith("complex")

    def round(self, x: np.ndarray) -> np.ndarray:
        return x.astype(self.dtype).astype(np.complex128 if self.complex else np.float64)

    def normal(self, *shape: int) -> np.ndarray:
        x = self.rng.standard_normal(shape)
        if self.complex:
            x = x + 1j * self.rng.standard_normal(shape)
        return self.round(x)

    def well_conditioned(self, *shape: int) -> np.ndarray:
        """Square matrices (the last two axes) `I + 0.3 G / sqrt(n)`: invertible, modest condition."""
        n = shape[-1]
        eye = np.broadcast_to(np.eye(n), shape)
        return self.round(eye + 0.3 * self.normal(*shape) / np.sqrt(n))


@dataclass
class Built:
    """What a case returns.

    Attributes:
        make: Builds the operator; receives `arr(np_array) -> backend array`.
        dense: The independent dense reference (complex128 or float64).
        invertible: Whether inverse, solve and log-determinant are to be checked.
        structured_inverse: Whether `inv` must not be the lazy dense `Inverse`.
    """

    make: Callable[[Callable[[np.ndarray], Any]], sl.LinearOperator]
    dense: np.ndarray
    invertible: bool = False
    structured_inverse: bool = True


# -- the checks ------------------------------------------------------------------------------
def check_operator(
    built: Built,
    backend: str,
    dtype: str,
    gen: Gen,
    device: Any = None,
    structured_transpose: bool = True,
) -> None:
    """Run every conformance check of one built case on one backend and dtype.

    `structured_transpose=False` allows `A.T`/`A.H` to be the lazy `Transpose`/`Adjoint`
    nodes (user operators that register no transpose rule).
    """
    rtol = RTOL[dtype]

    def arr(x: np.ndarray) -> Any:
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact):
            x = x.astype(dtype)
        return to_backend(x, backend, device)

    A = built.make(arr)
    D = built.dense
    m, n = D.shape
    assert A.shape == (m, n)
    assert A.backend is None or A.backend.name == backend
    assert str(A.dtype).replace("torch.", "") == dtype, f"dtype {A.dtype} != {dtype}"

    assert_close(A.to_dense(), D, rtol, "to_dense")
    x, X, y, Y = gen.normal(n), gen.normal(n, 3), gen.normal(m), gen.normal(2, 3, m)
    assert_close(A @ arr(x), D @ x, rtol, "A @ x")
    assert_close(A @ arr(X), D @ X, rtol, "A @ X")
    assert_close(arr(y) @ A, y @ D, rtol, "y @ A")
    assert_close(arr(Y) @ A, Y @ D, rtol, "Y @ A (batched rows)")
    assert_close(sl.matmat(A, arr(X)), D @ X, rtol, "sl.matmat")

    _check_transposes(A, D, arr, x, y, rtol, structured_transpose)
    _check_pytree(A, D, arr, backend, dtype, rtol)
    if m == n:
        _check_square(A, D, built, arr, X, rtol)
    if backend == "jax":
        _check_jax(A, D, arr, x, y, dtype, rtol)
    if backend == "torch":
        _check_torch(A, D, arr, x, y, dtype, rtol)


def _check_transposes(A, D, arr, x, y, rtol, structured) -> None:
    for name, At, Dt in (("A.T", A.T, D.T), ("A.H", A.H, D.conj().T)):
        if structured:
            assert not isinstance(At, sl.Transpose | sl.Adjoint), f"{name} is not structured"
        assert At.shape == Dt.shape
        assert_close(At.to_dense(), Dt, rtol, f"{name}.to_dense")
        assert_close(At @ arr(y), Dt @ y, rtol, f"{name} @ y")
    assert_close(A.T.T.to_dense(), D, rtol, "A.T.T")
    # Adjoint dot-test: <A x, y> == <x, A^H y>.
    lhs = np.vdot(y, to_numpy(A @ arr(x)))
    rhs = np.vdot(to_numpy(A.H @ arr(y)), x)
    scale = np.linalg.norm(D) * np.linalg.norm(x) * np.linalg.norm(y) + 1
    assert abs(lhs - rhs) <= 10 * rtol * scale, f"dot test: {lhs} != {rhs}"


def _check_square(A, D, built, arr, X, rtol) -> None:
    assert_close(sl.diag(A), np.diag(D), rtol, "diag")
    assert_close(sl.trace(A), np.trace(D), rtol, "trace")
    if not built.invertible:
        return
    sign, logabsdet = sl.slogdet(A)
    ref_sign, ref_logabsdet = np.linalg.slogdet(D)
    assert_close(sign, np.asarray(ref_sign), rtol * 10, "slogdet sign")
    assert_close(logabsdet, np.asarray(ref_logabsdet), rtol * 10, "slogdet log|det|")
    if not np.iscomplexobj(D) and ref_sign > 0:
        assert_close(sl.logdet(A), np.asarray(ref_logabsdet), rtol * 10, "logdet")
    Ainv = A.inv()
    if built.structured_inverse:
        assert not isinstance(Ainv, sl.Inverse | sl.Dense) or isinstance(A, sl.Dense), (
            f"inverse of {type(A).__name__} is not structured: {type(Ainv).__name__}"
        )
    ref = np.linalg.solve(D, X)
    cond = np.linalg.cond(D) if D.size else 1.0
    tol = rtol * max(cond, 1.0) * 10
    assert_close(Ainv @ arr(X), ref, tol, "A.inv() @ X")
    assert_close(sl.solve(A, arr(X)), ref, tol, "solve(A, X)")
    assert_close(sl.solve(A, arr(X[:, 0])), ref[:, 0], tol, "solve(A, x)")
    assert_close(Ainv.to_dense(), np.linalg.inv(D), tol, "inv().to_dense()")
    assert_close(Ainv.inv().to_dense(), D, tol, "inv().inv()")
    assert_close(A.T.inv().to_dense(), np.linalg.inv(D).T, tol, "A.T.inv()")


def _check_pytree(A, D, arr, backend, dtype, rtol) -> None:
    leaves, treedef = sl.pytree.tree_flatten(A)
    B = sl.pytree.tree_unflatten(treedef, leaves)
    assert type(B) is type(A)
    assert_close(B.to_dense(), D, rtol, "pytree round trip")
    if dtype == "float64":
        low = A.to("float32" if backend != "torch" else _torch_dtype("float32"))
        assert str(low.dtype).replace("torch.", "") == "float32"
        assert_close(low.to_dense(), D, 2e-4, "to(float32)")


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _check_jax(A, D, arr, x, y, dtype, rtol) -> None:
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten(A)
    assert_close(jax.tree_util.tree_unflatten(treedef, leaves).to_dense(), D, rtol, "jax pytree")

    jx, jy = arr(x), arr(y)
    assert_close(jax.jit(lambda op, v: op @ v)(A, jx), D @ x, rtol, "jit(A @ x)")
    assert_close(jax.jit(lambda op: op.T.to_dense())(A), D.T, rtol, "jit(A.T.to_dense())")
    xs = np.stack([x, 2 * x])
    assert_close(jax.vmap(lambda v: A @ v)(arr(xs)), xs @ D.T, rtol, "vmap(A @ x)")
    if dtype == "complex128":
        return

    # d/dx <y, A x> = A^T y.
    grad_x = jax.grad(lambda v: jnp.vdot(jy, A @ v))(jx)
    assert_close(grad_x, D.T @ y, rtol * 10, "grad wrt x")
    if dtype != "float64":
        return
    # d/dA <y, A x> against central finite differences along a random tangent.
    f = jax.jit(lambda op: jnp.vdot(jy, op @ jx))
    grad_op = jax.grad(f, allow_int=True)(A)
    rng = np.random.default_rng(0)
    tangent = jax.tree_util.tree_map(
        lambda leaf: (
            jnp.asarray(rng.standard_normal(jnp.shape(leaf)))
            if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
            else leaf
        ),
        A,
    )
    directional = sum(
        float(jnp.vdot(g, t))
        for g, t in zip(
            jax.tree_util.tree_leaves(grad_op), jax.tree_util.tree_leaves(tangent), strict=True
        )
        if jnp.issubdtype(jnp.result_type(t), jnp.floating)
    )
    eps = 1e-6

    def shifted(sign: float) -> Any:
        return jax.tree_util.tree_map(
            lambda leaf, t: (
                leaf + sign * eps * t
                if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
                else leaf
            ),
            A,
            tangent,
        )

    fd = (float(f(shifted(1.0))) - float(f(shifted(-1.0)))) / (2 * eps)
    assert abs(directional - fd) <= 1e-5 * (abs(fd) + 1), f"grad wrt leaves: {directional} != {fd}"


def _check_torch(A, D, arr, x, y, dtype, rtol) -> None:
    import torch

    if dtype == "complex128":
        return
    tx = arr(x).requires_grad_(True)
    ty = arr(y)
    torch.dot(ty, A @ tx).backward()
    assert_close(tx.grad, D.T @ y, rtol * 10, "x.grad")
    if dtype != "float64":
        return
    # Gradient with respect to the leaves against central finite differences.
    leaves, treedef = sl.pytree.tree_flatten(A)

    def floating(leaf: Any) -> bool:
        return isinstance(leaf, torch.Tensor) and leaf.is_floating_point()

    if not any(floating(leaf) for leaf in leaves):
        return
    params = [
        leaf.detach().clone().requires_grad_(True) if floating(leaf) else leaf for leaf in leaves
    ]
    torch.dot(ty, sl.pytree.tree_unflatten(treedef, params) @ arr(x)).backward()
    gen = torch.Generator().manual_seed(0)
    tangents = [
        torch.randn(leaf.shape, generator=gen, dtype=leaf.dtype) if floating(leaf) else None
        for leaf in leaves
    ]
    directional = sum(
        float((p.grad * t).sum()) for p, t in zip(params, tangents, strict=True) if t is not None
    )
    eps = 1e-6

    def f(sign: float) -> float:
        shifted = [
            leaf + sign * eps * t if t is not None else leaf
            for leaf, t in zip(leaves, tangents, strict=True)
        ]
        return float(torch.dot(ty, sl.pytree.tree_unflatten(treedef, shifted) @ arr(x)))

    fd = (f(1.0) - f(-1.0)) / (2 * eps)
    assert abs(directional - fd) <= 1e-5 * (abs(fd) + 1), (
        f"torch grad wrt leaves: {directional} != {fd}"
    )
