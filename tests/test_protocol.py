"""The operator protocol: a user operator that would densify on every call warns once per
class, naming the rule to register; the layers refuse an operator without `components`
at construction; built-in operators never warn."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import structlin as sl
from structlin import _protocol
from structlin.rules import dispatch


def _matmat_only_class(name: str) -> type:
    """A fresh user operator class `(A x)[i] = sum_j c[i, j] x[j]` with only `matmat`
    (each test gets its own class: the warning is once per class per process)."""

    def shape(self: Any) -> tuple[int, int]:
        return tuple(self.c.shape)

    cls = type(
        name,
        (sl.LinearOperator,),
        {
            "_children": ("c",),
            "__init__": lambda self, c: self._set(c=c),
            "shape": property(shape),
        },
    )

    def matmat(A, X):
        return A.backend.matmul(A.c, X)

    _register(matmat, A=cls, X=object)
    return cls


def _register(f: Any, **annotations: Any) -> None:
    """Register `f` as a rule with these argument types (annotations of a class made in a
    function cannot be strings, which `from __future__ import annotations` makes them)."""
    f.__annotations__ = annotations
    dispatch(f)


def _dense_fallback_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, sl.DenseFallbackWarning)]


def test_dense_fallback_warns_once_per_class_and_names_the_rule() -> None:
    cls = _matmat_only_class("MatmatOnly")
    c = np.arange(6.0).reshape(2, 3)
    A = cls(c)
    X = np.ones((4, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            np.testing.assert_allclose(X @ A, X @ c)  # rmatmat -> Transpose -> dense
        np.testing.assert_allclose(A.T @ np.ones(2), c.T @ np.ones(2))
        np.testing.assert_allclose(cls(2 * c).T.to_dense(), 2 * c.T)  # another instance
    messages = _dense_fallback_warnings(caught)
    assert len(messages) == 1, messages
    assert "MatmatOnly has no structured transpose rule" in messages[0]
    assert "def transpose(A: MatmatOnly)" in messages[0]
    assert "def rmatmat(X: object, A: MatmatOnly)" in messages[0]
    assert "2 x 3" in messages[0]
    assert issubclass(sl.DenseFallbackWarning, UserWarning)


def test_a_second_class_warns_again() -> None:
    first, second = _matmat_only_class("First"), _matmat_only_class("Second")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cls in (first, second, first, second):
            np.ones((1, 2)) @ cls(np.eye(2))
    messages = _dense_fallback_warnings(caught)
    assert [m.split()[0] for m in messages] == ["First", "Second"]


def test_a_registered_transpose_silences_it() -> None:
    cls = _matmat_only_class("WithTranspose")

    def transpose(A):
        return sl.Dense(A.c.T)

    _register(transpose, A=cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.DenseFallbackWarning)
        np.testing.assert_allclose(np.ones((1, 2)) @ cls(np.eye(2)), np.ones((1, 2)))
    assert _protocol.provides(cls)["transpose"]
    assert not _protocol.provides(cls)["rmatmat"]


def test_with_rmatmat_only_the_transpose_warns_and_x_at_a_is_not_named() -> None:
    cls = _matmat_only_class("WithRmatmat")

    def rmatmat(X, A):
        return A.backend.matmul(X, A.c)

    _register(rmatmat, X=object, A=cls)
    A = cls(np.eye(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.DenseFallbackWarning)
        np.ones((1, 2)) @ A  # structured: no warning
    with pytest.warns(sl.DenseFallbackWarning, match="def transpose") as caught:
        A.T @ np.ones(2)
    assert not str(caught[0].message).startswith(
        "WithRmatmat has no structured transpose rule, so X @ A"
    )


def test_a_complex_operator_without_adjoint_names_adjoint() -> None:
    cls = _matmat_only_class("ComplexNoAdjoint")

    def transpose(A):
        return sl.Dense(A.c.T)

    _register(transpose, A=cls)
    c = np.array([[1.0, 2j], [0.0, 1.0]])
    with pytest.warns(sl.DenseFallbackWarning, match=r"def adjoint\(A: ComplexNoAdjoint\)"):
        y = cls(c).H @ np.ones(2)
    np.testing.assert_allclose(y, c.conj().T @ np.ones(2))


def test_an_explicit_lazy_transpose_of_a_structure_does_not_warn() -> None:
    L = sl.LowRank(np.ones((3, 1)), np.arange(2.0).reshape(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.DenseFallbackWarning)
        np.testing.assert_allclose(sl.Transpose(L) @ np.ones(3), L.to_dense().T @ np.ones(3))


def test_provides_reports_the_rules_of_a_structure() -> None:
    kron = _protocol.provides(sl.Kron)
    assert all(kron[rule] for rule in ("matmat", "transpose", "inv", "components"))
    bare = _protocol.provides(_matmat_only_class("Bare"))
    assert bare["matmat"]
    assert not any(v for k, v in bare.items() if k != "matmat")


# -- the layers need `components` -------------------------------------------------------------
def test_layers_refuse_an_operator_without_components_at_construction() -> None:
    A = _matmat_only_class("NoComponents")(np.eye(3, dtype=np.float32))
    message = r"no components rule for NoComponents.*def components\(A: NoComponents\)"
    if importlib.util.find_spec("torch"):
        import structlin.nn as snn

        with pytest.raises(TypeError, match=message):
            snn.Linear.from_operator(A)
    if importlib.util.find_spec("jax"):
        from structlin.nn import jax as jnn

        with pytest.raises(TypeError, match=message):
            jnn.Linear.from_operator(A)


# -- built-ins never warn ---------------------------------------------------------------------
def _stride(rows: int, cols: int) -> np.ndarray:
    return np.arange(rows * cols).reshape(rows, cols).T.reshape(-1)


rng = np.random.default_rng(0)
_L = sl.LowRank(rng.standard_normal((6, 2)), rng.standard_normal((2, 6)))
_D = sl.Dense(rng.standard_normal((6, 6)) + 3 * np.eye(6))
BUILT_INS: dict[str, Any] = {
    "Dense": lambda: _D,
    "Identity": lambda: sl.Identity(6),
    "Diagonal": lambda: sl.Diagonal(np.arange(1.0, 7.0)),
    "Permutation": lambda: sl.Permutation(np.array([2, 0, 1, 5, 3, 4])),
    "StridePermutation": lambda: sl.Permutation.stride(2, 3),
    "BlockDiag": lambda: sl.BlockDiag(rng.standard_normal((2, 3, 3))),
    "BlockDiagonal": lambda: sl.BlockDiagonal([_D, sl.Kron(np.eye(2), np.ones((2, 2)))]),
    "Sparse": lambda: sl.Sparse.from_coo(
        np.array([1.0, 2.0, 3.0]), np.array([0, 5, 2]), np.array([3, 1, 2]), (6, 6)
    ),
    "Triangular": lambda: sl.Triangular(_D.to_dense()),
    "Kron": lambda: sl.Kron(rng.standard_normal((2, 2)), sl.Diagonal(np.ones(3))),
    "LowRank": lambda: _L,
    "Monarch": lambda: sl.Monarch.random(6, 6, nblocks=2, rng=0),
    "GeneralizedMonarch": lambda: sl.GeneralizedMonarch(
        [rng.standard_normal((2, 3, 3)), rng.standard_normal((3, 2, 2))], [None, (3, 2), None]
    ),
    "TT": lambda: sl.TT.random(ms=(2, 3), ns=(3, 2), ranks=2, rng=0),
    "BTT": lambda: sl.BTT.random(ms=(2, 3), ns=(3, 2), ranks=2, rng=0),
    "Product": lambda: sl.Product(_D, _L),
    "Sum": lambda: _D + _L,
    "ScalarMul": lambda: sl.ScalarMul(2.0, _L),
    "Transpose": lambda: sl.Transpose(_L),
    "Adjoint": lambda: sl.Adjoint(sl.Dense(np.eye(6) + 1j * np.ones((6, 6)))),
    "Inverse": lambda: sl.Inverse(_D + _L),
    "PseudoInverse": lambda: sl.PseudoInverse(_D + _L),
    "Symmetric": lambda: sl.Symmetric(_D + _D.T),
    "PSD": lambda: sl.PSD(_D @ _D.T),
    "Spectral": lambda: sl.Spectral(sl.Dense(np.linalg.qr(_D.to_dense())[0]), np.arange(1.0, 7.0)),
    "dft": lambda: sl.dft(6),
    "dft order 3": lambda: sl.dft(12, factors=(2, 3, 2)),
    "dct": lambda: sl.dct(6),
    "hadamard": lambda: sl.hadamard(8),
    "Circulant": lambda: sl.circulant(np.array([3.0, 1.0, 0.0, 0.5, 0.0, -1.0])),
    "Toeplitz": lambda: sl.toeplitz(np.arange(1.0, 7.0), np.arange(2.0, 8.0)),
    "Convolution": lambda: sl.convolution(np.array([1.0, 2.0, -1.0]), 6, "same"),
}


def _operator_classes() -> set[type]:
    import structlin.interop  # noqa: F401  (every subclass structlin defines is imported)

    found, todo = set(), [sl.LinearOperator]
    while todo:
        for sub in todo.pop().__subclasses__():
            # Classes structlin's modules define, not those a docstring example defines
            # while the doctests run in the same process (their `__module__` is the module's).
            module = sys.modules.get(sub.__module__)
            defined = getattr(module, sub.__qualname__, None) is sub
            if sub.__module__.startswith("structlin.") and defined and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_operator_class_of_structlin_is_checked_below() -> None:
    # CoLAOperator wraps a CoLA operator; it is checked where CoLA is installed.
    missing = {c.__name__ for c in _operator_classes()} - set(BUILT_INS) - {"CoLAOperator"}
    assert not missing, f"add an instance of {sorted(missing)} to BUILT_INS"


CASES = dict(BUILT_INS)
if importlib.util.find_spec("cola"):
    CASES["CoLAOperator"] = lambda: sl.from_cola(sl.to_cola(_L))


@pytest.mark.parametrize("name", sorted(CASES))
def test_built_in_operators_never_warn(name: str) -> None:
    A = CASES[name]()
    m, n = A.shape
    dtype = np.complex128 if np.iscomplexobj(A.to_dense()) else np.float64
    X = rng.standard_normal((4, m)).astype(dtype)
    Y = rng.standard_normal((n, 4)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.DenseFallbackWarning)
        X @ A
        A @ Y
        sl.rules.rmatmat(rng.standard_normal((4, n)).astype(dtype), sl.rules.transpose(A))
        A.T @ X.T
        A.H @ X.T
        X @ A.H


@pytest.mark.skipif(not importlib.util.find_spec("torch"), reason="needs PyTorch")
@pytest.mark.parametrize("name", sorted(set(CASES) - {"Adjoint", "Identity", "CoLAOperator"}))
def test_built_in_operators_never_warn_in_a_layer(name: str) -> None:
    import torch

    import structlin.nn as snn

    A = CASES[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sl.DenseFallbackWarning)
        if np.iscomplexobj(A.to_dense()):
            pytest.skip("layers are real")
        layer = snn.Linear.from_operator(A)
        y = layer(torch.randn(3, A.shape[1])).sum()
        if any(True for _ in layer.parameters()):  # a permutation has nothing to learn
            y.backward()
