"""Adversarial inputs over the public API (issue 18): a right answer or a clear error.

For every drawn operator (each structure and each expression node), operand kind
(shape, dtype, device, array subclass, memory layout, non-finite values) and call,
on NumPy, PyTorch and JAX, the result equals the dense NumPy reference (float64 or
complex128, from the same values), or the call raises `ValueError`, `TypeError` or
`structlin.SingularOperatorError` whose message names the offending argument (a
keyword of the drawn bad input appears in it). Any other exception, a hang or a
mismatch fails.

Three parts:

- `test_operand`: hypothesis draws an operator, a call and an operand of one *class*
  of input (one test per backend and class, so a class can be marked as known to
  fail, and be run, on its own);
- `test_probe`: one named probe per item of the issue that is not an operand (sizes,
  keywords, dtypes of operators, pickling, layers, ...);
- `test_isolated`: factorisations of non-finite input, which can spin inside LAPACK where
  no signal reaches them, run in a child process under a timeout.

The draws are derandomised (no example database), so CI sees the same cases on
every run; `STRUCTLIN_EXAMPLES` scales the number of draws for a deeper local sweep.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import structlin as sl
from conformance import to_backend, to_numpy
from structlin.structure import registered_structures

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None
BACKENDS = ["numpy"] + (["torch"] if HAS_TORCH else []) + (["jax"] if HAS_JAX else [])
ALLOWED = (ValueError, TypeError, sl.SingularOperatorError)


def scale(n: int) -> int:
    return max(1, round(n * float(os.environ.get("STRUCTLIN_EXAMPLES", "1"))))


def drawn(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """hypothesis settings of the drawn tests: derandomised, no example database, and no
    shrinking (a failure reports its first counterexample as drawn; shrinking would cost
    most of the module's time)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
    )


# -- operators ------------------------------------------------------------------------------
def _wc(rng: np.random.Generator, *shape: int, complex_: bool = False) -> np.ndarray:
    """Well-conditioned square matrices (last two axes): `I + 0.3 G / sqrt(n)`."""
    n = shape[-1]
    g = rng.standard_normal(shape)
    if complex_:
        g = g + 1j * rng.standard_normal(shape)
    return np.broadcast_to(np.eye(n), shape) + 0.3 * g / np.sqrt(n)


def _normal(rng: np.random.Generator, *shape: int, complex_: bool = False) -> np.ndarray:
    g = rng.standard_normal(shape)
    return g + 1j * rng.standard_normal(shape) if complex_ else g


def _signed(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2, n)


def _btt(rng: np.random.Generator, c: bool) -> sl.LinearOperator:
    W = _wc(rng, 4, 4, complex_=c)
    return sl.project(W, sl.BTT, ms=(2, 2), ns=(2, 2), ranks=(2,))


# Each builder takes (rng, complex) and returns a NumPy operator (float64 or complex128
# values). Square ones are 4 x 4; `dense_rect` is 3 x 4.
BUILDERS: dict[str, Callable[[np.random.Generator, bool], sl.LinearOperator]] = {
    "dense": lambda r, c: sl.Dense(_wc(r, 4, 4, complex_=c)),
    "dense_rect": lambda r, c: sl.Dense(_normal(r, 3, 4, complex_=c)),
    "identity": lambda r, c: sl.Identity(4, dtype=np.complex128 if c else np.float64),
    "diagonal": lambda r, c: sl.Diagonal(_signed(r, 4) * (1 + 0.5j if c else 1)),
    "permutation": lambda r, c: sl.Permutation(
        r.permutation(4), dtype=np.complex128 if c else np.float64
    ),
    "blockdiag": lambda r, c: sl.BlockDiag(_wc(r, 2, 2, 2, complex_=c)),
    "kron": lambda r, c: sl.Kron(_wc(r, 2, 2, complex_=c), _wc(r, 2, 2, complex_=c)),
    "lowrank": lambda r, c: sl.LowRank(_normal(r, 4, 2, complex_=c), _normal(r, 2, 4, complex_=c)),
    "monarch": lambda r, c: sl.Monarch(_wc(r, 2, 2, 2, complex_=c), _wc(r, 2, 2, 2, complex_=c)),
    "tt": lambda r, c: sl.TT(
        np.eye(2)[None, :, :, None] * np.ones((1, 2, 2, 2))
        + 0.3 * _normal(r, 1, 2, 2, 2, complex_=c),
        np.eye(2)[None, :, :, None] * np.ones((2, 2, 2, 1))
        + 0.3 * _normal(r, 2, 2, 2, 1, complex_=c),
    ),
    "btt": _btt,
    "sum": lambda r, c: sl.Dense(_wc(r, 4, 4, complex_=c)) + sl.Diagonal(r.uniform(0.5, 1, 4)),
    "product": lambda r, c: (
        sl.Dense(_wc(r, 4, 4, complex_=c)) @ sl.Kron(_wc(r, 2, 2), _wc(r, 2, 2))
    ),
    "scalarmul": lambda r, c: (2.5 - (1j if c else 0)) * sl.Dense(_wc(r, 4, 4, complex_=c)),
    "transpose": lambda r, c: sl.Transpose(sl.Dense(_wc(r, 4, 4, complex_=c))),
    "adjoint": lambda r, c: sl.Adjoint(sl.Dense(_wc(r, 4, 4, complex_=c))),
    "inverse": lambda r, c: sl.Inverse(
        sl.Dense(_wc(r, 4, 4, complex_=c)) + sl.Diagonal(r.uniform(0.5, 1, 4))
    ),
}
STRUCTURES = sorted(BUILDERS)
OP_DTYPES = ["float32", "float64", "complex128"]


@dataclass
class Case:
    name: str
    op: Any  # on the drawn backend and dtype
    ref: np.ndarray  # float64 / complex128, from the same values
    dtype: str
    backend: str


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def backend_dtype(backend: str, name: str) -> Any:
    if backend == "torch":
        return _torch_dtype(name)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.dtype(name)
    return np.dtype(name)


def build(name: str, backend: str, dtype: str, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    base = BUILDERS[name](rng, dtype.startswith("complex"))
    # Round through the target dtype so that the reference uses the operator's own values.
    op_np = sl.to(base, dtype=np.dtype(dtype))
    ref = to_numpy(sl.to_dense(op_np)).astype(np.complex128 if "complex" in dtype else np.float64)
    op = op_np if backend == "numpy" else sl.to(op_np, backend=backend)
    return Case(name, op, ref, dtype, backend)


def rtol(*dtypes: str) -> float:
    worst = {"float16": 3e-2, "bfloat16": 5e-2, "float32": 3e-4}
    return max([worst.get(d, 1e-9) for d in dtypes])


def assert_close(actual: Any, expected: np.ndarray, tol: float, what: str) -> None:
    assert not isinstance(actual, np.matrix), f"{what}: returned an np.matrix"
    assert not isinstance(actual, np.ma.MaskedArray), f"{what}: returned a masked array"
    a = to_numpy(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != expected {expected.shape}"
    err = np.linalg.norm(a.astype(np.complex128) - expected)
    bound = tol * (np.linalg.norm(expected) + 1)
    assert err <= bound, f"{what}: error {err:.3e} > {bound:.3e}"


def expect_error(call: Callable[[], Any], keywords: tuple[str, ...], what: str) -> BaseException:
    """`call()` raises an allowed exception whose message contains one of `keywords`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning (ComplexWarning, ...) is no error message
        result, err = run_call(call, what)
    if err is None:
        raise AssertionError(f"{what}: no error, returned {type(result).__name__} {result!r:.200}")
    assert_names(err, keywords, what)
    return err


_expect_error = expect_error


def assert_names(err: BaseException, keywords: tuple[str, ...], what: str) -> None:
    message = str(err).lower()
    assert any(k.lower() in message for k in keywords), (
        f"{what}: {type(err).__name__} does not name the problem (none of {keywords}): {err}"
    )


def answer_or_error(
    call: Callable[[], Any], keywords: tuple[str, ...], what: str
) -> tuple[Any, bool]:
    """`(result, True)`, or `(None, False)` when `call()` raised a clear error naming a keyword."""
    result, err = run_call(call, what)
    if err is not None:
        assert_names(err, keywords, what)
        return None, False
    return result, True


def run_call(call: Callable[[], Any], what: str) -> tuple[Any, BaseException | None]:
    """Run `call`; an exception outside `ALLOWED` fails, an allowed one is returned."""
    try:
        return call(), None
    except ALLOWED as e:
        return None, e
    except Exception as e:  # any other type is a crash from inside a library
        raise AssertionError(f"{what}: unexpected {type(e).__name__}: {e}") from e


# -- operands --------------------------------------------------------------------------------
CALLS_X = ["A @ x", "x @ A", "sl.matmat", "sl.rmatmat", "sl.solve", "inv(A) @ x"]


def _apply(call: str, A: Any, x: Any) -> Any:
    if call == "A @ x":
        return A @ x
    if call == "x @ A":
        return x @ A
    if call == "sl.matmat":
        return sl.matmat(A, x)
    if call == "sl.rmatmat":
        return sl.rmatmat(x, A)
    if call == "sl.solve":
        return sl.solve(A, x)
    if call == "inv(A) @ x":
        return sl.inv(A) @ x
    raise AssertionError(call)


def _reference(call: str, ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    if call in ("A @ x", "sl.matmat"):
        return ref @ x
    if call in ("x @ A", "sl.rmatmat"):
        return x @ ref
    return np.linalg.solve(ref, x) if x.ndim == 2 else np.linalg.solve(ref, x[:, None])[:, 0]


def _operand_shape(call: str, A_shape: tuple[int, int], batched: bool) -> tuple[int, ...]:
    left = call not in ("x @ A", "sl.rmatmat")
    n = A_shape[1] if left else A_shape[0]
    if left:
        return (n, 3) if batched else (n,)
    return (2, 3, n) if batched else (n,)


def _calls_for(case: Case) -> list[str]:
    square = case.ref.shape[0] == case.ref.shape[1]
    return CALLS_X if square else CALLS_X[:4]


def _singular(ref: np.ndarray) -> bool:
    return np.linalg.cond(ref) > 1e8


CLASSES = [
    "good",
    "layout",
    "promote",
    "shape",
    "int_dtype",
    "float16",
    "nonfinite",
    "nonfinite_solve",
    "backend",
    "matrix",
    "masked",
    "subclass",
    "meta_device",
    "meta_operator",
]
ONLY = {
    "layout": ("numpy", "torch"),
    "matrix": ("numpy",),
    "masked": ("numpy",),
    "subclass": ("numpy",),
    "meta_device": ("torch",),
    "meta_operator": ("torch",),
}


class Sub(np.ndarray):
    """A plain ndarray subclass with nothing overridden."""


def _layout(x: np.ndarray, kind: str, backend: str) -> Any:
    """`x`'s values in an unusual memory layout (the same values)."""
    if backend == "torch":
        import torch

        t = torch.as_tensor(np.array(x))
        if kind == "transposed" and x.ndim >= 2:
            return t.transpose(-1, -2).contiguous().transpose(-1, -2)
        if kind == "negative":
            return torch.as_tensor(np.array(x[..., ::-1])).flip(-1)  # torch has no negative strides
        big = torch.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]
    if kind == "transposed" and x.ndim >= 2:
        return np.asfortranarray(x)
    if kind == "negative":
        return np.array(x[..., ::-1])[..., ::-1]
    big = np.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)
    big[..., ::2] = x
    return big[..., ::2]


@st.composite
def operand_cases(draw: Any, backend: str, klass: str) -> tuple[Case, str, Any, Any, str]:
    """(case, call, operand, expected (or keywords), note) for one class of operand."""
    structures = STRUCTURES
    if klass in ("meta_device", "meta_operator", "matrix", "masked"):
        structures = ["dense", "diagonal", "kron", "monarch", "blockdiag", "lowrank", "sum"]
    if klass == "nonfinite":  # applying an Inverse solves: that is "nonfinite_solve"
        structures = [s for s in STRUCTURES if s != "inverse"]
    if klass == "nonfinite_solve":
        structures = [s for s in STRUCTURES if s != "dense_rect"]
    name = draw(st.sampled_from(structures))
    op_dtype = draw(st.sampled_from(["float64"] if klass == "promote" else OP_DTYPES))
    if klass in ("matrix", "masked", "subclass", "meta_operator", "float16", "promote"):
        op_dtype = (
            "float64" if klass != "float16" else draw(st.sampled_from(["float32", "float64"]))
        )
    case = build(name, backend, op_dtype, draw(st.integers(0, 2**16)))
    calls = _calls_for(case)
    if klass.startswith("nonfinite"):
        solves = ("sl.solve", "inv(A) @ x")
        if name != "inverse":
            calls = [c for c in calls if (c in solves) == (klass == "nonfinite_solve")]
    call = draw(st.sampled_from(calls))
    batched = draw(st.booleans())
    shape = _operand_shape(call, case.ref.shape, batched)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape)
    if "complex" in op_dtype:
        x = x + 1j * rng.standard_normal(shape)
    x = x.astype(op_dtype)
    return case, call, x, batched, draw(st.sampled_from(["transposed", "negative", "strided"]))


def _check_result(case: Case, call: str, x_np: np.ndarray, fn: Callable[[], Any], tol: float):
    what = f"{case.backend} {case.name}[{case.dtype}] {call} x{x_np.shape}[{x_np.dtype}]"
    result, err = run_call(fn, what)
    if err is not None:
        if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
            assert isinstance(err, sl.SingularOperatorError) or "singular" in str(err).lower(), (
                f"{what}: singular operator, but {type(err).__name__}: {err}"
            )
            return
        raise AssertionError(f"{what}: a valid call raised {type(err).__name__}: {err}")
    if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
        return  # a pseudo-solution of a singular system is not compared
    assert_close(result, _reference(call, case.ref, x_np.astype(np.complex128)), tol, what)


def _operand_test(backend: str, klass: str) -> Callable[..., None]:
    @drawn(max_examples=scale(6 if backend == "jax" else 12))
    @given(data=operand_cases(backend, klass), extra=st.data())
    def run(data: Any, extra: Any) -> None:
        case, call, x, _, layout = data
        check_operand(case, call, x, klass, layout, extra)

    return run


def check_operand(case: Case, call: str, x: np.ndarray, klass: str, layout: str, extra: Any):
    backend = case.backend
    A = case.op
    tol = rtol(case.dtype, x.dtype.name)
    what = f"{backend} {case.name}[{case.dtype}] {call} ({klass})"

    def expect_error(call_: Callable[[], Any], keywords: tuple[str, ...], what: str) -> Any:
        # solve and inv may refuse a singular operator before they look at the operand.
        if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
            keywords = (*keywords, "singular")
        return _expect_error(call_, keywords, what)

    if klass == "good":
        return _check_result(case, call, x, lambda: _apply(call, A, to_backend(x, backend)), tol)
    if klass == "layout":
        X = _layout(x, layout, backend)
        return _check_result(case, call, x, lambda: _apply(call, A, X), tol)
    if klass == "promote":  # a float64 operator and a float32 or complex operand
        target = extra.draw(st.sampled_from(["float32", "complex128"]))
        xt = (x + (1j * x[::-1] if target == "complex128" else 0)).astype(target)
        tol = rtol("float32") if target == "float32" else tol
        return _check_result(case, call, xt, lambda: _apply(call, A, to_backend(xt, backend)), tol)
    if klass == "shape":
        bad = extra.draw(st.sampled_from(["short", "long", "3d", "0d"]))
        if bad == "short":
            xb = x[..., :-1] if call in ("x @ A", "sl.rmatmat") else x[:-1]
        elif bad == "long":
            xb = np.concatenate([x, x], axis=-1 if call in ("x @ A", "sl.rmatmat") else 0)
        elif bad == "3d":
            if call in ("x @ A", "sl.rmatmat"):
                return None  # batch axes are legal on the right
            xb = np.stack([x, x], axis=-1) if x.ndim == 2 else x[:, None, None]
        else:
            xb = np.asarray(x.reshape(-1)[0])
        expect_error(lambda: _apply(call, A, to_backend(xb, backend)), ("shape",), what)
        return None
    if klass == "int_dtype":
        dt = extra.draw(st.sampled_from(["int64", "int32", "bool", "uint8"]))
        xi = (np.abs(x.real) * 3).astype(dt)
        expect_error(lambda: _apply(call, A, to_backend(xi, backend)), ("dtype",), what)
        return None
    if klass == "float16":
        dt = extra.draw(st.sampled_from(["float16"] + (["bfloat16"] if backend != "numpy" else [])))
        if dt == "bfloat16":
            xr = x.real
            X = to_backend(xr, backend)
            X = (
                X.to(_torch_dtype(dt))
                if backend == "torch"
                else X.astype(backend_dtype(backend, dt))
            )
            x_ref = to_numpy(X.float() if backend == "torch" else X.astype(np.float32))
        else:
            X = to_backend(x.real.astype(np.float16), backend)
            x_ref = x.real.astype(np.float16)
        sub = Case(case.name, A, case.ref, case.dtype, backend)
        result, err = run_call(lambda: _apply(call, A, X), what)
        if err is not None:
            if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
                return None
            assert dt in str(err) or "dtype" in str(err), f"{what}: {err}"
            return None
        if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
            return None
        assert_close(result, _reference(call, sub.ref, x_ref.astype(np.float64)), rtol(dt), what)
        return None
    if klass.startswith("nonfinite"):
        value = extra.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        xn = x.copy()
        xn.reshape(-1)[0] = value
        result, err = run_call(lambda: _apply(call, A, to_backend(xn, backend)), what)
        if err is not None:
            if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
                return None
            assert "finite" in str(err) or "nan" in str(err).lower() or "inf" in str(err), (
                f"{what}: {type(err).__name__} does not name the non-finite value: {err}"
            )
            return None
        expected = _reference(call, case.ref, xn.astype(np.complex128))
        assert to_numpy(result).shape == expected.shape, f"{what}: shape"
        return None
    if klass == "backend":
        other = extra.draw(st.sampled_from([b for b in BACKENDS if b != backend] or [backend]))
        if other == backend:
            return None
        xo = to_backend(x, other)
        if backend == "numpy" and other == "jax":
            # jax arrays read as NumPy arrays through __array__; a NumPy operator may accept
            # one, but then the answer must be right.
            keywords = ("jax", "numpy", "backend")
            if call in ("sl.solve", "inv(A) @ x") and _singular(case.ref):
                keywords = (*keywords, "singular")
            result, answered = answer_or_error(lambda: _apply(call, A, xo), keywords, what)
            if answered and not (call in ("sl.solve", "inv(A) @ x") and _singular(case.ref)):
                assert_close(result, _reference(call, case.ref, x.astype(np.complex128)), tol, what)
            return None
        expect_error(lambda: _apply(call, A, xo), (other, backend, "backend"), what)
        return None
    if klass == "matrix":
        if x.ndim == 1:
            x2 = x[None, :] if call in ("x @ A", "sl.rmatmat") else x[:, None]
        else:
            x2 = x.reshape(-1, x.shape[-1])
        xm = np.asmatrix(x2)
        x_ref = np.asarray(xm)
        singular = call in ("sl.solve", "inv(A) @ x") and _singular(case.ref)
        keywords = ("matrix", "singular") if singular else ("matrix",)
        result, answered = answer_or_error(lambda: _apply(call, A, xm), keywords, what)
        if answered and not singular:
            assert_close(result, _reference(call, case.ref, x_ref.astype(np.complex128)), tol, what)
        return None
    if klass == "masked":
        mask = np.zeros(x.shape, bool)
        mask.reshape(-1)[0] = True
        xm = np.ma.masked_array(x, mask=mask)
        expect_error(lambda: _apply(call, A, xm), ("mask",), what)
        return None
    if klass == "subclass":
        xs = x.view(Sub)
        return _check_result(case, call, x, lambda: _apply(call, A, xs), tol)
    if klass == "meta_device":
        import torch

        xm = torch.empty(x.shape, dtype=_torch_dtype(x.dtype.name), device="meta")
        expect_error(lambda: _apply(call, A, xm), ("meta",), what)
        return None
    if klass == "meta_operator":
        import torch

        if call in ("sl.solve", "inv(A) @ x"):
            return None  # no factorisation on the meta device
        Am = sl.to(A, device="meta")
        xm = torch.empty(x.shape, dtype=_torch_dtype(x.dtype.name), device="meta")
        result, err = run_call(lambda: _apply(call, Am, xm), what)
        if err is not None:
            assert "meta" in str(err), f"{what}: {err}"
            return None
        expected = _reference(call, case.ref, x.astype(np.complex128)).shape
        assert result.device.type == "meta", f"{what}: result on {result.device}"
        assert tuple(result.shape) == expected, f"{what}: shape {tuple(result.shape)}"
        return None
    raise AssertionError(klass)


OPERAND_PARAMS = [
    pytest.param(b, k, id=f"{b}-{k}")
    for k in CLASSES
    for b in BACKENDS
    if b in ONLY.get(k, BACKENDS)
]


@pytest.mark.parametrize(("backend", "klass"), OPERAND_PARAMS)
def test_operand(backend: str, klass: str) -> None:
    _operand_test(backend, klass)()


# -- operator-level calls (no operand) --------------------------------------------------------
def _op_calls_test(backend: str) -> Callable[..., None]:
    @drawn(max_examples=scale(8 if backend == "jax" else 20))
    @given(
        name=st.sampled_from(STRUCTURES),
        dtype=st.sampled_from(OP_DTYPES),
        seed=st.integers(0, 2**16),
        call=st.sampled_from(
            ["to_dense", "T", "H", "diag", "trace", "slogdet", "logdet", "inv", "to", "neg"]
        ),
    )
    def run(name: str, dtype: str, seed: int, call: str) -> None:
        case = build(name, backend, dtype, seed)
        A, ref, tol = case.op, case.ref, rtol(dtype)
        what = f"{backend} {name}[{dtype}] {call}"
        square = ref.shape[0] == ref.shape[1]
        if call == "to_dense":
            return assert_close(sl.to_dense(A), ref, tol, what)
        if call == "T":
            return assert_close(sl.to_dense(A.T), ref.T, tol, what)
        if call == "H":
            return assert_close(sl.to_dense(A.H), ref.conj().T, tol, what)
        if call == "neg":
            return assert_close(sl.to_dense(-A + A - A), -ref, tol, what)
        if call == "to":
            target = "complex128" if "complex" in dtype else "float32"
            B = A.to(dtype=backend_dtype(backend, target))
            return assert_close(sl.to_dense(B), ref, rtol(target), what)
        if call == "diag":  # A[i, i] for i < min(m, n), as documented
            return assert_close(sl.diag(A), np.diagonal(ref).copy(), tol, what)
        if not square:
            expect_error(lambda: getattr(sl, call)(A), ("square",), what)
            return None
        if call == "trace":
            return assert_close(sl.trace(A), np.asarray(np.trace(ref)), tol, what)
        singular = _singular(ref)
        if call == "inv":
            if singular:
                expect_error(lambda: sl.to_dense(sl.inv(A)), ("singular",), what)
                return None
            cond = np.linalg.cond(ref)
            return assert_close(sl.to_dense(sl.inv(A)), np.linalg.inv(ref), tol * cond, what)
        sign, logabs = np.linalg.slogdet(ref)
        if singular:  # structurally singular (LowRank): sign 0 and -inf, or a tiny determinant
            la = sl.slogdet(A)[1] if call == "slogdet" else sl.logdet(A)
            bound = (logabs if np.isfinite(logabs) else -30.0) + 10
            assert np.real(to_numpy(la)) < bound, f"{what}: {la} for a singular operator"
            return None
        if call == "slogdet":
            s, la = sl.slogdet(A)
            assert_close(s, np.asarray(sign), tol * 10, what + " sign")
            return assert_close(la, np.asarray(logabs), tol * 10, what + " logabsdet")
        # logdet: complex log for a complex operator; a real one with det <= 0 is the probe
        # "logdet of a negative determinant".
        if "complex" not in dtype and sign <= 0:
            return None
        expected = np.log(sign) + logabs if "complex" in dtype else np.asarray(logabs)
        return assert_close(sl.logdet(A), np.asarray(expected), tol * 10, what)

    return run


@pytest.mark.parametrize("backend", BACKENDS)
def test_operator_calls(backend: str) -> None:
    _op_calls_test(backend)()


# -- named probes -----------------------------------------------------------------------------
PROBES: dict[str, Callable[[], None]] = {}


def probe(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        PROBES[name] = fn
        return fn

    return register


def _torch() -> Any:
    return pytest.importorskip("torch")


def _jnp() -> Any:
    pytest.importorskip("jax")
    import jax.numpy as jnp

    return jnp


# sizes
@probe("size: non-integer Monarch shape")
def _() -> None:
    b = np.ones((2, 2, 2))
    expect_error(lambda: sl.Monarch(b, b, shape=(3.5, 4)), ("3.5", "integer"), "Monarch shape")


@probe("size: Identity(True)")
def _() -> None:
    expect_error(lambda: sl.Identity(True), ("True", "integer", "bool"), "Identity(True)")


@probe("size: Identity(2.5)")
def _() -> None:
    expect_error(lambda: sl.Identity(2.5), ("2.5", "integer"), "Identity(2.5)")


@probe("size: nblocks > min(d_in, d_out) in Monarch.layout")
def _() -> None:
    W = np.random.default_rng(0).standard_normal((4, 8))
    M = sl.project(W, sl.Monarch, nblocks=8)
    assert sl.to_dense(M).shape == (4, 8)


@probe("size: nblocks > min(d_in, d_out) in snn.Linear")
def _() -> None:
    _torch()
    import structlin.nn as snn

    layer = snn.Linear(8, 4, "monarch", nblocks=8)
    import torch

    assert layer(torch.ones(2, 8)).shape == (2, 4)


@probe("size: non-integer sizes of dft and hadamard")
def _() -> None:
    expect_error(lambda: sl.dft(4.0), ("dft: n",), "dft(4.0)")
    expect_error(lambda: sl.dft(4, factors=(2.0, 2)), ("factors",), "dft factors (2.0, 2)")
    expect_error(lambda: sl.hadamard(4.0), ("hadamard: n",), "hadamard(4.0)")


@probe("size: non-integer sizes of Monarch layouts and permutations")
def _() -> None:
    b = np.ones((2, 2, 2))
    expect_error(
        lambda: sl.Monarch.layout(16, 16, 4.0), ("nblocks",), "Monarch.layout(nblocks=4.0)"
    )
    expect_error(lambda: sl.StridePermutation(2.0, 2), ("rows",), "StridePermutation(2.0, 2)")
    expect_error(
        lambda: sl.GeneralizedMonarch((b, b), perms=((2.0, 2), None, None)),
        ("perms",),
        "GeneralizedMonarch perms (2.0, 2)",
    )


@probe("size: non-integer sizes in project specs")
def _() -> None:
    W = np.random.default_rng(0).standard_normal((4, 4))
    for structure, spec, name in [
        (sl.LowRank, {"rank": 2.0}, "rank"),
        (sl.BlockDiag, {"nblocks": 2.0}, "nblocks"),
        (sl.Kron, {"factor_shapes": ((2.0, 2), (2, 2))}, "factor_shapes"),
        (sl.Monarch, {"blocks": ((2, 2, 2.0), (2, 2, 2))}, "blocks"),
        (sl.TT, {"ms": (2.0, 2), "ns": (2, 2), "ranks": (2,)}, "ms"),
    ]:
        expect_error(
            lambda s=structure, k=spec: sl.project(W, s, **k),
            (name,),
            f"project(W, {structure.__name__}, {spec})",
        )


# dtypes of operators
@probe("dtype: Identity(int64)")
def _() -> None:
    expect_error(lambda: sl.Identity(4, dtype=np.int64), ("int64", "dtype"), "Identity int")


@probe("dtype: Permutation(dtype=int64)")
def _() -> None:
    expect_error(
        lambda: sl.Permutation(np.array([1, 0]), dtype=np.int64), ("int64", "dtype"), "Permutation"
    )


@probe("dtype: integer dtypes of hadamard and Permutation indices")
def _() -> None:
    # The error names the argument of the call made, not an operator built inside it.
    expect_error(lambda: sl.hadamard(4, dtype=np.int64), ("hadamard: dtype",), "hadamard(int64)")
    expect_error(
        lambda: sl.Permutation(np.array([1.0, 0.0])), ("integer dtype",), "Permutation(float)"
    )
    expect_error(
        lambda: sl.Monarch.random(16, 16, 4, dtype=np.int64), ("random",), "Monarch.random(int64)"
    )


@probe("dtype: op.to(dtype=int64)")
def _() -> None:
    A = sl.Dense(np.eye(2))
    expect_error(lambda: A.to(dtype=np.int64), ("int64", "dtype"), "to(int64)")


@probe("dtype: torch op.to(dtype=int)")
def _() -> None:
    torch = _torch()
    A = sl.Dense(torch.eye(2))
    expect_error(lambda: A.to(dtype=torch.int32), ("int32", "dtype"), "to(int32)")


@probe("dtype: Dense of integers")
def _() -> None:
    expect_error(lambda: sl.Dense(np.eye(2, dtype=int)), ("dtype",), "Dense(int)")


@probe("dtype: complex operator to real")
def _() -> None:
    A = sl.Dense(np.eye(2) * (1 + 1j))
    expect_error(lambda: A.to(dtype=np.float64), ("complex",), "complex to float64")


@probe("dtype: Identity dtype is a dtype, not a scalar class")
def _() -> None:
    for op in (sl.Identity(3, dtype=np.float32), sl.Permutation(np.array([1, 0]), np.float32)):
        assert isinstance(op.dtype, np.dtype), f"{type(op).__name__}.dtype is {op.dtype!r}"


@probe("dtype: float16 slogdet/inv upcast or refuse")
def _() -> None:
    W = _wc(np.random.default_rng(1), 4, 4)
    for backend in BACKENDS:
        A = sl.to(sl.Dense(W), dtype=backend_dtype(backend, "float16"), backend=backend)
        for call in (sl.slogdet, sl.inv, sl.logdet):
            what = f"{backend} {call.__name__}(float16)"
            result, err = run_call(lambda call=call, A=A: call(A), what)
            if err is not None:
                assert "float16" in str(err), f"{what}: {err}"
                continue
            if call is sl.inv:
                assert_close(sl.to_dense(result), np.linalg.inv(W), 3e-2, what)
            elif call is sl.slogdet:
                assert_close(result[1], np.asarray(np.linalg.slogdet(W)[1]), 3e-2, what)


@probe("dtype: float16 project upcast or refuse")
def _() -> None:
    W = np.random.default_rng(2).standard_normal((4, 4))
    for backend in BACKENDS:
        Wb = to_backend(W, backend)
        Wh = Wb.half() if backend == "torch" else Wb.astype(backend_dtype(backend, "float16"))
        for structure, spec in [(sl.LowRank, {"rank": 2}), (sl.Monarch, {"nblocks": 2})]:
            what = f"{backend} project(float16, {structure.__name__})"
            answer_or_error(
                lambda s=structure, k=spec, W=Wh: sl.project(W, s, **k), ("float16",), what
            )


@probe("dtype: torch complex solve")
def _() -> None:
    torch = _torch()
    W = _wc(np.random.default_rng(3), 3, 3)
    b = np.arange(3) + 1j
    x = sl.solve(1j * sl.Dense(torch.as_tensor(W)), torch.as_tensor(b))
    assert_close(x, np.linalg.solve(1j * W, b), 1e-9, "torch complex solve")


@probe("dtype: torch results carry no conjugate bit")
def _() -> None:
    torch = _torch()
    A = sl.Dense(torch.as_tensor(_wc(np.random.default_rng(4), 3, 3, complex_=True)))
    for what, r in [
        ("H.to_dense", sl.to_dense(A.H)),
        ("H @ x", A.H @ torch.ones(3, dtype=torch.complex128)),
    ]:
        assert not r.is_conj(), f"{what} carries the conjugate bit"
        r.numpy()


@probe("dtype: uint8 torch Permutation indices")
def _() -> None:
    torch = _torch()
    p = torch.tensor([2, 0, 1], dtype=torch.uint8)
    P, answered = answer_or_error(
        lambda: sl.Permutation(p, dtype=torch.float64), ("uint8", "dtype"), "uint8 perm"
    )
    if answered:
        assert_close(
            P @ torch.eye(3, dtype=torch.float64), np.eye(3)[[2, 0, 1]], 1e-12, "uint8 perm"
        )


# array kinds held by operators
@probe("kind: Dense(np.matrix)")
def _() -> None:
    A, answered = answer_or_error(lambda: sl.Dense(np.matrix(np.eye(2))), ("matrix",), "Dense")
    if answered:
        assert_close(A @ np.array([1.0, 2.0]), np.array([1.0, 2.0]), 1e-12, "Dense(matrix) @ x")


@probe("kind: Dense(masked array)")
def _() -> None:
    a = np.ma.masked_array(np.eye(2), mask=[[False, True], [False, False]])
    expect_error(lambda: sl.Dense(a), ("mask",), "Dense(masked)")


@probe("kind: Diagonal(np.matrix)")
def _() -> None:
    D, answered = answer_or_error(
        lambda: sl.Diagonal(np.matrix([1.0, 2.0])), ("matrix", "1-D", "shape"), "Diagonal"
    )
    if answered:
        assert_close(sl.to_dense(D), np.diag([1.0, 2.0]), 1e-12, "Diagonal(matrix)")


@probe("kind: Permutation copies its indices")
def _() -> None:
    p = np.array([2, 0, 1])
    P = sl.Permutation(p)
    p[0] = 0
    assert_close(sl.to_dense(P), np.eye(3)[[2, 0, 1]], 0, "Permutation after p[0] = 0")


@probe("kind: aliasing: writes show through views, results never alias")
def _() -> None:
    # The policy of the operators guide: operators hold their arrays like views (a write
    # shows through, in a .T taken before it too), results are new arrays.
    a = _wc(np.random.default_rng(5), 3, 3)
    A = sl.Dense(a)
    T = A.T
    a[0, 1] += 1.0
    assert_close(sl.to_dense(A), a, 0, "Dense after a write to its array")
    assert_close(sl.to_dense(T), a.T, 0, ".T taken before a write to the array")
    dense = sl.to_dense(A)
    dense[0, 0] = -7.0
    assert a[0, 0] != -7.0, "to_dense returned the operator's own array"
    d = np.array([1.0, 2.0])
    r = sl.diag(sl.Diagonal(d))
    r[0] = -7.0
    assert d[0] == 1.0, "diag returned the operator's own array"


@probe("kind: Kron of Identities to_dense")
def _() -> None:
    K = sl.Kron(sl.Identity(2, dtype=np.float64), sl.Identity(2, dtype=np.float64))
    assert_close(sl.to_dense(K), np.eye(4), 0, "Kron(I, I)")


@probe("kind: Identity device is a device")
def _() -> None:
    torch = _torch()
    eye = sl.Identity(3, dtype=torch.float32, backend="torch")
    assert isinstance(eye.device, torch.device), f"device {eye.device!r}"
    moved = eye.to(device="cpu")
    assert isinstance(moved.device, torch.device), repr(moved.device)


@probe("kind: np.eye(2) + op")
def _() -> None:
    A = sl.Diagonal(np.array([1.0, 2.0]))
    r, answered = answer_or_error(lambda: np.eye(2) + A, ("Dense", "operator"), "eye + op")
    if answered:
        assert_close(
            sl.to_dense(r) if isinstance(r, sl.LinearOperator) else r,
            np.eye(2) + np.diag([1.0, 2.0]),
            1e-12,
            "eye + op",
        )


@probe("kind: sum([op1, op2])")
def _() -> None:
    A, B = sl.Dense(np.eye(2)), sl.Diagonal(np.array([1.0, 2.0]))
    assert_close(sl.to_dense(sum([A, B])), np.eye(2) + np.diag([1.0, 2.0]), 1e-12, "sum")


@probe("kind: backend_of(masked array)")
def _() -> None:
    a = np.ma.masked_array(np.eye(2), mask=[[False, True], [False, False]])
    expect_error(lambda: sl.backends.backend_of(a), ("mask",), "backend_of(masked)")


@probe("kind: op + number")
def _() -> None:
    A = sl.Diagonal(np.array([1.0, 2.0]))
    for what, f in [
        ("A + 1.0", lambda: A + 1.0),
        ("1.0 + A", lambda: 1.0 + A),
        ("A - 2", lambda: A - 2),
        ("2 - A", lambda: 2 - A),
    ]:
        expect_error(f, ("Identity",), what)


@probe("kind: devices of value-free and NumPy operators")
def _() -> None:
    expect_error(lambda: sl.Identity(3, device="cpu"), ("backend",), "Identity(device, no backend)")
    expect_error(lambda: sl.Identity(3, backend=5), ("backend",), "Identity(backend=5)")
    A = sl.Dense(np.eye(2))
    expect_error(lambda: A.to(device="cuda"), ("CPU",), "NumPy op.to(device='cuda')")


def _round_trips(backend: str) -> None:
    if backend != "numpy":
        pytest.importorskip(backend)
    if True:
        for name in STRUCTURES:
            case = build(name, backend, "float64", 0)
            for how, f in (
                ("pickle", lambda o: pickle.loads(pickle.dumps(o))),
                ("deepcopy", copy.deepcopy),
            ):
                _ = case.op.T  # populate cached properties first
                got = f(case.op)
                assert_close(sl.to_dense(got), case.ref, 1e-12, f"{backend} {name} {how}")


for _backend in BACKENDS:
    probe(f"kind: pickle and deepcopy round trips ({_backend})")(lambda b=_backend: _round_trips(b))


# non-finite values
@probe("nonfinite: logdet of a negative determinant")
def _() -> None:
    A = sl.Dense(np.diag([-1.0, 2.0]))
    expect_error(lambda: sl.logdet(A), ("slogdet",), "logdet(det < 0)")


# keywords
@probe("keyword: typo in project")
def _() -> None:
    W = np.ones((4, 4))
    e = expect_error(lambda: sl.project(W, sl.Monarch, nblock=4), ("nblock",), "project typo")
    assert "nblocks" in str(e), f"the message does not list the valid keywords: {e}"


@probe("keyword: block_shardings(op, None)")
def _() -> None:
    pytest.importorskip("jax")
    import jax.numpy as jnp

    op = sl.BlockDiag(jnp.ones((2, 2, 2)))
    expect_error(lambda: sl.block_shardings(op, None), ("mesh",), "block_shardings None")
    expect_error(lambda: sl.block_shardings(op, "data"), ("mesh",), "block_shardings str")


@probe("keyword: project without a required option")
def _() -> None:
    W = np.ones((4, 4))
    e = expect_error(lambda: sl.project(W, sl.LowRank), ("rank",), "project(W, LowRank)")
    assert "rank=" in str(e), f"the message does not name the option to pass: {e}"


@probe("keyword: block_shardings axis")
def _() -> None:
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    op = sl.BlockDiag(jnp.ones((2, 2, 2)))
    mesh = jax.make_mesh((1,), ("blocks",))
    for axis in (5, (), ("blocks", 3)):
        expect_error(
            lambda axis=axis: sl.block_shardings(op, mesh, axis=axis),
            ("axis must be",),
            f"block_shardings axis={axis!r}",
        )


@probe("keyword: project to a non-operator")
def _() -> None:
    expect_error(lambda: sl.project(np.ones((2, 2)), np.ndarray), ("structure",), "project")


# layers
def _layer() -> Any:
    _torch()
    import structlin.nn as snn

    return snn.Linear(16, 8, "monarch", nblocks=4)


LAYER_STRUCTURES = registered_structures()  # as registered at collection


@probe("layer: meta input on a CPU layer")
def _() -> None:
    torch = _torch()
    import structlin.nn as snn

    for structure in LAYER_STRUCTURES:
        layer = snn.Linear(16, 16, structure)
        x = torch.empty(2, 16, device="meta")
        expect_error(lambda layer=layer, x=x: layer(x), ("meta",), f"{structure} meta input")


@probe("layer: meta layer gives a meta output")
def _() -> None:
    torch = _torch()
    import structlin.nn as snn

    y = _layer().to("meta")(torch.empty(3, 16, device="meta"))
    assert y.device.type == "meta"
    assert y.shape == (3, 8)
    for structure in LAYER_STRUCTURES:
        with torch.device("meta"):
            layer = snn.Linear(16, 16, structure)
        y = layer(torch.empty(2, 5, 16, device="meta"))
        assert y.device.type == "meta", (structure, y.device)
        assert y.shape == (2, 5, 16), (structure, y.shape)


@probe("layer: dtype, 0-d and last-axis checks")
def _() -> None:
    torch = _torch()
    layer = _layer()
    for dt in (torch.float64, torch.bfloat16, torch.complex64, torch.int64, torch.bool):
        expect_error(lambda dt=dt: layer(torch.ones(2, 16, dtype=dt)), (str(dt),), f"layer {dt}")
        e = expect_error(lambda dt=dt: layer(torch.ones(2, 16, dtype=dt)), ("float32",), "")
        if dt.is_complex:  # the layer is real: no cast of either fixes it
            assert "x.real" in str(e), f"no fix named: {e}"
        else:
            assert "x.to(" in str(e), f"no fix named: {e}"
        if not dt.is_floating_point:  # a layer cannot hold integers or complex values
            assert "layer.to(" not in str(e), f"a wrong fix named: {e}"
    expect_error(lambda: layer(torch.tensor(1.0)), ("0-d",), "layer 0-d")
    expect_error(lambda: layer(torch.ones(2, 15)), ("in_features", "16"), "layer (2, 15)")
    expect_error(lambda: layer(np.ones((2, 16), np.float32)), ("Tensor",), "layer numpy")


@probe("layer: constructor options, sizes and dtype")
def _() -> None:
    torch = _torch()
    import structlin.nn as snn

    e = expect_error(lambda: snn.Linear(16, 8, "monarch", nblock=4), ("nblock",), "typo")
    assert "nblocks" in str(e), f"the message does not list the valid options: {e}"
    # Sizes that fit otherwise (a product of factors that matches; no Monarch.layout,
    # which checks d_in again), so that only the layer's own check can refuse them.
    for what, f, names in [
        ("d_in=16.0", lambda: snn.Linear(16.0, 8, "lowrank", rank=2), ("d_in",)),
        ("nblocks=4.0", lambda: snn.Linear(16, 8, "monarch", nblocks=4.0), ("nblocks",)),
        ("rank=2.5", lambda: snn.Linear(16, 8, "lowrank", rank=2.5), ("rank",)),
        (
            "kron factors",
            lambda: snn.Linear(16, 8, "kron", factors=((2.0, 4), (4, 4))),
            ("factors",),
        ),
        ("dtype=int64", lambda: snn.Linear(16, 8, "monarch", dtype=torch.int64), ("int64",)),
    ]:
        expect_error(f, names, f"snn.Linear({what})")


@probe("layer: autocast keeps working")
def _() -> None:
    torch = _torch()
    layer = _layer()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for dt in (torch.float32, torch.bfloat16):
            assert layer(torch.ones(2, 16, dtype=dt)).dtype == torch.bfloat16
        expect_error(lambda: layer(torch.ones(2, 16, dtype=torch.float64)), ("float64",), "")
        for dt in (torch.int64, torch.complex64):
            expect_error(lambda dt=dt: layer(torch.ones(2, 16, dtype=dt)), (str(dt),), "")


@probe("layer: the checks trace under torch.compile without a graph break")
def _() -> None:
    torch = _torch()
    layer = _layer()
    explained = torch._dynamo.explain(layer)(torch.ones(3, 16))
    assert explained.graph_break_count == 0, explained.break_reasons


@probe("layer: MonarchMixer device and dtype")
def _() -> None:
    torch = _torch()
    from structlin.nn import MonarchMixer

    mixer = MonarchMixer(16, max_len=8)
    expect_error(lambda: mixer(torch.empty(1, 4, 16, device="meta")), ("meta",), "mixer meta")
    expect_error(lambda: mixer(torch.ones(1, 4, 16, dtype=torch.float64)), ("float64",), "mixer")
    expect_error(lambda: mixer(torch.tensor(1.0)), ("0-d",), "mixer 0-d")


@probe("layer: JAX layers check inputs at trace time")
def _() -> None:
    jnp = _jnp()
    import jax

    from structlin.nn import jax as sjax

    layers = [sjax.Linear.init(jax.random.key(0), 16, 8, "monarch", nblocks=4)]
    if importlib.util.find_spec("flax") is not None:
        from flax import nnx

        from structlin.nn import nnx as snnx

        layers.append(snnx.Linear(16, 8, "monarch", nblocks=4, rngs=nnx.Rngs(0)))
    for layer in layers:
        for f in (layer, jax.jit(lambda x, layer=layer: layer(x))):
            e = expect_error(lambda f=f: f(jnp.ones((2, 16), jnp.complex64)), ("complex",), "")
            assert "x.real" in str(e), f"no fix named: {e}"
            expect_error(lambda f=f: f(jnp.ones((2, 16), jnp.int32)), ("int32",), "int")
            expect_error(lambda f=f: f(jnp.ones((2, 16), bool)), ("bool",), "bool")
            expect_error(lambda f=f: f(jnp.float32(1.0)), ("0-d",), "0-d")
            expect_error(lambda f=f: f(jnp.ones((2, 15))), ("in_features",), "(2, 15)")
            assert f(jnp.ones((2, 16), jnp.bfloat16)).shape == (2, 8)


@pytest.mark.parametrize("name", list(PROBES))
def test_probe(name: str) -> None:
    PROBES[name]()


# -- factorisations of non-finite input and huge sizes, in a child process under a timeout --------
# A LAPACK routine spinning on non-finite input cannot be interrupted by a signal, and a huge
# size must be refused before anything is allocated: these cases run in a child process (with
# a cap on its address space) that is killed when a case outlives its time.
PROJECT_SPECS = {
    "Dense": "",
    "Diagonal": "",
    "BlockDiag": "nblocks=2",
    "LowRank": "rank=2",
    "Kron": "factor_shapes=((2, 2), (2, 2))",
    "Monarch": "nblocks=2",
    "BTT": "ms=(2, 2), ns=(2, 2), ranks=(2,)",
    "TT": "ms=(2, 2), ns=(2, 2), ranks=(2,)",
}
ISOLATED_BACKENDS = [b for b in BACKENDS if b != "jax"]  # JAX's SVD returns NaN, it does not spin
HUGE = {
    "dft": "sl.to_dense(sl.dft(2**40))",
    "hadamard": "sl.to_dense(sl.hadamard(2**40))",
    "Identity": "sl.to_dense(sl.Identity(2**40))",
    "Kron": "sl.to_dense(sl.Kron(sl.Identity(2**20), sl.Identity(2**20)))",
    "random": "sl.Monarch.random(2**20, 2**20, nblocks=2)",
}


def _isolated_cases() -> dict[str, str]:
    """Case id -> the code the child runs (`W` is a 4 x 4 array holding the bad value)."""
    cases = {}
    for backend in ISOLATED_BACKENDS:
        for value in ("inf", "nan"):
            for structure, spec in PROJECT_SPECS.items():
                code = f"sl.project(W, sl.{structure}{', ' if spec else ''}{spec})"
                cases[f"project:{backend}:{structure}:{value}"] = code
            for call in ("solve(sl.Dense(W), W[:, 0])", "slogdet(sl.Dense(W))", "inv(sl.Dense(W))"):
                cases[f"{call.split('(')[0]}:{backend}:Dense:{value}"] = (
                    f"sl.to_dense(sl.{call})" if call.startswith("inv") else f"sl.{call}"
                )
            # The backend's SVD on its own: `project` checks W first, the backend again.
            cases[f"svd:{backend}:Dense:{value}"] = "sl.backends.get_backend(backend).svd(W)"
    for name, code in HUGE.items():
        cases[f"huge:numpy:{name}"] = code
    return cases


_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time, warnings
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, resource.RLIM_INFINITY))
    import numpy as np
    import structlin as sl
    warnings.simplefilter("ignore")
    for case_id, code in json.loads(sys.argv[1]):
        print("START " + case_id, flush=True)
        _, backend, _, *value = case_id.split(":") + [""]
        W = np.random.default_rng(0).standard_normal((4, 4)) + 3 * np.eye(4)
        W[1, 2] = float(value[0] or 0)
        if backend == "torch":
            import torch
            W = torch.as_tensor(W)
        start = time.perf_counter()
        try:
            eval(code)
            out = {"outcome": "returned"}
        except (ValueError, TypeError, sl.SingularOperatorError) as e:
            out = {"outcome": "raised", "type": type(e).__name__, "message": str(e)}
        except BaseException as e:
            out = {"outcome": "crashed", "type": type(e).__name__, "message": str(e)}
        out.update(id=case_id, seconds=time.perf_counter() - start)
        print("RESULT " + json.dumps(out), flush=True)
    """
)


def run_isolated(cases: dict[str, str], per_case: float = 10.0) -> dict[str, dict[str, Any]]:
    """Run `cases` (id -> code) in a child process; a case that outlives `per_case` seconds
    is a hang: the child is killed, the case recorded, and a new child takes the rest."""
    import selectors

    results: dict[str, dict[str, Any]] = {}
    pending = list(cases.items())
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = os.path.abspath(os.path.join(os.path.dirname(sl.__file__), os.pardir))
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    while pending:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(pending)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        started: str | None = None
        limit = time.monotonic() + 60  # the child's imports
        buffer, hung = "", False
        while True:
            now = time.monotonic()
            if now > limit:
                hung = True
                break
            if not sel.select(timeout=min(1.0, limit - now)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536).decode()
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split("\n")
            for line in lines:
                if line.startswith("START "):
                    started, limit = line[6:], time.monotonic() + per_case
                elif line.startswith("RESULT "):
                    out = json.loads(line[7:])
                    results[out["id"]] = out
                    started = None
        if hung:
            proc.kill()
        proc.wait()
        sel.close()
        if started is not None:  # killed in a case, or the child died inside one
            results[started] = {"id": started, "outcome": "hang" if hung else "died"}
        remaining = [(i, c) for i, c in pending if i not in results]
        if len(remaining) == len(pending):  # the child never started: report, don't loop
            results.update({i: {"id": i, "outcome": "not run"} for i, _ in remaining})
            break
        pending = remaining
    return results


@pytest.fixture(scope="module")
def isolated_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    # Computed once per session: pytest-xdist workers share the file (under a lock) in the
    # session's directory, the parent of each worker's.
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return run_isolated(_isolated_cases())
    try:
        from filelock import FileLock
    except ImportError:
        return run_isolated(_isolated_cases())
    path = tmp_path_factory.getbasetemp().parent / "structlin_adversarial_isolated.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return json.loads(path.read_text())
        results = run_isolated(_isolated_cases())
        path.write_text(json.dumps(results))
        return results


ISOLATED_IDS = list(_isolated_cases())


@pytest.mark.parametrize("case_id", ISOLATED_IDS)
def test_isolated(case_id: str, isolated_results: dict[str, dict[str, Any]]) -> None:
    out = isolated_results[case_id]
    assert out["outcome"] in ("raised", "returned"), f"{case_id}: {out}"
    message = out.get("message", "")
    if case_id.startswith("project:"):
        # project factorises W: non-finite input gets a clear error first.
        assert out["outcome"] == "raised", f"{case_id}: {out}"
        assert "finite" in message, f"{case_id}: the message does not name it: {out}"
    elif case_id.startswith("huge:"):
        assert out["outcome"] == "raised", f"{case_id}: {out}"
        sizes = ("1099511627776", "1048576", "2**40", "too large", "memory", "GiB", "TiB", "bytes")
        assert any(k in message for k in sizes), f"{case_id}: the size is not named: {out}"
        assert out["seconds"] < 5, f"{case_id}: took {out['seconds']:.1f} s to refuse"
    else:  # solve, slogdet, inv, svd: values that can be read are checked before LAPACK
        assert out["outcome"] == "raised", f"{case_id}: {out}"
        assert "finite" in message, f"{case_id}: the message does not name it: {out}"
