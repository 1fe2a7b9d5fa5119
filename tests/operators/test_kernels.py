"""The kernel registry, the one Monarch layout, the one transpose expression and the shared helpers."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

import structlin as sl
from structlin import kernels, pytree
from structlin.operators.monarch import (
    DEFAULT,
    MONARCH_COLS,
    MONARCH_ROWS,
    TRANSPOSED,
    default_perms,
    kernel_for,
)
from structlin.operators.permutation import stride_permute

# -- the registry --------------------------------------------------------------------------------


def test_monarch_products_are_declared_and_have_a_torch_kernel() -> None:
    assert {MONARCH_COLS, MONARCH_ROWS} <= set(kernels.products())
    assert [k.backend for k in kernels.registered(MONARCH_ROWS)] == ["torch"]
    assert kernels.select(MONARCH_ROWS, "numpy") is None


def test_a_registered_kernel_is_chosen_where_it_applies_and_imported_lazily(monkeypatch) -> None:
    module = type(sys)("mo_fake_kernel_module")
    calls = []

    def cols(X, b1, b2):
        calls.append(X.shape)
        return np.full((b2.shape[0] * b2.shape[1], X.shape[1]), 7.0)

    module.cols = cols
    M = sl.Monarch.random(16, 16, nblocks=4, rng=0)
    dense = M.to_dense()
    kernel = kernels.register_kernel(
        MONARCH_COLS,
        "numpy",
        "mo_fake_kernel_module:cols",
        applies=lambda X, b1, b2: X.shape[1] >= 3,
        name="fake",
    )
    try:
        few, many = np.ones((16, 2)), np.ones((16, 3))
        assert kernel_for(M, few, "cols") is None
        np.testing.assert_allclose(M @ few, dense @ few)  # the generic path
        assert kernel_for(M, many, "cols") is kernel
        with pytest.raises(ModuleNotFoundError):  # imported on first use, not at registration
            M @ many
        monkeypatch.setitem(sys.modules, "mo_fake_kernel_module", module)
        assert (M @ many == 7.0).all()
        assert calls == [(16, 3)]
        # Padding and truncation stay the rule's: a padded Monarch gets the padded input.
        P = sl.Monarch.random(13, 10, nblocks=4, rng=0)
        assert (P @ np.ones((13, 3))).shape == (10, 3)
        assert calls[-1] == (16, 3)
        assert kernel_for(M.T, many.T) is None  # registered for the columns product only
    finally:
        kernels.unregister(kernel)
    assert kernel_for(M, many, "cols") is None
    assert kernels.registered(MONARCH_COLS) == [k for k in kernels.registered(MONARCH_COLS)]


def test_registration_errors() -> None:
    with pytest.raises(ValueError, match="unknown kernel product 'monarch: nope'"):
        kernels.register_kernel("monarch: nope", "torch", "m:f")
    with pytest.raises(ValueError, match="'module:function'"):
        kernels.register_kernel(MONARCH_ROWS, "torch", "no_function_here")
    with pytest.raises(ValueError, match="already declared"):
        kernels.declare_product(MONARCH_ROWS, "another signature")
    assert kernels.declare_product(MONARCH_ROWS, kernels.products()[MONARCH_ROWS]) == MONARCH_ROWS


def test_kernel_for_names_the_torch_kernel() -> None:
    torch = pytest.importorskip("torch")
    M = sl.Monarch.random(10, 13, nblocks=4, rng=0, backend="torch", dtype=torch.float64)
    x = torch.ones(20, 10, dtype=torch.float64)
    assert kernel_for(M.T, x).name == "monarch-torch-rows"
    assert kernel_for(M, x.T, "cols").name == "monarch-torch-cols"
    assert kernel_for(M, x[:, :13]) is None  # X M: no kernel
    C = M.to(dtype=torch.complex128)
    assert kernel_for(C.T, x.to(torch.complex128)) is None  # real dtypes only
    with pytest.raises(ValueError, match="side"):
        kernel_for(M, x, "both")


# -- the Monarch layout --------------------------------------------------------------------------


def test_layout_is_set_once_and_carried_by_derived_operators() -> None:
    M = sl.Monarch.random(16, 12, nblocks=4, rng=0)
    assert M.perms == default_perms(M.blkdiag2.shape)
    assert M.perm_layout == DEFAULT
    for derived in (M.T, M.H):
        assert type(derived) is sl.Monarch
        assert derived.perm_layout == TRANSPOSED
    assert M.T.T.perm_layout == DEFAULT
    S = sl.Monarch.random(16, 16, nblocks=4, rng=0)
    assert S.inv().perm_layout == TRANSPOSED
    assert S.inv().inv().perm_layout == DEFAULT
    assert S.T.inv().perm_layout == DEFAULT
    assert sl.dft(12).perm_layout is None
    assert sl.hadamard(16).perm_layout == DEFAULT
    # The constructor reads the layout from explicit permutations too.
    b1, b2 = M.blkdiag1, M.blkdiag2
    assert sl.Monarch(b1, b2, perms=M.perms).perm_layout == DEFAULT
    assert sl.GeneralizedMonarch(M.T.blocks, M.T.perms).perm_layout == TRANSPOSED
    assert sl.GeneralizedMonarch([b1], [None, None]).perm_layout is None
    # Through pytrees and pickling.
    leaves, treedef = pytree.tree_flatten(M.T)
    assert pytree.tree_unflatten(treedef, leaves).perm_layout == TRANSPOSED
    assert pickle.loads(pickle.dumps(M.T)).perm_layout == TRANSPOSED
    # A product of Monarch matrices has four factors: no two-factor layout.
    assert (S @ S).perm_layout is None


def test_two_core_btt_is_the_default_layout_monarch() -> None:
    A = sl.BTT.random(ms=(3, 4), ns=(4, 2), ranks=2, rng=0)
    L, R = A.cores
    M = sl.Monarch(R[:, 0], L[0])
    assert M.perm_layout == DEFAULT
    np.testing.assert_allclose(M.to_dense(), A.to_dense(), atol=1e-12)


# -- helpers shared with other modules ------------------------------------------------------------


@pytest.mark.parametrize(("rows", "cols"), [(2, 3), (3, 2), (1, 6), (4, 4)])
def test_stride_permute_on_both_sides(rows, cols) -> None:
    P = sl.Permutation.stride(rows, cols).to_dense()
    X = np.random.default_rng(0).standard_normal((rows * cols, 5))
    np.testing.assert_array_equal(
        stride_permute(X, rows, cols, sl.backends.get_backend("numpy")), P @ X
    )
    Y = np.random.default_rng(1).standard_normal((2, 3, rows * cols))
    got = stride_permute(Y, rows, cols, sl.backends.get_backend("numpy"), axis=-1)
    np.testing.assert_array_equal(got, Y @ P.T)


def test_tree_leaves_with_path() -> None:
    K = sl.Kron(np.eye(2), sl.Monarch.random(4, 4, nblocks=2, rng=0))
    leaves, treedef = pytree.tree_flatten(K)
    found = pytree.tree_leaves_with_path(treedef, K)
    assert [path for path, _ in found] == [
        ("factors", "0", "array"),
        ("factors", "1", "blocks", "0"),
        ("factors", "1", "blocks", "1"),
    ]
    assert all(a is b for (_, a), b in zip(found, leaves, strict=True))
    assert [leaf for _, leaf in pytree.tree_leaves_with_path(treedef)] == [None] * 3
    assert pytree.tree_leaves_with_path(None, 5.0) == [((), 5.0)]


# -- Transpose and Adjoint: one expression --------------------------------------------------------


class _User(sl.LinearOperator):
    """An operator with no structured rules: the lazy nodes apply."""

    _children = ("a",)

    def __init__(self, a):
        self._set(a=a)

    @property
    def shape(self):
        return self.a.shape


@sl.rules.dispatch
def to_dense(A: _User):
    return A.a


@pytest.mark.parametrize("complex_", [False, True])
def test_transpose_and_adjoint_share_their_rules(complex_) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3)) + (1j * rng.standard_normal((3, 3)) if complex_ else 0)
    U = _User(a)
    T, H = sl.Transpose(U), sl.Adjoint(U)
    assert isinstance(H, sl.Transpose)
    assert H.conjugate
    assert not T.conjugate
    assert type(T).__name__ == "Transpose"
    assert type(H).__name__ == "Adjoint"
    np.testing.assert_allclose(T.to_dense(), a.T)
    np.testing.assert_allclose(H.to_dense(), a.conj().T)
    np.testing.assert_allclose(H.inv().to_dense(), np.linalg.inv(a).conj().T)
    np.testing.assert_allclose(sl.diag(T), np.diag(a))
    np.testing.assert_allclose(sl.diag(H), np.diag(a).conj())
    sign, _ = sl.slogdet(H)
    np.testing.assert_allclose(sign, np.linalg.slogdet(a)[0].conj())
    assert H.H is U
    assert T.T is U
    np.testing.assert_allclose(H.T.to_dense(), a.conj())
    np.testing.assert_allclose(T.H.to_dense(), a.conj())
    assert (T.H is U) == (not complex_)
    D = sl.Adjoint(sl.Dense(a))
    again = pickle.loads(pickle.dumps(D))
    assert type(again) is sl.Adjoint
    assert again.conjugate
    np.testing.assert_allclose(again.to_dense(), a.conj().T)
    leaves, treedef = pytree.tree_flatten(D)
    assert type(pytree.tree_unflatten(treedef, leaves)) is sl.Adjoint


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_two_core_btt_and_monarch_projections_agree(rank) -> None:
    """The same matrix family, the same optimum: a 2-core BTT of rank `r` is the Monarch with
    blocks `((n_1, r m_2, n_2), (m_2, m_1, n_1 r))`, and both projections are exact SVDs."""
    ms, ns = (3, 4), (4, 2)
    W = np.random.default_rng(rank).standard_normal((12, 8))
    A = sl.project(W, sl.BTT, ms=ms, ns=ns, ranks=rank)
    blocks = ((ns[0], rank * ms[1], ns[1]), (ms[1], ms[0], ns[0] * rank))
    M = sl.project(W, sl.Monarch, blocks=blocks)
    np.testing.assert_allclose(A.to_dense(), M.to_dense(), atol=1e-10)
