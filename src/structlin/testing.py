"""The conformance kit: check an operator against its dense matrix, on every backend.

structlin's own tests run every operator through these checks; a new structure, or an
operator of your own, runs the same ones:

- [`check_operator`][structlin.testing.check_operator]: every rule of an operator
  (`A @ x`, `X @ A`, `A.T`, `A.H`, `to_dense`, `diag`, `trace`, `slogdet`, `inv`,
  `solve`, pytree round trip, `.to(dtype)`; `jax.jit`, `jax.vmap` and `jax.grad` on
  JAX; autograd and optionally `torch.compile` on PyTorch) against its dense matrix,
  on every available backend and dtype;
- [`check_functions`][structlin.testing.check_functions]: the functions of a Hermitian
  operator (`eigh` up to ordering and sign, `solve`, `inv`, `slogdet`, `logdet`, `diag`,
  `trace`, the matrix functions `sqrt`, `exp`, `log`, `pow`, `apply`, and the sums
  `A + c I`, `A + exp(A)`) against dense NumPy, on every backend and dtype;
- [`dot_test`][structlin.testing.dot_test]: the adjoint dot test
  `<A x, y> = <x, A^H y>` (PyLops' `dottest`), which checks `A @ x` against `A.H`
  and `X @ A` without forming a matrix;
- [`check_layer`][structlin.testing.check_layer]: layer parity, a structure used in
  [`structlin.nn.Linear`][structlin.nn.Linear] (and the JAX layer) computes
  `x W^T + b` for its dense `W`, with gradients.

The checks raise `AssertionError` with what differed, by how much, and on which backend
and dtype. Only NumPy is needed: PyTorch and JAX are imported when their backend is
checked, and pytest and hypothesis never (the lower-level
[`check_case`][structlin.testing.check_case] and [`Gen`][structlin.testing.Gen] serve
hypothesis-driven tests, which pass hypothesis' `draw`).

Examples:
    >>> import numpy as np, structlin as sl
    >>> from structlin.testing import check_operator, dot_test
    >>> A = sl.Kron(np.array([[2.0, 1.0], [0.0, 1.0]]), np.eye(3))
    >>> check_operator(A, backends=["numpy"])  # silent when every check passes
    >>> dot_test(A) < 1e-12
    True
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import structlin as sl
from structlin import backends

__all__ = [
    "BACKENDS",
    "DTYPES",
    "RTOL",
    "Built",
    "Gen",
    "assert_close",
    "check_case",
    "check_functions",
    "check_layer",
    "check_operator",
    "dot_test",
    "examples",
    "to_backend",
    "to_numpy",
]


BACKENDS: tuple[str, ...] = backends.available_backends()
"""The backends whose library is installed, in the order numpy, torch, jax."""

DTYPES: tuple[str, ...] = ("float32", "float64", "complex128")
"""The dtypes structlin's own conformance tests check every operator in."""

RTOL: dict[str, float] = {"float32": 2e-4, "float64": 1e-9, "complex64": 2e-4, "complex128": 1e-9}
"""The relative tolerance of each dtype (of the Frobenius norm, see [`assert_close`][structlin.testing.assert_close])."""


def examples(backend: str, dtype: str) -> int:
    """Hypothesis examples per (case, backend, dtype) in structlin's conformance tests.

    JAX compiles every primitive anew for each new shape, a few seconds per drawn
    case, so it gets fewer draws. The environment variable `STRUCTLIN_EXAMPLES`
    scales all counts for a deeper local run.

    Examples:
        >>> from structlin.testing import examples
        >>> examples("numpy", "float64") >= 1
        True
    """
    scale = float(os.environ.get("STRUCTLIN_EXAMPLES", "1"))
    base = {"numpy": 10, "torch": 8, "jax": 3 if dtype == "float64" else 2}.get(backend, 4)
    return max(1, round(base * scale))


# -- arrays of every backend -------------------------------------------------------------
def to_backend(x: Any, backend: str, device: Any = None) -> Any:
    """A copy of `x` (array-like) as an array of `backend` (`"numpy"`, `"torch"`, `"jax"`),
    of the same dtype, on `device`.

    Examples:
        >>> import numpy as np
        >>> from structlin.testing import to_backend
        >>> to_backend([1.0, 2.0], "numpy")
        array([1., 2.])
    """
    return backends.get_backend(backend).asarray(np.array(x), device=device)


def to_numpy(x: Any) -> np.ndarray:
    """`x` (a NumPy, PyTorch or JAX array) as a NumPy array, detached and on the host.

    Examples:
        >>> import numpy as np
        >>> from structlin.testing import to_numpy
        >>> to_numpy(np.ones(2))
        array([1., 1.])
    """
    if hasattr(x, "detach"):
        return x.detach().cpu().resolve_conj().numpy()
    return np.asarray(x)


def assert_close(actual: Any, expected: np.ndarray, rtol: float, what: str) -> None:
    """Assert `||actual - expected|| <= rtol * (||expected|| + 1)` in the Frobenius norm,
    and equal shapes.

    Raises:
        AssertionError: naming `what`, with the error and the bound.

    Examples:
        >>> import numpy as np
        >>> from structlin.testing import assert_close
        >>> assert_close(np.ones(2), np.ones(2) + 1e-12, 1e-9, "ones")
        >>> assert_close(np.ones(2), np.zeros(2), 1e-9, "ones")
        Traceback (most recent call last):
            ...
        AssertionError: ones: error 1.414e+00 > 1.0e-09 * 1.000e+00
    """
    actual = to_numpy(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != expected {expected.shape}"
    )
    err = np.linalg.norm(actual.astype(np.complex128) - expected)
    scale = np.linalg.norm(expected) + 1
    assert err <= rtol * scale, f"{what}: error {err:.3e} > {rtol:.1e} * {scale:.3e}"


# -- drawing cases -------------------------------------------------------------------------
@dataclass
class Gen:
    """Draws sizes and values for a test case: values from a seeded NumPy generator, sizes
    through hypothesis' `draw` where given (so that hypothesis can shrink them), else from
    the same generator.

    Values are rounded to the target dtype, so that the float64/complex128 reference is
    computed from exactly the numbers the operator holds.

    Args:
        draw: hypothesis' `data.draw`, or `None` to draw everything from `seed`.
        dtype: The dtype name the case is built in (`"float32"`, `"complex128"`, ...).
        seed: The generator's seed where `draw` is `None` (with `draw`, hypothesis draws it).

    Examples:
        >>> from structlin.testing import Gen
        >>> g = Gen(None, "float32", seed=0)
        >>> x = g.normal(3)
        >>> x.dtype, bool((x.astype("float32") == x).all())  # float32 values, held in float64
        (dtype('float64'), True)
    """

    draw: Callable[[Any], Any] | None
    dtype: str
    seed: int = 0
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.draw is None:
            self.rng = np.random.default_rng(self.seed)
            return
        from hypothesis import strategies as st

        self.rng = np.random.default_rng(self.draw(st.integers(0, 2**32 - 1)))

    def size(self, lo: int = 1, hi: int = 5) -> int:
        """An integer in `[lo, hi]`."""
        if self.draw is None:
            return int(self.rng.integers(lo, hi + 1))
        from hypothesis import strategies as st

        return self.draw(st.integers(lo, hi))

    def choice(self, options: list[Any]) -> Any:
        """One of `options`."""
        if self.draw is None:
            return options[int(self.rng.integers(len(options)))]
        from hypothesis import strategies as st

        return self.draw(st.sampled_from(options))

    @property
    def complex(self) -> bool:
        """Whether the dtype is complex."""
        return self.dtype.startswith("complex")

    def round(self, x: np.ndarray) -> np.ndarray:
        """`x` rounded to the dtype, held in float64 (complex128 for a complex dtype)."""
        return x.astype(self.dtype).astype(np.complex128 if self.complex else np.float64)

    def normal(self, *shape: int) -> np.ndarray:
        """Standard normal entries (complex normal for a complex dtype), rounded."""
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
    """A test case: how to build the operator on any backend, and its dense reference.

    Attributes:
        make: Builds the operator; receives `arr(np_array) -> array` of the backend,
            dtype and device under test (integer arrays keep their dtype).
        dense: The independent dense reference (complex128 or float64 NumPy array).
        invertible: Whether inverse, solve and log-determinant are to be checked.
        structured_inverse: Whether `inv` must not be the lazy dense `Inverse`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.testing import Built, Gen, check_case
        >>> d = np.array([1.0, 2.0, 4.0])
        >>> case = Built(lambda arr: sl.Diagonal(arr(d)), np.diag(d), invertible=True)
        >>> check_case(case, "numpy", "float64")
    """

    make: Callable[[Callable[[np.ndarray], Any]], sl.LinearOperator]
    dense: np.ndarray
    invertible: bool = False
    structured_inverse: bool = True


# -- the checks ------------------------------------------------------------------------------
def check_case(
    built: Built,
    backend: str,
    dtype: str,
    gen: Gen | None = None,
    device: Any = None,
    structured_transpose: bool = True,
    torch_compile: bool = False,
) -> None:
    """Run every conformance check of one built case on one backend and dtype.

    Checks `A @ x`, `A @ X`, `x @ A`, `X @ A` (with batch axes), `sl.matmat` and
    `to_dense()`; `A.T`, `A.H` (structured unless `structured_transpose=False`),
    `A.T.T` and the dot test; `diag`, `trace` for square operators and `slogdet`,
    `logdet`, `inv`, `solve` for invertible ones; the pytree round trip and
    `.to(float32)`; on JAX the `jax.tree_util` round trip, `jax.jit`, `jax.vmap`,
    `jax.grad` with respect to `x` and to the leaves (against central finite
    differences); on PyTorch autograd with respect to `x` and the leaves, and with
    `torch_compile` the products under `torch.compile`.

    Args:
        built: The case.
        backend: `"numpy"`, `"torch"` or `"jax"`.
        dtype: A dtype name of [`RTOL`][structlin.testing.RTOL].
        gen: Draws the test vectors; by default `Gen(None, dtype)`.
        device: Where the arrays are made (a PyTorch or JAX device).
        structured_transpose: Whether `A.T` and `A.H` must be structured (not the
            lazy [`Transpose`][structlin.Transpose]/[`Adjoint`][structlin.Adjoint] nodes
            a class without those rules gets).
        torch_compile: Also check `A @ x` and `x @ A` under `torch.compile` (PyTorch only).

    Raises:
        AssertionError: a check failed.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.testing import Built, check_case
        >>> u, v = np.ones((3, 1)), np.arange(2.0).reshape(1, 2)
        >>> check_case(Built(lambda arr: sl.LowRank(arr(u), arr(v)), u @ v), "numpy", "float32")
    """
    gen = gen if gen is not None else Gen(None, dtype)
    rtol = RTOL[dtype]

    def arr(x: np.ndarray) -> Any:
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact):
            x = x.astype(dtype)
        return to_backend(x, backend, device)

    A = built.make(arr)
    D = np.asarray(built.dense)
    m, n = D.shape
    assert A.shape == (m, n), f"shape {A.shape} != the reference's {(m, n)}"
    assert A.backend is None or A.backend is backends.get_backend(backend), (
        f"backend {A.backend} != {backend}"
    )
    assert str(A.dtype).replace("torch.", "") == dtype, f"dtype {A.dtype} != {dtype}"

    assert_close(A.to_dense(), D, rtol, "to_dense")
    x, X, y, Y = gen.normal(n), gen.normal(n, 3), gen.normal(m), gen.normal(2, 3, m)
    assert_close(A @ arr(x), D @ x, rtol, "A @ x")
    assert_close(A @ arr(X), D @ X, rtol, "A @ X")
    assert_close(arr(y) @ A, y @ D, rtol, "y @ A")
    assert_close(arr(Y) @ A, Y @ D, rtol, "Y @ A (batched rows)")
    assert_close(sl.matmat(A, arr(X)), D @ X, rtol, "sl.matmat")

    _check_transposes(A, D, arr, x, y, rtol, structured_transpose)
    _check_pytree(A, D, backend, dtype, rtol)
    if m == n:
        _check_square(A, D, built, arr, X, rtol)
    if backend == "jax":
        _check_jax(A, D, arr, x, y, dtype, rtol)
    if backend == "torch":
        _check_torch(A, D, arr, x, y, dtype, rtol, torch_compile)


def check_operator(
    A: sl.LinearOperator | Callable[[Callable[[np.ndarray], Any]], sl.LinearOperator],
    dense: Any = None,
    *,
    backends: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    invertible: bool | None = None,
    structured_transpose: bool = True,
    structured_inverse: bool = False,
    torch_compile: bool = False,
    device: Any = None,
    seed: int = 0,
) -> None:
    """Check every rule of an operator against its dense matrix, on every backend and dtype.

    On each backend of `backends` and dtype of `dtypes`, the operator is built (`A`
    converted with [`structlin.to`][structlin.to], or `A(arr)` called for a factory)
    and run through [`check_case`][structlin.testing.check_case]: products from both
    sides, transposes, the dot test, the square-matrix functions, pytrees and
    autodiff (see there). Where `dense` is not given, the reference is the operator's
    own `matmat` rule applied to the identity, in float64/complex128: every other rule
    is then checked against `matmat`, and `matmat` itself only by the dot test; give an
    independent `dense` to check `matmat` too.

    Args:
        A: The operator, or a factory `A(arr)` that builds it from NumPy arrays through
            `arr`, which converts them to the backend and dtype under test (for an
            operator whose constructor does more than hold arrays).
        dense: The `(m, n)` reference matrix (array-like), by default from `matmat`.
        backends: Backend names; by default [`BACKENDS`][structlin.testing.BACKENDS],
            every installed one. An operator whose rules call one library (NumPy's
            FFT, say) restricts them.
        dtypes: Dtype names; by default `float32` and `float64` for a real operator,
            `complex64` and `complex128` for a complex one. On JAX, 64-bit dtypes are
            skipped unless `jax_enable_x64` is set.
        invertible: Whether to check `inv`, `solve` and `slogdet`; by default, for a
            square operator whose reference has a condition number below `1e6`.
        structured_transpose: Whether `A.T` and `A.H` must be structured: a class that
            registers no `transpose` (or, complex, no `adjoint`) rule fails, with the
            rule named, unless this is `False`.
        structured_inverse: Whether `inv` must be structured (not a lazy
            [`Inverse`][structlin.Inverse] or a `Dense` matrix).
        torch_compile: Also check the products under `torch.compile` on PyTorch.
        device: Where to put the arrays (a PyTorch or JAX device).
        seed: Seeds the test vectors.

    Raises:
        AssertionError: a check failed; the message names the check, the backend and
            the dtype.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.testing import check_operator
        >>> blocks = np.stack([np.eye(2) + 0.1, 2 * np.eye(2)])
        >>> check_operator(sl.BlockDiag(blocks), backends=["numpy"], invertible=True)

        A wrong reference fails, naming what and where:

        >>> check_operator(sl.BlockDiag(blocks), 2 * sl.BlockDiag(blocks).to_dense(),
        ...                backends=["numpy"], dtypes=["float64"])
        Traceback (most recent call last):
            ...
        AssertionError: check_operator(BlockDiag) on numpy, float64: to_dense: error ...
    """
    # `backends` shadows the module inside this function.
    names = tuple(backends) if backends is not None else BACKENDS
    probe, make, D, dtypes = _prepare("check_operator", A, dense, dtypes)
    label = f"check_operator({type(probe).__name__})"
    if invertible is None:
        invertible = D.shape[0] == D.shape[1] and bool(np.linalg.cond(D) < 1e6) if D.size else False
    built = Built(make, D, invertible=invertible, structured_inverse=structured_inverse)
    for backend in names:
        for dtype in dtypes:
            if not _supported(backend, dtype):
                continue
            try:
                check_case(
                    built,
                    backend,
                    dtype,
                    Gen(None, dtype, seed),
                    device=device,
                    structured_transpose=structured_transpose,
                    torch_compile=torch_compile,
                )
            except AssertionError as e:
                raise AssertionError(f"{label} on {backend}, {dtype}: {e}") from e
            except Exception as e:
                e.add_note(f"in {label} on {backend}, {dtype}")
                raise


def check_functions(
    A: sl.LinearOperator | Callable[[Callable[[np.ndarray], Any]], sl.LinearOperator],
    dense: Any = None,
    *,
    backends: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    structured: bool = False,
    shift: float = 0.5,
    seed: int = 0,
) -> None:
    """Check the functions of a Hermitian positive definite operator against dense NumPy,
    on every backend and dtype.

    On each backend and dtype (built as in [`check_operator`][structlin.testing.check_operator]):

    - [`eigh`][structlin.eigh], up to ordering and sign: the sorted eigenvalues against
      `numpy.linalg.eigvalsh`, `Q^H Q = I` and `Q diag(w) Q^H = A` (each `Q` column is
      defined up to a unit factor, and within a repeated eigenvalue up to a rotation, so
      the columns are not compared one by one);
    - [`solve`][structlin.solve] (one and several right-hand sides),
      [`inv`][structlin.inv], [`slogdet`][structlin.slogdet], [`logdet`][structlin.logdet],
      [`diag`][structlin.diag] and [`trace`][structlin.trace];
    - the matrix functions [`sqrt`][structlin.sqrt] (and `sqrt(A)^2 = A`),
      [`exp`][structlin.exp], [`log`][structlin.log], [`pow`][structlin.pow] (`p = -1`,
      `1.5`) and [`apply`][structlin.apply] (`1 / (1 + w)`), with the `diag` and `trace`
      of each, against `V f(w) V^H` from the dense eigendecomposition;
    - the sums in one eigenbasis: `A + shift I` (`solve`, `inv`, its `diag`, `logdet`,
      `eigh`) and `A + exp(A)` (`solve`, `logdet`).

    Tolerances are [`RTOL`][structlin.testing.RTOL] of the dtype, times the condition number
    where a solve loses it.

    Args:
        A: The operator (Hermitian positive definite, as its reference must be), or a
            factory `A(arr)` as for `check_operator`.
        dense: The reference matrix, by default from the operator's `matmat`.
        backends: Backend names; by default every installed one.
        dtypes: Dtype names; by default `float32` and `float64` (`complex64` and
            `complex128` for a complex operator); 64-bit JAX needs `jax_enable_x64`.
        structured: Also require a structured eigendecomposition:
            [`explain`][structlin.explain] does not report the dense path for `eigh` and
            `Q` is not a [`Dense`][structlin.Dense] matrix.
        shift: The `c` of `A + c I`.
        seed: Seeds the right-hand sides.

    Raises:
        ValueError: the reference is not Hermitian positive definite.
        AssertionError: a check failed; the message names the check, the backend and the
            dtype.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.testing import check_functions
        >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> check_functions(sl.Kron(sl.PSD(a), sl.PSD(a)), backends=["numpy"], structured=True)

        A structure whose `eigh` is dense fails `structured=True`:

        >>> check_functions(sl.PSD(sl.Dense(a)), backends=["numpy"], structured=True)
        Traceback (most recent call last):
            ...
        AssertionError: check_functions(PSD) on numpy, float32: eigh is not structured: ...
    """
    names = tuple(backends) if backends is not None else BACKENDS
    probe, make, D, dtypes = _prepare("check_functions", A, dense, dtypes)
    label = f"check_functions({type(probe).__name__})"
    if D.shape[0] != D.shape[1] or not np.allclose(D, D.conj().T, rtol=1e-6, atol=1e-8):
        raise ValueError(f"{label}: the reference is not Hermitian; the functions need one")
    w, V = np.linalg.eigh(D)
    if D.size and w[0] <= 0:
        raise ValueError(
            f"{label}: the reference is not positive definite (least eigenvalue {w[0]:.3g}); "
            "check_functions checks sqrt, log and pow, which need one"
        )
    for backend in names:
        for dtype in dtypes:
            if not _supported(backend, dtype):
                continue
            try:
                _check_functions_case(make, D, (w, V), backend, dtype, structured, shift, seed)
            except AssertionError as e:
                raise AssertionError(f"{label} on {backend}, {dtype}: {e}") from e
            except Exception as e:
                e.add_note(f"in {label} on {backend}, {dtype}")
                raise


_FUNCTIONS: tuple[tuple[str, Callable[..., Any], Callable[[np.ndarray], np.ndarray]], ...] = (
    ("sqrt", sl.sqrt, np.sqrt),
    ("exp", sl.exp, np.exp),
    ("log", sl.log, np.log),
    ("pow(A, -1)", lambda A: sl.pow(A, -1), lambda v: 1 / v),
    ("pow(A, 1.5)", lambda A: sl.pow(A, 1.5), lambda v: v**1.5),
    ("apply(1 / (1 + w))", lambda A: sl.apply(lambda v: 1 / (1 + v), A), lambda v: 1 / (1 + v)),
)


def _function_values(A: sl.LinearOperator, X: Any, shift: float, seen: dict) -> dict[str, Any]:
    """Every array `check_functions` compares, computed from `A` (under `jax.jit` on JAX:
    one compilation instead of one per operation, and a check that the rules trace);
    the type of `eigh`'s `Q` goes into `seen`."""
    n = A.shape[0]
    out: dict[str, Any] = {}
    values, Q = sl.eigh(A)
    seen["Q"] = Q
    out["eigh values"], out["eigh Q"] = values, Q.to_dense()
    out["solve(A, X)"], out["solve(A, x)"] = sl.solve(A, X), sl.solve(A, X[:, 0])
    out["inv(A)"] = sl.inv(A).to_dense()
    out["slogdet sign"], out["slogdet log|det|"] = sl.slogdet(A)
    out["logdet"], out["diag"], out["trace"] = sl.logdet(A), sl.diag(A), sl.trace(A)
    for name, function, _ in _FUNCTIONS:
        F = function(A)
        out[name], out[f"diag({name})"], out[f"trace({name})"] = (
            F.to_dense(),
            sl.diag(F),
            sl.trace(F),
        )
        if name == "sqrt":
            out["sqrt(A) @ sqrt(A)"] = (F @ F).to_dense()
    shifted = A + shift * sl.Identity(n)
    inverse = sl.inv(shifted)
    out["solve(A + cI)"], out["inv(A + cI)"] = sl.solve(shifted, X), inverse.to_dense()
    out["diag(inv(A + cI))"], out["logdet(A + cI)"] = sl.diag(inverse), sl.logdet(shifted)
    values, Q = sl.eigh(shifted)
    out["eigh(A + cI) values"], out["eigh(A + cI) Q"] = values, Q.to_dense()
    both = A + sl.exp(A)
    out["solve(A + exp(A))"], out["logdet(A + exp(A))"] = sl.solve(both, X), sl.logdet(both)
    return out


def _check_functions_case(make, D, eig, backend, dtype, structured, shift, seed) -> None:
    w, V = eig
    n = D.shape[0]
    rtol = RTOL[dtype] * 10
    gen = Gen(None, dtype, seed)

    def arr(x: np.ndarray) -> Any:
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact):
            x = x.astype(dtype)
        return to_backend(x, backend)

    def function(f: Callable[[np.ndarray], np.ndarray], values: np.ndarray = w) -> np.ndarray:
        return (V * f(values)) @ V.conj().T

    def cond(values: np.ndarray) -> float:
        return float(values[-1] / values[0]) if n else 1.0

    A = make(arr)
    assert_close(A.to_dense(), D, RTOL[dtype], "to_dense")
    X = gen.normal(n, 2)
    seen: dict[str, Any] = {}
    if backend == "jax":
        import jax

        traced = jax.jit(lambda op, B: _function_values(op, B, shift, seen)).lower(A, arr(X))
        # One compilation for every check; XLA's backend optimisations would only cost time.
        options = {"xla_backend_optimization_level": 0}
        got = traced.compile(compiler_options=options)(A, arr(X))
    else:
        got = _function_values(A, arr(X), shift, seen)
    got = {name: to_numpy(value) for name, value in got.items()}

    Q = seen["Q"]
    assert isinstance(Q, sl.LinearOperator), f"eigh: Q is a {type(Q).__name__}, not an operator"
    if structured:
        path = sl.explain(sl.eigh, A).path
        dense_eigh = path == "dense" or isinstance(Q, sl.Dense)
        assert not dense_eigh, f"eigh is not structured: {path} path, Q a {type(Q).__name__}"

    def check_eigh(prefix: str, reference: np.ndarray, eigenvalues: np.ndarray) -> None:
        values, Qd = got[f"{prefix} values"].real, got[f"{prefix} Q"].astype(np.complex128)
        assert_close(np.sort(values), eigenvalues, rtol, f"{prefix}: sorted eigenvalues")
        assert_close(Qd.conj().T @ Qd, np.eye(n), rtol, f"{prefix}: Q^H Q = I")
        assert_close((Qd * values) @ Qd.conj().T, reference, rtol, f"{prefix}: Q diag(w) Q^H")

    def check(name: str, expected: Any, tol: float = rtol) -> None:
        assert_close(got[name], np.asarray(expected), tol, name)

    check_eigh("eigh", D, w)
    ref = np.linalg.solve(D, X)
    check("solve(A, X)", ref, rtol * cond(w))
    check("solve(A, x)", ref[:, 0], rtol * cond(w))
    check("inv(A)", np.linalg.inv(D), rtol * cond(w))
    check("slogdet sign", 1.0)
    check("slogdet log|det|", np.sum(np.log(w)))
    check("logdet", np.sum(np.log(w)))
    check("diag", np.diag(D))
    check("trace", np.trace(D))
    for name, _, f in _FUNCTIONS:
        expected = function(f)
        tol = rtol * (cond(w) if name == "pow(A, -1)" else 1.0)
        check(name, expected, tol)
        check(f"diag({name})", np.diag(expected), tol)
        check(f"trace({name})", np.trace(expected), tol)
    check("sqrt(A) @ sqrt(A)", D)

    Ds, ws = D + shift * np.eye(n), w + shift
    check("solve(A + cI)", np.linalg.solve(Ds, X), rtol * cond(ws))
    check("inv(A + cI)", np.linalg.inv(Ds), rtol * cond(ws))
    check("diag(inv(A + cI))", np.diag(np.linalg.inv(Ds)), rtol * cond(ws))
    check("logdet(A + cI)", np.sum(np.log(ws)))
    check_eigh("eigh(A + cI)", Ds, ws)
    wb = w + np.exp(w)
    check("solve(A + exp(A))", np.linalg.solve(D + function(np.exp), X), rtol * cond(wb))
    check("logdet(A + exp(A))", np.sum(np.log(wb)))


def _prepare(
    caller: str, A: Any, dense: Any, dtypes: Iterable[str] | None
) -> tuple[sl.LinearOperator, Callable[..., sl.LinearOperator], np.ndarray, tuple[str, ...]]:
    """`(probe, make, D, dtypes)` of `check_operator` and `check_functions`: the operator
    built from NumPy arrays, its factory `make(arr)`, the reference and the dtypes."""
    factory = not isinstance(A, sl.LinearOperator)
    if factory and not callable(A):
        raise TypeError(
            f"{caller} needs a structlin operator or a factory arr -> operator, got "
            f"{type(A).__name__}"
        )
    probe = A(np.asarray) if factory else A
    if dense is None:
        D = _reference(probe)
    else:
        D = np.asarray(to_numpy(dense))
        D = D.astype(np.complex128 if np.iscomplexobj(D) else np.float64)
    if dtypes is None:
        complex_ = np.iscomplexobj(D) or _is_complex(probe)
        dtypes = ("complex64", "complex128") if complex_ else ("float32", "float64")
    if factory:
        make = A
    else:

        def make(arr: Callable[[np.ndarray], Any]) -> sl.LinearOperator:
            like = arr(np.zeros(1))
            backend = sl.backends.backend_of(like)
            return sl.to(A, dtype=like.dtype, device=backend.device(like), backend=backend)

    return probe, make, D, tuple(dtypes)


def _reference(A: sl.LinearOperator) -> np.ndarray:
    """`A`'s `matmat` rule applied to the identity, in float64 or complex128."""
    high = A
    if A.dtype is not None and A.backend is not None:
        wide = "complex128" if A.backend.is_complex(A.dtype) else "float64"
        if _supported(A.backend.name, wide):
            high = sl.to(A, dtype=A.backend.canonical_dtype(wide))
    backend = high.backend or backends.get_backend("numpy")
    dtype = high.dtype if high.dtype is not None else backend.canonical_dtype("float64")
    D = to_numpy(sl.rules.matmat(high, backend.eye(A.shape[1], dtype, high.device)))
    return D.astype(np.complex128 if np.iscomplexobj(D) else np.float64)


def _is_complex(A: sl.LinearOperator) -> bool:
    return A.dtype is not None and A.backend is not None and A.backend.is_complex(A.dtype)


def _jax_x64() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


def _supported(backend: str, dtype: str) -> bool:
    """Whether `backend` can hold `dtype` here (JAX's 64-bit types need `jax_enable_x64`)."""
    if backend != "jax" or dtype in ("float32", "complex64"):
        return True
    return _jax_x64()


def dot_test(
    A: sl.LinearOperator, *, rtol: float | None = None, seed: int = 0, raise_: bool = True
) -> float:
    """The adjoint dot test: `<A x, y> = <x, A^H y>` and `(y^T A) x = y^T (A x)`.

    With `<u, v> = v^H u`, for random complex `x` and `y` (complex even for a real
    operator: that also catches a rule that drops the imaginary part of its input),
    in `A`'s backend (a real operator applies itself to complex vectors as to real ones). It compares `A @ x` with `A.H @ y`
    and with `y @ A` (the `matmat`, `adjoint`/`transpose` and `rmatmat` paths)
    without forming a matrix: PyLops' `dottest`.

    Args:
        A: The operator (not value-free).
        rtol: The tolerance of the relative mismatch; by default `1e-4` for a
            single-precision operator and `1e-10` otherwise.
        seed: Seeds `x` and `y`.
        raise_: Raise on a mismatch above `rtol` (else only return it).

    Returns:
        The larger relative mismatch of the two identities.

    Raises:
        AssertionError: a mismatch above `rtol`, with both sides.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.testing import dot_test
        >>> dot_test(sl.dft(8)) < 1e-12
        True
    """
    m, n = A.shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    y = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    backend = A.backend or backends.get_backend("numpy")
    dtype = A.dtype if A.dtype is not None else backend.canonical_dtype("float64")
    single = str(dtype).replace("torch.", "") in ("float16", "bfloat16", "float32", "complex64")
    wide = backend.canonical_dtype("complex64" if single else "complex128")
    if rtol is None:
        rtol = 1e-4 if single else 1e-10
    bx = backend.asarray(x, dtype=wide, device=A.device)
    by = backend.asarray(y, dtype=wide, device=A.device)
    Ax = to_numpy(A @ bx)
    AHy = to_numpy(A.H @ by)
    yA = to_numpy(by @ A)
    lhs = np.vdot(y, Ax)  # y^H (A x)
    rhs = np.vdot(AHy, x)  # (A^H y)^H x
    bilinear_l = y @ Ax  # y^T (A x)
    bilinear_r = yA @ x  # (y^T A) x
    scale = abs(lhs) + np.linalg.norm(Ax) * np.linalg.norm(y) * 1e-3 + 1e-30
    mismatch = max(abs(lhs - rhs), abs(bilinear_l - bilinear_r)) / scale
    if raise_ and not mismatch <= rtol:
        raise AssertionError(
            f"dot test of {type(A).__name__}: <A x, y> = {lhs:.6g}, <x, A^H y> = {rhs:.6g}; "
            f"y^T (A x) = {bilinear_l:.6g}, (y^T A) x = {bilinear_r:.6g}: relative mismatch "
            f"{mismatch:.2e} > {rtol:.1e}. A.H (the adjoint or transpose rule) or y @ A (the "
            "rmatmat rule) does not match A @ x (the matmat rule)"
        )
    return float(mismatch)


# -- layer parity ----------------------------------------------------------------------------
def check_layer(
    source: sl.LinearOperator | str,
    in_features: int | None = None,
    out_features: int | None = None,
    *,
    frameworks: Sequence[str] | None = None,
    rtol: float = 2e-4,
    seed: int = 0,
    **spec: Any,
) -> tuple[str, ...]:
    """Layer parity: a structure in a layer computes `x W^T + b` for its dense `W`.

    For an operator `source`, the layers are built with `from_operator` (with a bias
    and without, with weight normalisation and without), and `W` is the operator's
    dense matrix; for a structure name, `Linear(in_features, out_features, source,
    **spec)` (and the JAX layer's `Linear.init`), and `W` is the dense matrix of the
    layer's `operator`. Each layer's output for a batch of rows of shape
    `(2, 3, in_features)` is compared with `x W^T + b`, and its gradient with respect
    to `x` with `1 W` (every parameter must receive a finite gradient too). In float32.

    Args:
        source: A real operator, or a structure name of
            [`structlin.nn.structures`][structlin.nn.structures].
        in_features: `d_in`, for a structure name.
        out_features: `d_out`, for a structure name.
        frameworks: `"torch"` ([`structlin.nn.Linear`][structlin.nn.Linear]) and
            `"jax"` ([`structlin.nn.jax.Linear`][structlin.nn.jax.Linear]); by default
            those installed.
        rtol: The relative tolerance.
        seed: Seeds the layers and inputs.
        **spec: The structure's options (`nblocks`, `rank`, ...), for a structure name.

    Returns:
        The frameworks checked.

    Raises:
        AssertionError: a layer's output or gradient differs.
        ImportError: neither PyTorch nor JAX is installed (or a named one is not).
        TypeError: the layer refuses the operator (no `components` rule, complex values).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.testing import check_layer
        >>> M = sl.Monarch.random(8, 8, nblocks=2, rng=0)
        >>> check_layer(M, frameworks=["torch"])  # also "jax"; by default both, if installed
        ('torch',)
        >>> check_layer("lowrank", 12, 6, rank=2, frameworks=["torch"])
        ('torch',)
    """
    if frameworks is None:
        frameworks = tuple(f for f in ("torch", "jax") if importlib.util.find_spec(f))
        if not frameworks:
            raise ImportError("check_layer needs PyTorch or JAX (the layers' frameworks)")
    if isinstance(source, str):
        if in_features is None or out_features is None:
            raise TypeError("check_layer of a structure name needs in_features and out_features")
    elif not isinstance(source, sl.LinearOperator):
        raise TypeError(
            f"check_layer needs an operator or a structure name, got {type(source).__name__}"
        )
    elif spec or in_features is not None or out_features is not None:
        raise TypeError("check_layer of an operator takes no sizes or structure options")
    rng = np.random.default_rng(seed)
    for framework in frameworks:
        check = {"torch": _check_torch_layer, "jax": _check_jax_layer}.get(framework)
        if check is None:
            raise ValueError(f"unknown framework {framework!r}; choose 'torch' or 'jax'")
        for layer, what in _layers(framework, source, in_features, out_features, seed, spec):
            check(layer, f"{framework} {what}", rng, rtol)
    return tuple(frameworks)


def _layers(
    framework: str, source: Any, d_in: int | None, d_out: int | None, seed: int, spec: dict
) -> Iterable[tuple[Any, str]]:
    """The layers of `source` to check in `framework`, each with a description."""
    if framework == "torch":
        import torch

        import structlin.nn as snn

        if isinstance(source, str):
            torch.manual_seed(seed)
            for weight_norm in (False, True):
                layer = snn.Linear(d_in, d_out, source, weight_norm=weight_norm, **spec)
                with torch.no_grad():
                    layer.bias.normal_()
                yield layer, f"Linear({d_in}, {d_out}, {source!r}, weight_norm={weight_norm})"
            return
        make = snn.Linear.from_operator
        dtype: Any = torch.float32
    else:
        import jax
        import jax.numpy as jnp

        from structlin.nn import jax as jnn

        if isinstance(source, str):
            for weight_norm in (False, True):
                layer = jnn.Linear.init(seed, d_in, d_out, source, weight_norm=weight_norm, **spec)
                bias = jax.random.normal(jax.random.key(seed), (d_out,), jnp.float32)
                layer = jnn.Linear.from_operator(
                    layer.operator, bias, weight_norm=weight_norm, dtype=jnp.float32
                )
                yield layer, f"Linear.init({d_in}, {d_out}, {source!r}, weight_norm={weight_norm})"
            return
        make = jnn.Linear.from_operator
        dtype = jnp.float32
    m = source.shape[0]
    bias = np.random.default_rng(seed).standard_normal(m).astype(np.float32)
    for weight_norm in (False, True):
        for b in (False, bias):
            layer = make(source, b, weight_norm=weight_norm, dtype=dtype)
            described = "with a bias" if b is not False else "without a bias"
            yield (
                layer,
                f"from_operator({type(source).__name__}, {described}, weight_norm={weight_norm})",
            )


def _dense_weight(layer: Any) -> np.ndarray:
    return to_numpy(sl.to_dense(layer.operator)).astype(np.float64)


def _check_torch_layer(layer: Any, what: str, rng: np.random.Generator, rtol: float) -> None:
    import torch

    W = _dense_weight(layer)
    b = 0.0 if layer.bias is None else to_numpy(layer.bias).astype(np.float64)
    x = rng.standard_normal((2, 3, layer.in_features))
    tx = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    y = layer(tx)
    expected = x.astype(np.float32).astype(np.float64) @ W.T + b
    assert_close(y, expected, rtol, f"{what}: output")
    y.sum().backward()
    assert_close(tx.grad, np.broadcast_to(W.sum(axis=0), x.shape), rtol, f"{what}: x.grad")
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, f"{what}: no gradient reaches {name}"
        assert bool(torch.isfinite(parameter.grad).all()), f"{what}: {name}.grad is not finite"


def _check_jax_layer(layer: Any, what: str, rng: np.random.Generator, rtol: float) -> None:
    import jax
    import jax.numpy as jnp

    W = _dense_weight(layer)
    b = 0.0 if layer.bias is None else to_numpy(layer.bias).astype(np.float64)
    x = rng.standard_normal((2, 3, layer.in_features))
    jx = jnp.asarray(x, jnp.float32)
    expected = x.astype(np.float32).astype(np.float64) @ W.T + b
    assert_close(layer(jx), expected, rtol, f"{what}: output")
    assert_close(
        jax.jit(lambda module, v: module(v))(layer, jx), expected, rtol, f"{what}: jit output"
    )
    grad_x = jax.grad(lambda v: layer(v).sum())(jx)
    assert_close(grad_x, np.broadcast_to(W.sum(axis=0), x.shape), rtol, f"{what}: grad wrt x")
    grads = jax.grad(lambda module: module(jx).sum(), allow_int=True)(layer)
    for leaf in jax.tree_util.tree_leaves(grads):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            assert bool(jnp.isfinite(leaf).all()), f"{what}: a leaf's gradient is not finite"


# -- the checks of check_case ----------------------------------------------------------------
def _check_transposes(A, D, arr, x, y, rtol, structured) -> None:
    for name, At, Dt in (("A.T", A.T, D.T), ("A.H", A.H, D.conj().T)):
        if structured and isinstance(At, sl.Transpose | sl.Adjoint):
            rule = "transpose" if name == "A.T" else "adjoint"
            raise AssertionError(
                f"{name} is not structured: it is a lazy {type(At).__name__} of "
                f"{type(A).__name__}, which builds the dense matrix on every use; register "
                f"`@structlin.rules.dispatch def {rule}(A: {type(A).__name__})` (or pass "
                "structured_transpose=False)"
            )
        assert At.shape == Dt.shape, f"{name}.shape {At.shape} != {Dt.shape}"
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


def _check_pytree(A, D, backend, dtype, rtol) -> None:
    leaves, treedef = sl.pytree.tree_flatten(A)
    B = sl.pytree.tree_unflatten(treedef, leaves)
    assert type(B) is type(A), f"pytree round trip: {type(B).__name__} != {type(A).__name__}"
    assert_close(B.to_dense(), D, rtol, "pytree round trip")
    if dtype == "float64":
        lowered = A.to(backends.get_backend(backend).canonical_dtype("float32"))
        assert str(lowered.dtype).replace("torch.", "") == "float32", (
            f"to(float32): {lowered.dtype}"
        )
        assert_close(lowered.to_dense(), D, 2e-4, "to(float32)")


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
    if dtype.startswith("complex"):
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


def _check_torch(A, D, arr, x, y, dtype, rtol, compile_) -> None:
    import torch

    if compile_:
        _check_torch_compile(A, D, arr, x, y, rtol)
    if dtype.startswith("complex"):
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


def _check_torch_compile(A, D, arr, x, y, rtol) -> None:
    """`A @ x` and `x @ A` under `torch.compile` (the eager backend: tracing is what is
    checked; code generation is PyTorch's)."""
    import torch

    left = torch.compile(lambda v: A @ v, backend="eager")
    right = torch.compile(lambda v: v @ A, backend="eager")
    assert_close(left(arr(x)), D @ x, rtol, "torch.compile(A @ x)")
    assert_close(right(arr(y)), y @ D, rtol, "torch.compile(y @ A)")
