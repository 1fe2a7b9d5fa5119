"""`structlin.mup`: the dense components read off each structure, and the μP numbers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import structlin as sl
from structlin import pytree
from structlin.mup import Component, MupInfo

rng = np.random.default_rng(0)


def _a(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


def _chain(op: sl.LinearOperator, order: list[int]) -> list[tuple[int, int]]:
    """`(rows in, rows out)` of each component in application order: batch times fan."""
    found = sl.mup.components(op)
    return [(found[i].batch * found[i].fan_in, found[i].batch * found[i].fan_out) for i in order]


# (operator, the leaf indices in the order the matmat applies them)
SEQUENTIAL = [
    (sl.Dense(_a(5, 7)), [0]),
    (sl.BlockDiag(_a(3, 4, 2)), [0]),
    (sl.LowRank(_a(9, 3), _a(3, 6)), [1, 0]),
    (sl.Kron(_a(2, 3), _a(4, 5), _a(3, 2)), [0, 1, 2]),
    (sl.Monarch(_a(4, 3, 5), _a(3, 6, 4)), [0, 1]),
    (
        sl.GeneralizedMonarch((_a(4, 2, 3), _a(2, 4, 4), _a(4, 3, 2)), (None, None, None, None)),
        [0, 1, 2],
    ),
    (sl.TT.random((2, 3, 2), (3, 2, 4), (2, 3), rng=0), [2, 1, 0]),
    (sl.BTT.random((2, 3, 2), (3, 2, 4), (2, 3), rng=0), [2, 1, 0]),
    (sl.BTT.random((2, 3), (4, 5), 2, rng=0).T, [0, 1]),
    (sl.Dense(_a(5, 7)) @ sl.LowRank(_a(7, 2), _a(2, 6)), [2, 1, 0]),
]


@pytest.mark.parametrize(("op", "order"), SEQUENTIAL, ids=lambda v: type(v).__name__)
def test_components_chain_from_input_to_output(op, order):
    """Each component reads what the previous one wrote: the batched products of
    Section 3.2 take the `d_in` input to the `d_out` output."""
    found = sl.mup.components(op)
    assert len(found) == len(pytree.tree_flatten(op)[0])
    chain = _chain(op, order)
    assert chain[0][0] == op.shape[1]
    assert chain[-1][1] == op.shape[0]
    for (_, out), (nxt, _) in itertools.pairwise(chain):
        assert out == nxt
    assert found[order[0]].first
    assert found[order[-1]].last
    assert sum(c.first for c in found) == 1
    assert sum(c.last for c in found) == 1


def test_expressions():
    M = sl.Monarch.random(16, 16, 4, rng=0)
    P = sl.Permutation(rng.permutation(16))
    scaled = 3.0 * (M @ P)
    found = sl.mup.components(scaled)
    assert found[0] is None  # the scalar
    assert found[3] is None  # the permutation's indices
    assert [c.last for c in found[1:3]] == [False, True]
    assert sl.mup.components(sl.Identity(4)) == ()
    assert sl.mup.components(sl.StridePermutation(2, 3)) == ()
    assert sl.mup.components(sl.Diagonal(np.ones(5))) == (Component(5, 1, 1),)
    summed = sl.Dense(_a(4, 4)) + sl.LowRank(_a(4, 1), _a(1, 4))
    assert [c.last for c in sl.mup.components(summed)] == [True, True, False]
    inverse = sl.Inverse(sl.Dense(_a(4, 4)))
    assert not sl.mup.components(inverse)[0].last  # never zero-initialise an inverse
    assert sl.mup.components(sl.Dense(_a(3, 5)).T)[0] == Component(1, 5, 3)


def test_table_2():
    d, r, b = 1024, 4, 16
    root = math.isqrt(d)

    def kappas(op):
        return [info.lr_multiplier for info in sl.mup.describe(op)]

    assert kappas(sl.Monarch.random(d, d, b, rng=0)) == [b / 2, b / 2]
    assert kappas(sl.Kron(np.zeros((root, root)), np.zeros((root, root)))) == [root / 2] * 2
    assert kappas(sl.LowRank(np.zeros((d, r)), np.zeros((r, d)))) == [d / (2 * r), 0.5]
    assert kappas(sl.TT.random((root, root), (root, root), r, rng=0)) == [root / (2 * r), root / 2]
    assert kappas(sl.BTT.random((root, root), (root, root), r, rng=0)) == [root / (2 * r), root / 2]
    assert kappas(sl.Dense(np.zeros((d, d)))) == [1.0]


def test_mup_info_numbers():
    info = MupInfo(Component(4, 64, 256), n_components=2, layer_fan_in=1024, layer_fan_out=512)
    assert info.init_std == math.sqrt(64) / 256
    assert info.lr_multiplier == 1024 / 256 / 2
    assert info.sgd_lr_multiplier == pytest.approx((64 / 256) / (512 / 1024) / 2)


def test_unknown_operator_has_no_components():
    class Custom(sl.LinearOperator):
        shape = (2, 2)

    with pytest.raises(TypeError, match="no components rule for Custom"):
        sl.mup.components(Custom())
