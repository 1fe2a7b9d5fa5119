"""The rules' call path: implementations resolved once per argument types, kept fresh."""

from __future__ import annotations

import numpy as np
import pytest

import structlin as sl
from structlin.rules import dispatch


class Twice(sl.LinearOperator):
    """`2 I`, with only a matmat rule at first."""

    _static = ("n",)

    def __init__(self, n: int):
        self._set(n=n)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)


@dispatch
def matmat(A: Twice, X: object):
    return 2 * X


def test_new_methods_replace_cached_resolutions():
    A = Twice(3)
    assert sl.rules.trace(A) == 6.0  # the fallback: sum of the dense diagonal
    calls = []

    @dispatch
    def trace(A: Twice):
        calls.append(A)
        return 2.0 * A.n

    assert sl.rules.trace(A) == 6.0
    assert calls == [A]  # the new method, not the cached fallback


def test_class_arguments_dispatch_by_value():
    W = np.arange(6.0).reshape(2, 3)
    assert isinstance(sl.rules.project(W, sl.Dense), sl.Dense)
    assert isinstance(sl.rules.project(np.eye(3), sl.Diagonal), sl.Diagonal)
    with pytest.raises(TypeError, match="no projection onto Twice"):
        sl.rules.project(W, Twice)


def test_a_rule_is_a_documented_plum_function():
    rule = sl.rules.matmat
    assert rule.__name__ == "matmat"
    assert "A @ X" in rule.__doc__
    assert len(rule.methods) > 10
    assert "structlin rule matmat" in repr(rule)
    impl = rule.resolve(sl.Dense, np.ndarray)
    assert impl(sl.Dense(np.eye(2)), np.ones((2, 1))).shape == (2, 1)
