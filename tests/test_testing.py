"""The public conformance kit `structlin.testing`: it passes right operators and catches
wrong ones, and it needs only NumPy."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import structlin as sl
from structlin.rules import dispatch
from structlin.testing import BACKENDS, check_layer, check_operator, dot_test


def _register(f: Any, **annotations: Any) -> None:
    f.__annotations__ = annotations  # classes made in a test: no string annotations
    dispatch(f)


def _user_class(name: str, *, shift: int = 0, conjugate: bool = True, adjoint: bool = True):
    """A user operator holding its matrix `c`, with `matmat` (whose column index is off by
    `shift`), a structured `transpose` and, if `adjoint`, an `adjoint` rule (which forgets
    the conjugation unless `conjugate`)."""

    def shape(self: Any) -> tuple[int, int]:
        return tuple(self.c.shape)

    cls = type(
        name,
        (sl.LinearOperator,),
        {"_children": ("c",), "__init__": lambda self, c: self._set(c=c), "shape": property(shape)},
    )

    def matmat(A, X):
        b = A.backend
        if shift:
            # Off by `shift`: uses rows X[j + shift] (wrapping) instead of X[j].
            n = A.shape[1]
            index = b.asarray(np.roll(np.arange(n), -shift), device=A.device)
            X = b.take(X, index, 0)
        return b.matmul(A.c, X)

    def transpose(A):
        return cls(A.backend.swap_last(A.c))

    def adjoint_(A):
        b = A.backend
        t = b.swap_last(A.c)
        return cls(b.conj(t) if conjugate else t)

    _register(matmat, A=cls, X=object)
    _register(transpose, A=cls)
    if adjoint:
        adjoint_.__name__ = "adjoint"
        _register(adjoint_, A=cls)
    return cls


C = np.arange(12.0).reshape(3, 4) / 10 + np.eye(3, 4)
Z = C + 1j * np.arange(12.0)[::-1].reshape(3, 4) / 7


def test_a_right_user_operator_passes_on_every_backend() -> None:
    cls = _user_class("Right")
    check_operator(cls(C), C, dtypes=["float64"])
    check_operator(cls(Z), Z, backends=["numpy"])
    assert dot_test(cls(Z)) < 1e-12


def test_it_catches_an_off_by_one_in_matmat() -> None:
    cls = _user_class("OffByOne", shift=1)
    with pytest.raises(AssertionError, match=r"check_operator\(OffByOne\) on numpy, float32"):
        check_operator(cls(C), C, backends=["numpy"])
    # Without an independent reference, `matmat` disagrees with the transpose (`y @ A`).
    with pytest.raises(AssertionError, match=r"y @ A"):
        check_operator(cls(C), backends=["numpy"])
    with pytest.raises(AssertionError, match="dot test of OffByOne"):
        dot_test(cls(C))


def test_it_catches_an_adjoint_that_forgets_the_conjugation() -> None:
    cls = _user_class("NoConj", conjugate=False)
    with pytest.raises(AssertionError, match=r"A\.H"):
        check_operator(cls(Z), Z, backends=["numpy"])
    with pytest.raises(AssertionError, match=r"A\.H"):
        check_operator(cls(Z), backends=["numpy"])  # the reference from matmat
    with pytest.raises(AssertionError, match="relative mismatch"):
        dot_test(cls(Z))
    assert dot_test(cls(Z), raise_=False) > 0.01
    check_operator(cls(C), C, backends=["numpy"])  # real: no conjugation to forget


def test_it_names_the_missing_transpose_rule() -> None:
    def shape(self: Any) -> tuple[int, int]:
        return tuple(self.c.shape)

    cls = type(
        "MatmatOnlyKit",
        (sl.LinearOperator,),
        {"_children": ("c",), "__init__": lambda self, c: self._set(c=c), "shape": property(shape)},
    )

    def matmat(A, X):
        return A.backend.matmul(A.c, X)

    _register(matmat, A=cls, X=object)
    with (
        pytest.warns(sl.DenseFallbackWarning, match="MatmatOnlyKit"),
        pytest.raises(AssertionError, match=r"def transpose\(A: MatmatOnlyKit\)"),
    ):
        check_operator(cls(C), backends=["numpy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.DenseFallbackWarning)
        check_operator(cls(C), backends=["numpy"], structured_transpose=False)


def test_it_checks_structures_and_factories() -> None:
    check_operator(sl.Monarch.random(6, 6, nblocks=2, rng=0), backends=["numpy"])
    blocks = np.stack([np.eye(2) + 0.1, 2 * np.eye(2)])
    check_operator(
        lambda arr: sl.BlockDiag(arr(blocks)),
        backends=[b for b in BACKENDS if b != "jax"],  # JAX compiles for seconds per dtype
        dtypes=["float64", "complex128"],
        invertible=True,
    )


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs PyTorch")
def test_torch_compile_option() -> None:
    check_operator(sl.LowRank(C[:, :2], C[:2]), backends=["torch"], torch_compile=True)


def test_check_layer_structures_and_operators() -> None:
    pytest.importorskip("torch")
    assert check_layer("monarch", 16, 8, nblocks=2) == ("torch", "jax")
    assert check_layer(sl.LowRank(C[:, :2], C[:2]), frameworks=["torch"]) == ("torch",)
    cls = _user_class("NoComponentsKit")
    with pytest.raises(TypeError, match=r"def components\(A: NoComponentsKit\)"):
        check_layer(cls(C), frameworks=["torch"])


def test_check_layer_catches_a_wrong_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import structlin.nn as snn

    forward = snn.Linear.forward
    monkeypatch.setattr(snn.Linear, "forward", lambda self, x: 1.001 * forward(self, x))
    with pytest.raises(AssertionError, match="output"):
        check_layer("lowrank", 8, 4, rank=2, frameworks=["torch"])


def test_the_kit_needs_only_numpy() -> None:
    """With PyTorch and JAX unimportable, the kit imports, finds only NumPy and checks on it;
    importing it loads none of pytest, hypothesis, PyTorch, JAX."""
    code = """
import sys
for blocked in ("torch", "jax", "jaxlib", "pytest", "hypothesis"):
    sys.modules[blocked] = None  # import fails, find_spec gives None
import numpy as np, structlin as sl, structlin.testing as t
assert t.BACKENDS == ("numpy",), t.BACKENDS
t.check_operator(sl.Kron(np.eye(2) + 1, np.eye(3)))
assert t.dot_test(sl.dft(4)) < 1e-12
try:
    t.check_layer("dense", 2, 2)
except ImportError as e:
    print("layer:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "check_layer needs PyTorch or JAX" in out.stdout
    code = (
        "import sys, structlin.testing; "
        "print(sorted(m for m in ('torch', 'jax', 'pytest', 'hypothesis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
