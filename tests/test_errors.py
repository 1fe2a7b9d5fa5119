"""Bad inputs raise a clear error naming the offending shapes, dtypes or backends.

Every misuse must give a `TypeError` or `ValueError` (or
`sl.SingularOperatorError`, a `ValueError`) whose message says what was wrong,
never a silently wrong answer. A few positive controls check that legitimate
mixtures (dtype promotion, real/complex, scalar multiples) are not refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import structlin as sl

BACKENDS = ["numpy", "torch", "jax"]
# Pairs (operator backend, array backend) of different libraries.
MIXED = [
    ("numpy", "torch"),
    ("torch", "numpy"),
    ("numpy", "jax"),
    ("jax", "numpy"),
    ("torch", "jax"),
]


def _require(backend: str) -> None:
    if backend != "numpy":
        pytest.importorskip(backend)


def arr(x: Any, backend: str) -> Any:
    """`x` (anything `numpy.asarray` takes) as an array of `backend`, dtype preserved."""
    x = np.asarray(x)
    _require(backend)
    if backend == "numpy":
        return x
    if backend == "torch":
        import torch

        return torch.as_tensor(x.copy())
    import jax.numpy as jnp

    return jnp.asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().resolve_conj().numpy()
    return np.asarray(x)


def dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    _require(request.param)
    return request.param


RNG = np.random.default_rng(0)
M33 = RNG.standard_normal((3, 3)) + 3 * np.eye(3)
M34 = RNG.standard_normal((3, 4))


# -- A @ x and x @ A -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("xshape", "pattern"),
    [
        ((4,), r"\(3, 3\).*\(4,\)"),
        ((4, 2), r"\(3, 3\).*\(4, 2\)"),
        ((2,), r"\(3, 3\).*\(2,\)"),
        ((), r"\(3, 3\).*\(\)"),
    ],
)
def test_matmat_wrong_size(backend: str, xshape: tuple[int, ...], pattern: str) -> None:
    A = sl.Dense(arr(M33, backend))
    with pytest.raises(ValueError, match=pattern):
        A @ arr(np.ones(xshape), backend)


def test_matmat_wrong_size_rectangular(backend: str) -> None:
    A = sl.Dense(arr(M34, backend))
    # (3, 4) acts on vectors of length 4, not 3 (its row count).
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3,\).*\(4,\) or \(4, k\)"):
        A @ arr(np.ones(3), backend)


@pytest.mark.parametrize(
    ("xshape", "pattern"),
    [
        ((4,), r"\(3, 3\).*\(4,\)"),
        ((2, 4), r"\(3, 3\).*\(2, 4\)"),
        ((2, 5, 4), r"\(3, 3\).*\(2, 5, 4\)"),
    ],
)
def test_rmatmat_wrong_size(backend: str, xshape: tuple[int, ...], pattern: str) -> None:
    A = sl.Dense(arr(M33, backend))
    with pytest.raises(ValueError, match=pattern):
        arr(np.ones(xshape), backend) @ A


def test_rmatmat_uses_row_count(backend: str) -> None:
    A = sl.Dense(arr(M34, backend))
    # x @ A needs x.shape[-1] == 3 (the row count), not 4.
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 4\).*\(\.\.\., 3\)"):
        arr(np.ones((2, 4)), backend) @ A


def test_matmat_ndim3(backend: str) -> None:
    A = sl.Dense(arr(M33, backend))
    with pytest.raises(ValueError, match=r"\(3, 2, 2\)"):
        A @ arr(np.ones((3, 2, 2)), backend)


@pytest.mark.parametrize(
    "x", [[1.0, 2.0, 3.0], (1.0, 2.0, 3.0), 1.0], ids=["list", "tuple", "float"]
)
def test_matmat_not_an_array(backend: str, x: Any) -> None:
    A = sl.Dense(arr(M33, backend))
    name = type(x).__name__
    with pytest.raises(TypeError, match=name):
        A @ x
    if not isinstance(x, float):
        with pytest.raises(TypeError, match=name):
            x @ A


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_matmat_integer_array(backend: str, dtype: str) -> None:
    A = sl.Dense(arr(M33, backend))
    x = arr(np.ones(3, dtype=dtype), backend)
    with pytest.raises(TypeError, match=dtype_name(x)):
        A @ x
    with pytest.raises(TypeError, match=dtype_name(x)):
        x @ A
    with pytest.raises(TypeError, match=dtype_name(x)):
        sl.solve(A, x)


def test_matmat_integer_array_value_free_operator() -> None:
    with pytest.raises(TypeError, match="int64"):
        sl.Identity(3) @ np.ones(3, dtype=np.int64)


@pytest.mark.parametrize(("op_backend", "x_backend"), MIXED)
def test_matmat_other_backend(op_backend: str, x_backend: str) -> None:
    A = sl.Dense(arr(M33, op_backend))
    x = arr(np.ones(3), x_backend)
    pattern = rf"{op_backend}.*{x_backend}"
    with pytest.raises(TypeError, match=pattern):
        A @ x
    with pytest.raises(TypeError, match=pattern):
        x @ A
    with pytest.raises(TypeError, match=pattern):
        sl.solve(A, x)


def test_matmat_other_backend_permutation() -> None:
    """An integer-indexed operator is still tied to its backend."""
    pytest.importorskip("torch")
    P = sl.Permutation(np.array([1, 0, 2]))
    with pytest.raises(TypeError, match=r"numpy.*torch"):
        P @ arr(np.ones(3), "torch")


@pytest.mark.parametrize(
    ("bshape", "pattern"),
    [
        ((4,), r"\(3, 3\).*\(4,\)"),
        ((2, 2), r"\(3, 3\).*\(2, 2\)"),
        ((3, 2, 2), r"\(3, 2, 2\)"),
    ],
)
def test_solve_wrong_b_shape(backend: str, bshape: tuple[int, ...], pattern: str) -> None:
    A = sl.Dense(arr(M33, backend))
    with pytest.raises(ValueError, match=pattern):
        sl.solve(A, arr(np.ones(bshape), backend))


def test_solve_b_not_an_array() -> None:
    with pytest.raises(TypeError, match="list"):
        sl.solve(sl.Dense(M33), [1.0, 2.0, 3.0])


# -- constructors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "pattern"),
    [((4, 4), r"\(4, 4\)"), ((2, 2, 2, 2), r"\(2, 2, 2, 2\)"), ((4,), r"\(4,\)")],
)
def test_block_diag_wrong_ndim(backend: str, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        sl.BlockDiag(arr(np.ones(shape), backend))


def test_block_diag_integer(backend: str) -> None:
    blocks = arr(np.ones((2, 2, 2), dtype=np.int64), backend)
    with pytest.raises(TypeError, match="int64"):
        sl.BlockDiag(blocks)


def test_block_diag_list() -> None:
    with pytest.raises(TypeError, match="list"):
        sl.BlockDiag([[[1.0]]])


@pytest.mark.parametrize(
    ("perm", "pattern"),
    [
        ([0, 0, 2], r"length 3.*missing \[1\]"),  # duplicate
        ([0, 3, 1], r"length 3.*out of range \[3\]"),
        ([0, -1, 2], r"length 3.*out of range \[-1\]"),
        ([1, 2, 3], r"length 3.*out of range \[3\].*missing \[0\]"),
    ],
    ids=["duplicate", "too-large", "negative", "shifted"],
)
def test_permutation_not_a_permutation(backend: str, perm: list[int], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        sl.Permutation(arr(np.array(perm, dtype=np.int64), backend))


@pytest.mark.parametrize("dtype", ["float64", "float32", "bool"])
def test_permutation_non_integer(backend: str, dtype: str) -> None:
    perm = arr(np.array([1, 0, 2]).astype(dtype), backend)
    with pytest.raises(TypeError, match=dtype_name(perm)):
        sl.Permutation(perm)


def test_permutation_2d(backend: str) -> None:
    with pytest.raises(ValueError, match=r"1-D.*\(1, 3\)"):
        sl.Permutation(arr(np.array([[1, 0, 2]]), backend))


def test_permutation_list() -> None:
    with pytest.raises(TypeError, match="list"):
        sl.Permutation([1, 0, 2])


def test_stride_permutation_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"rows must be a positive integer, got 0"):
        sl.Permutation.stride(0, 3)


@pytest.mark.parametrize("cls", [sl.Dense, sl.Diagonal, sl.LowRank])
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_integer_arrays_refused(backend: str, cls: type, dtype: str) -> None:
    if cls is sl.Diagonal:
        args = (arr(np.ones(3, dtype=dtype), backend),)
    elif cls is sl.Dense:
        args = (arr(np.ones((3, 3), dtype=dtype), backend),)
    else:
        args = (arr(np.ones((3, 1), dtype=dtype), backend), arr(np.ones((1, 3)), backend))
    with pytest.raises(TypeError, match=dtype_name(args[0])):
        cls(*args)


def test_low_rank_integer_v(backend: str) -> None:
    U = arr(np.ones((3, 1)), backend)
    V = arr(np.ones((1, 3), dtype=np.int64), backend)
    with pytest.raises(TypeError, match=r"LowRank V.*int64"):
        sl.LowRank(U, V)


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [((3,), r"2-D.*\(3,\)"), ((2, 3, 3), r"2-D.*\(2, 3, 3\)"), ((), r"2-D.*\(\)")],
)
def test_dense_wrong_ndim(backend: str, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        sl.Dense(arr(np.ones(shape), backend))


@pytest.mark.parametrize(("shape", "pattern"), [((3, 3), r"1-D.*\(3, 3\)"), ((), r"1-D.*\(\)")])
def test_diagonal_wrong_ndim(backend: str, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        sl.Diagonal(arr(np.ones(shape), backend))


@pytest.mark.parametrize("cls", [sl.Dense, sl.Diagonal])
def test_constructor_list(cls: type) -> None:
    with pytest.raises(TypeError, match="list"):
        cls([[1.0, 0.0], [0.0, 1.0]])


def test_low_rank_inner_dims(backend: str) -> None:
    U = arr(np.ones((4, 2)), backend)
    V = arr(np.ones((3, 5)), backend)
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(3, 5\)"):
        sl.LowRank(U, V)


def test_low_rank_wrong_ndim(backend: str) -> None:
    with pytest.raises(ValueError, match=r"LowRank U.*\(4,\)"):
        sl.LowRank(arr(np.ones(4), backend), arr(np.ones((1, 4)), backend))


@pytest.mark.parametrize(("a", "b"), MIXED)
def test_low_rank_mixed_backends(a: str, b: str) -> None:
    with pytest.raises(TypeError, match=rf"{a}.*{b}"):
        sl.LowRank(arr(np.ones((3, 1)), a), arr(np.ones((1, 3)), b))


def test_identity_bad_size() -> None:
    with pytest.raises(ValueError, match=r"-1"):
        sl.Identity(-1)
    with pytest.raises(TypeError, match=r"2\.5"):
        sl.Identity(2.5)


def test_empty_composites() -> None:
    for cls in (sl.Kron, sl.Product, sl.Sum):
        with pytest.raises(ValueError, match=cls.__name__):
            cls()


def test_composite_with_non_array_factor() -> None:
    with pytest.raises(TypeError, match="list"):
        sl.Kron([[1.0]], np.eye(2))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        sl.Kron(np.ones(2), np.eye(2))
    with pytest.raises(TypeError, match="int64"):
        sl.Sum(np.eye(2), np.eye(2, dtype=np.int64))


def test_inverse_node_non_square() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        sl.Inverse(sl.Dense(M34))


def test_to_unknown_backend() -> None:
    with pytest.raises(ValueError, match="tensorflow"):
        sl.Dense(M33).to(backend="tensorflow")


# -- combining operators ---------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), MIXED)
def test_composites_mixed_backends(a: str, b: str) -> None:
    A = sl.Dense(arr(M33, a))
    B = sl.Dense(arr(M33, b))
    pattern = rf"{a}.*{b}"
    with pytest.raises(TypeError, match=rf"Kron.*{pattern}"):
        sl.Kron(A, B)
    with pytest.raises(TypeError, match=rf"Product.*{pattern}"):
        sl.Product(A, B)
    with pytest.raises(TypeError, match=rf"Sum.*{pattern}"):
        sl.Sum(A, B)
    with pytest.raises(TypeError, match=pattern):
        A @ B
    with pytest.raises(TypeError, match=pattern):
        A + B
    with pytest.raises(TypeError, match=pattern):
        A - B


@pytest.mark.parametrize(("a", "b"), MIXED)
def test_composites_mixed_backends_raw_arrays(a: str, b: str) -> None:
    with pytest.raises(TypeError, match=rf"{a}.*{b}"):
        sl.Kron(arr(M33, a), arr(M33, b))


@pytest.mark.parametrize(("a", "b"), MIXED)
def test_structured_rules_mixed_backends(a: str, b: str) -> None:
    """Diagonal + Diagonal and Diagonal @ Diagonal have structured rules; they check too."""
    D1 = sl.Diagonal(arr(np.ones(3), a))
    D2 = sl.Diagonal(arr(np.ones(3), b))
    with pytest.raises(TypeError, match=rf"{a}.*{b}"):
        D1 + D2
    with pytest.raises(TypeError, match=rf"{a}.*{b}"):
        D1 @ D2


def test_value_bound_identity_mixed_backends() -> None:
    pytest.importorskip("torch")
    A = sl.Dense(arr(M33, "torch"))
    with pytest.raises(TypeError, match=r"numpy.*torch"):
        sl.Identity(3, backend="numpy") + A


def test_product_incompatible_shapes(backend: str) -> None:
    A = sl.Dense(arr(M34, backend))
    B = sl.Dense(arr(M33, backend))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 3\)"):
        sl.Product(A, B)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 3\)"):
        A @ B
    # factors 1 and 2 do not chain; the message says which
    with pytest.raises(ValueError, match=r"1 and 2.*\(3, 4\).*\(3, 3\)"):
        sl.Product(B, A, B)


def test_sum_different_shapes(backend: str) -> None:
    A = sl.Dense(arr(M33, backend))
    B = sl.Dense(arr(M34, backend))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
        sl.Sum(A, B)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
        A + B
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
        A - B


def test_structured_add_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        sl.Diagonal(np.ones(3)) + sl.Diagonal(np.ones(4))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        sl.Diagonal(np.ones(3)) @ sl.Diagonal(np.ones(4))


# -- square-only functions on non-square operators -------------------------------------------
def _non_square(backend: str) -> list[sl.LinearOperator]:
    return [
        sl.Dense(arr(M34, backend)),
        sl.LowRank(arr(np.ones((3, 1)), backend), arr(np.ones((1, 4)), backend)),
        sl.Kron(arr(np.ones((2, 3)), backend), arr(np.eye(2), backend)),
        sl.BlockDiag(arr(np.ones((2, 2, 3)), backend)),
    ]


@pytest.mark.parametrize(
    "fn",
    [sl.inv, lambda A: A.inv(), sl.logdet, sl.slogdet, sl.trace],
    ids=["inv", "A.inv", "logdet", "slogdet", "trace"],
)
def test_square_only_functions(backend: str, fn: Any) -> None:
    for A in _non_square(backend):
        m, n = A.shape
        with pytest.raises(ValueError, match=rf"{type(A).__name__}.*\({m}, {n}\)"):
            fn(A)


def test_solve_non_square(backend: str) -> None:
    for A in _non_square(backend):
        m, n = A.shape
        with pytest.raises(ValueError, match=rf"{type(A).__name__}.*\({m}, {n}\)"):
            sl.solve(A, arr(np.ones(m), backend))


def test_kron_rectangular_factor_square_overall(backend: str) -> None:
    """(2, 3) ⊗ (3, 2) is 6 x 6 but singular: inv/solve must refuse, naming the factor."""
    K = sl.Kron(arr(np.ones((2, 3)), backend), arr(np.ones((3, 2)), backend))
    assert K.shape == (6, 6)
    with pytest.raises(ValueError, match=r"factor 0.*\(2, 3\)"):
        sl.inv(K)
    with pytest.raises(ValueError, match=r"factor 0.*\(2, 3\)"):
        K.inv()
    with pytest.raises(ValueError, match=r"factor 0.*\(2, 3\)"):
        sl.solve(K, arr(np.ones(6), backend))


def test_kron_rectangular_factor_slogdet(backend: str) -> None:
    """Its determinant is 0: slogdet either refuses (naming the factor) or says (0, -inf)."""
    K = sl.Kron(arr(np.ones((2, 3)), backend), arr(np.ones((3, 2)), backend))
    message = None
    try:
        sign, logabsdet = sl.slogdet(K)
    except ValueError as e:
        message = str(e)
    if message is not None:
        assert "(2, 3)" in message, message
    else:
        assert float(to_numpy(sign)) == 0
        assert float(to_numpy(logabsdet)) == -np.inf


def test_kron_rectangular_factor_trace_is_fine(backend: str) -> None:
    """trace is defined for a square Kron whatever its factors: no error, right value."""
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2)
    K = sl.Kron(arr(a, backend), arr(b, backend))
    np.testing.assert_allclose(to_numpy(sl.trace(K)), np.trace(np.kron(a, b)))


# -- singular operators ----------------------------------------------------------------------
def test_dense_singular(backend: str) -> None:
    A = sl.Dense(arr(np.zeros((3, 3)), backend))
    with pytest.raises(sl.SingularOperatorError, match=r"\(3, 3\)"):
        A.inv()
    with pytest.raises(sl.SingularOperatorError, match=r"\(3, 3\)"):
        sl.solve(A, arr(np.ones(3), backend))


def test_dense_rank_deficient(backend: str) -> None:
    A = sl.Dense(arr(np.array([[1.0, 2.0], [2.0, 4.0]]), backend))
    with pytest.raises(sl.SingularOperatorError, match=r"\(2, 2\)"):
        A.inv()


def test_singular_is_value_error() -> None:
    assert issubclass(sl.SingularOperatorError, ValueError)


def test_diagonal_zero_entry(backend: str) -> None:
    D = sl.Diagonal(arr(np.array([1.0, 2.0, 0.0, 4.0]), backend))
    with pytest.raises(sl.SingularOperatorError, match=r"indices \[2\]"):
        D.inv()
    with pytest.raises(sl.SingularOperatorError, match=r"indices \[2\]"):
        sl.solve(D, arr(np.ones(4), backend))


def test_block_diag_singular_block(backend: str) -> None:
    blocks = np.stack([np.eye(2), 2 * np.eye(2), [[1.0, 2.0], [2.0, 4.0]]])
    A = sl.BlockDiag(arr(blocks, backend))
    with pytest.raises(sl.SingularOperatorError, match=r"block\(s\) \[2\].*\(2, 2\)"):
        A.inv()
    with pytest.raises(sl.SingularOperatorError, match=r"block\(s\) \[2\]"):
        sl.solve(A, arr(np.ones(6), backend))


def test_low_rank_rank_deficient(backend: str) -> None:
    A = sl.LowRank(arr(np.ones((3, 1)), backend), arr(np.ones((1, 3)), backend))
    with pytest.raises(sl.SingularOperatorError, match=r"\(3, 3\).*rank 1"):
        A.inv()
    with pytest.raises(sl.SingularOperatorError, match=r"\(3, 3\).*rank 1"):
        sl.solve(A, arr(np.ones(3), backend))


@pytest.mark.parametrize("zero", [0, 0.0, "array"])
def test_zero_times_operator(backend: str, zero: Any) -> None:
    c = arr(np.array(0.0), backend) if zero == "array" else zero
    for A in (
        sl.Dense(arr(M33, backend)),
        sl.Diagonal(arr(np.ones(3), backend)),
        sl.Kron(arr(np.eye(2), backend), arr(np.eye(2), backend)),
    ):
        Z = c * A
        n = A.shape[0]
        with pytest.raises(sl.SingularOperatorError, match=rf"\({n}, {n}\)"):
            Z.inv()
        with pytest.raises(sl.SingularOperatorError, match=rf"\({n}, {n}\)"):
            sl.solve(Z, arr(np.ones(n), backend))


def test_singular_sum(backend: str) -> None:
    """A lazy Inverse of a singular Sum fails on use (or earlier), never returns inf/nan."""
    A = sl.Dense(arr(M33, backend))
    x = arr(np.ones(3), backend)
    with pytest.raises(sl.SingularOperatorError, match=r"\(3, 3\)"):
        (A - A).inv() @ x
    with pytest.raises(sl.SingularOperatorError, match=r"\(3, 3\)"):
        sl.solve(A - A, x)


# -- scalar multiplication -------------------------------------------------------------------
def test_operator_times_operator() -> None:
    A = sl.Dense(M33)
    with pytest.raises(TypeError, match=r"A @ B"):
        A * A
    with pytest.raises(TypeError, match=r"A @ B"):
        A * sl.Diagonal(np.ones(3))


_ARRAY_TYPE = {"numpy": "ndarray", "torch": "Tensor", "jax": "Array"}


@pytest.mark.parametrize(
    "expr",
    [lambda A, v: A * v, lambda A, v: v * A, lambda A, v: A / v],
    ids=["A*v", "v*A", "A/v"],
)
def test_operator_times_non_scalar(backend: str, expr: Any) -> None:
    """`*` and `/` are for scalars: an array operand is refused, naming its type."""
    A = sl.Dense(arr(M33, backend))
    v = arr(np.ones(3), backend)
    with pytest.raises(TypeError, match=_ARRAY_TYPE[backend]):
        expr(A, v)


def test_operator_times_bad_scalars() -> None:
    A = sl.Dense(M33)
    with pytest.raises(TypeError, match="bool"):
        A * True
    with pytest.raises(TypeError, match=r"ndarray.*\(3,\)"):
        sl.ScalarMul(np.ones(3), A)
    with pytest.raises(TypeError, match="int64"):
        sl.ScalarMul(np.array(2, dtype=np.int64), A)


@pytest.mark.parametrize(("a", "b"), MIXED)
def test_scalar_of_other_backend(a: str, b: str) -> None:
    A = sl.Dense(arr(M33, a))
    c = arr(np.array(2.0), b)
    with pytest.raises(TypeError, match=rf"{b}.*{a}|{a}.*{b}"):
        A * c


# -- immutability ----------------------------------------------------------------------------
def test_immutable(backend: str) -> None:
    ops = [
        sl.Dense(arr(M33, backend)),
        sl.Diagonal(arr(np.ones(3), backend)),
        sl.Kron(arr(np.eye(2), backend), arr(np.eye(2), backend)),
        sl.Identity(3),
        sl.Permutation(arr(np.array([1, 0, 2]), backend)),
        2 * sl.Dense(arr(M33, backend)),
    ]
    for A in ops:
        name = type(A).__name__
        for attr in ("array", "diag", "factors", "n", "perm", "scalar", "shape", "new_field"):
            with pytest.raises(AttributeError, match=rf"{name} is immutable.*{attr}"):
                setattr(A, attr, None)
        with pytest.raises(AttributeError, match=rf"{name} is immutable"):
            del A.shape


# -- devices ---------------------------------------------------------------------------------
@pytest.mark.cuda
def test_mixed_devices() -> None:
    import torch

    A = sl.Dense(torch.eye(3, dtype=torch.float64, device="cuda"))
    B = sl.Dense(torch.eye(3, dtype=torch.float64))
    x = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"cuda.*cpu"):
        A @ x
    with pytest.raises(ValueError, match=r"cuda.*cpu"):
        x @ A
    with pytest.raises(ValueError, match=r"cuda.*cpu"):
        sl.solve(A, x)
    with pytest.raises(ValueError, match=r"cuda.*cpu"):
        A + B
    with pytest.raises(ValueError, match=r"cuda.*cpu"):
        sl.Kron(A, B)


# -- positive controls: these must work ------------------------------------------------------
@pytest.mark.parametrize(("op_dtype", "x_dtype"), [("float32", "float64"), ("float64", "float32")])
def test_dtype_promotion(backend: str, op_dtype: str, x_dtype: str) -> None:
    a = M33.astype(op_dtype)
    x = np.arange(1.0, 4.0).astype(x_dtype)
    X = np.arange(6.0).reshape(2, 3).astype(x_dtype)
    A = sl.Dense(arr(a, backend))
    y = A @ arr(x, backend)
    assert dtype_name(y) == "float64"
    np.testing.assert_allclose(to_numpy(y), a.astype(np.float64) @ x.astype(np.float64), rtol=1e-6)
    z = arr(X, backend) @ A
    assert dtype_name(z) == "float64"
    np.testing.assert_allclose(to_numpy(z), X.astype(np.float64) @ a.astype(np.float64), rtol=1e-6)
    s = sl.solve(A, arr(x, backend))
    assert dtype_name(s) == "float64"
    np.testing.assert_allclose(
        to_numpy(s), np.linalg.solve(a.astype(np.float64), x.astype(np.float64)), rtol=1e-5
    )


def test_real_operator_complex_array(backend: str) -> None:
    x = np.array([1 + 2j, -1j, 3.0])
    A = sl.Dense(arr(M33, backend))
    y = A @ arr(x, backend)
    assert dtype_name(y) == "complex128"
    np.testing.assert_allclose(to_numpy(y), M33 @ x, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(arr(x, backend) @ A), x @ M33, rtol=1e-12)
    K = sl.Kron(arr(np.eye(3), backend), sl.Diagonal(arr(np.array([1.0, 2.0]), backend)))
    xk = np.arange(6) * (1 + 1j)
    np.testing.assert_allclose(
        to_numpy(K @ arr(xk, backend)), np.kron(np.eye(3), np.diag([1, 2])) @ xk
    )


def test_complex_operator_real_array(backend: str) -> None:
    a = M33 + 1j * np.eye(3)
    x = np.arange(1.0, 4.0)
    y = sl.Dense(arr(a, backend)) @ arr(x, backend)
    assert dtype_name(y) == "complex128"
    np.testing.assert_allclose(to_numpy(y), a @ x, rtol=1e-12)


def test_scalar_multiples_work(backend: str) -> None:
    A = sl.Dense(arr(M33, backend))
    x = np.arange(1.0, 4.0)
    xb = arr(x, backend)
    for op, expected in [
        (2 * A, 2 * M33),
        (A * 2.0, 2 * M33),
        (A / 4, M33 / 4),
        (-A, -M33),
        (np.float64(3.0) * A if backend == "numpy" else 3.0 * A, 3 * M33),
        (arr(np.array(0.5), backend) * A, 0.5 * M33),
        (A - A, 0 * M33),
    ]:
        np.testing.assert_allclose(to_numpy(op @ xb), expected @ x, rtol=1e-12, atol=1e-12)


def test_batched_rows_work(backend: str) -> None:
    X = RNG.standard_normal((2, 5, 3))
    y = arr(X, backend) @ sl.Dense(arr(M34, backend))
    assert tuple(y.shape) == (2, 5, 4)
    np.testing.assert_allclose(to_numpy(y), X @ M34, rtol=1e-12)


def test_value_free_operators_adopt_backend(backend: str) -> None:
    x = np.arange(1.0, 7.0)
    xb = arr(x, backend)
    np.testing.assert_allclose(to_numpy(sl.Identity(6) @ xb), x)
    np.testing.assert_allclose(
        to_numpy(sl.Permutation.stride(2, 3) @ xb), x.reshape(2, 3).T.reshape(-1)
    )
    A = sl.Dense(arr(np.eye(6) * 2, backend))
    np.testing.assert_allclose(to_numpy((A + sl.Identity(6)) @ xb), 3 * x)


def test_permutation_other_integer_dtypes(backend: str) -> None:
    for dtype in ("int32", "int64"):
        P = sl.Permutation(arr(np.array([2, 0, 1], dtype=dtype), backend))
        x = np.array([10.0, 20.0, 30.0])
        np.testing.assert_allclose(to_numpy(P @ arr(x, backend)), x[[2, 0, 1]])


def test_nonsingular_inverses_work(backend: str) -> None:
    x = np.arange(1.0, 5.0)
    blocks = np.stack([np.eye(2), [[2.0, 1.0], [1.0, 2.0]]])
    A = sl.BlockDiag(arr(blocks, backend))
    dense = np.kron(np.diag([1.0, 0.0]), blocks[0]) + np.kron(np.diag([0.0, 1.0]), blocks[1])
    np.testing.assert_allclose(to_numpy(A.inv() @ arr(x, backend)), np.linalg.solve(dense, x))
    D = sl.Diagonal(arr(np.array([1.0, -2.0, 4.0, 0.5]), backend))
    np.testing.assert_allclose(to_numpy(sl.solve(D, arr(x, backend))), x / [1.0, -2.0, 4.0, 0.5])


# -- array subclasses --------------------------------------------------------------------------
# np.matrix and other ndarray subclasses are viewed as plain ndarrays at every entry point
# (constructors and operands); masked arrays are refused wherever an array is taken.
def _constructors(wrap: Any) -> dict[str, Any]:
    """Every way an array gets into an operator, each given arrays through `wrap`."""
    b = np.stack([np.eye(2), 2 * np.eye(2)])
    return {
        "Dense": lambda: sl.Dense(wrap(M33)),
        "Diagonal": lambda: sl.Diagonal(wrap(np.array([1.0, 2.0, 3.0]))),
        "BlockDiag": lambda: sl.BlockDiag(wrap(b)),
        "LowRank": lambda: sl.LowRank(wrap(np.ones((3, 1))), wrap(np.ones((1, 3)))),
        "Kron": lambda: sl.Kron(wrap(np.eye(2)), wrap(M33)),
        "Sum": lambda: sl.Sum(wrap(M33), wrap(np.eye(3))),
        "Product": lambda: sl.Product(wrap(M33), wrap(np.eye(3))),
        "Monarch": lambda: sl.Monarch(wrap(b), wrap(b)),
        "GeneralizedMonarch": lambda: sl.GeneralizedMonarch([wrap(b)], [None, None]),
        "TT": lambda: sl.TT(wrap(np.ones((1, 2, 2, 1)))),
        "BTT": lambda: sl.BTT(wrap(np.ones((1, 1, 2, 2)))),
        "ScalarMul": lambda: sl.ScalarMul(wrap(np.array(2.0)), sl.Dense(M33)),
        "Permutation": lambda: sl.Permutation(wrap(np.array([2, 0, 1]))),
        "project": lambda: sl.project(wrap(M33), sl.LowRank, rank=1),
    }


class _Sub(np.ndarray):
    """A user's ndarray subclass."""


@pytest.mark.filterwarnings("ignore:the matrix subclass")
@pytest.mark.parametrize("kind", ["matrix", "subclass", "memmap"])
@pytest.mark.parametrize("name", list(_constructors(np.asarray)))
def test_ndarray_subclasses_held_as_ndarray(kind: str, name: str, tmp_path: Any) -> None:
    def wrap(x: np.ndarray) -> Any:
        if kind == "matrix":
            return np.matrix(x) if x.ndim == 2 else x  # np.matrix is 2-D only
        if kind == "memmap":
            m = np.memmap(tmp_path / f"{id(x)}.bin", dtype=x.dtype, mode="w+", shape=x.shape)
            m[...] = x
            return m
        return x.view(_Sub)

    op = _constructors(wrap)[name]()
    ref = _constructors(np.asarray)[name]()
    for leaf in sl.pytree.tree_flatten(op)[0]:
        assert type(leaf) is not np.matrix
        assert not isinstance(leaf, (_Sub, np.memmap))
    x = np.arange(1.0, op.shape[1] + 1)
    y = op @ x
    assert type(y) is np.ndarray
    assert y.shape == (op.shape[0],)
    np.testing.assert_allclose(y, ref @ x)
    assert type(op.to_dense()) is np.ndarray


@pytest.mark.filterwarnings("ignore:the matrix subclass")
@pytest.mark.parametrize("where", ["A @ x", "x @ A", "solve"])
def test_matrix_operands_are_plain(where: str) -> None:
    """A (n, 1) or (1, n) np.matrix operand gives the plain ndarray result its ndarray would."""
    for A in (sl.Dense(M33), sl.Diagonal(np.array([1.0, 2.0, 3.0])), sl.Identity(3), sl.Kron(M33)):
        col, row = np.matrix([[1.0], [2.0], [3.0]]), np.matrix([[1.0, 2.0, 3.0]])
        if where == "A @ x":
            y, ref = A @ col, A.to_dense() @ np.asarray(col)
        elif where == "x @ A":
            y, ref = row @ A, np.asarray(row) @ A.to_dense()
        else:
            y, ref = sl.solve(A, col), np.linalg.solve(A.to_dense(), np.asarray(col))
        assert type(y) is np.ndarray, (type(A).__name__, type(y))
        np.testing.assert_allclose(y, ref)


@pytest.mark.parametrize("name", list(_constructors(np.asarray)))
def test_masked_arrays_refused_by_constructors(name: str) -> None:
    with pytest.raises(TypeError, match=r"masked array.*filled\(.*\.data"):
        _constructors(lambda x: np.ma.masked_array(x, mask=np.zeros(x.shape, bool)))[name]()


@pytest.mark.parametrize("where", ["A @ x", "x @ A", "solve", "A.T @ x"])
def test_masked_operands_refused(where: str) -> None:
    x = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    call = {
        "A @ x": lambda A: A @ x,
        "x @ A": lambda A: x @ A,
        "solve": lambda A: sl.solve(A, x),
        "A.T @ x": lambda A: A.T @ x,
    }[where]
    for A in (sl.Dense(M33), sl.Diagonal(np.array([1.0, 2.0, 3.0])), sl.Identity(3)):
        with pytest.raises(TypeError, match=r"masked array"):
            call(A)


# -- dtypes ----------------------------------------------------------------------------------
def _dtype_takers() -> dict[str, Any]:
    """Everything that takes a `dtype=` argument, as `f(dtype)`."""
    return {
        "Identity": lambda d: sl.Identity(3, dtype=d),
        "Identity torch": lambda d: sl.Identity(3, dtype=d, backend="torch"),
        "Permutation": lambda d: sl.Permutation(np.array([1, 0]), dtype=d),
        "stride": lambda d: sl.Permutation.stride(2, 2, dtype=d),
        "StridePermutation": lambda d: sl.StridePermutation(2, 2, dtype=d),
        "to": lambda d: sl.Dense(M33).to(dtype=d),
        "to torch": lambda d: sl.Dense(M33).to(dtype=d, backend="torch"),
        "Monarch.random": lambda d: sl.Monarch.random(4, 4, 2, dtype=d),
        "BTT.random": lambda d: sl.BTT.random((2, 2), (2, 2), 1, dtype=d),
        "TT.random": lambda d: sl.TT.random((2, 2), (2, 2), 1, dtype=d),
        "hadamard": lambda d: sl.hadamard(4, dtype=d),
        "dft": lambda d: sl.dft(4, dtype=d),
    }


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool", np.int64, int, bool])
@pytest.mark.parametrize("name", list(_dtype_takers()))
def test_integer_dtypes_refused(name: str, dtype: Any) -> None:
    if "torch" in name:
        pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"dtype must be a floating-point or complex dtype"):
        _dtype_takers()[name](dtype)


def test_integer_torch_dtypes_refused() -> None:
    torch = pytest.importorskip("torch")
    import structlin.nn as snn

    for dtype in (torch.int64, torch.uint8, torch.bool, torch.complex64, np.float32):
        with pytest.raises(TypeError, match=r"Linear dtype must be a real floating-point"):
            snn.Linear(16, 8, "monarch", dtype=dtype)
    assert sl.Identity(2, dtype="bfloat16", backend="torch").dtype is torch.bfloat16
    for dtype in (torch.int64, torch.uint8, torch.bool):
        with pytest.raises(TypeError, match=r"floating-point or complex dtype"):
            sl.Identity(3, dtype=dtype)
        with pytest.raises(TypeError, match=r"floating-point or complex dtype"):
            sl.Dense(torch.eye(2, dtype=torch.float64)).to(dtype=dtype)


def test_not_a_dtype() -> None:
    with pytest.raises(TypeError, match=r"Identity dtype must be a dtype.*'floot32'"):
        sl.Identity(3, dtype="floot32")


@pytest.mark.filterwarnings("error")
def test_complex_to_real_refused(backend: str) -> None:
    A = sl.Dense(arr(M33 * (1 + 1j), backend))
    real = {"numpy": np.float64, "jax": np.float32}.get(backend)
    if backend == "torch":
        import torch

        real = torch.float64
    for op in (A, A @ sl.Diagonal(arr(np.ones(3) + 0j, backend)), 2.0 * A):
        with pytest.raises(TypeError, match=r"imaginary part.*real"):
            op.to(dtype=real)
    with pytest.raises(TypeError, match=r"imaginary part"):
        sl.Identity(3, dtype=np.complex128).to(dtype=np.float32)
    # complex to complex and real to complex still work
    assert "complex64" in str(A.to(dtype="complex64").dtype)
    assert "complex128" in str(sl.Dense(arr(M33, backend)).to(dtype="complex128").dtype)


def test_static_dtypes_and_devices_are_backend_objects() -> None:
    assert sl.Identity(3, dtype=np.float64).dtype == np.dtype("float64")
    assert type(sl.Identity(3, dtype=np.float64).dtype) is type(np.dtype("float64"))
    assert type(sl.Identity(3, dtype="float32").dtype) is type(np.dtype("float32"))
    assert type(sl.Permutation(np.array([1, 0]), dtype=np.float32).dtype) is type(
        np.dtype("float32")
    )
    assert type(sl.Permutation.stride(2, 2, dtype=np.float32).dtype) is type(np.dtype("float32"))
    assert sl.Identity(3, dtype=np.float64).to(dtype=np.float32).dtype == np.dtype("float32")
    # value-free: no dtype, no device; a device needs a backend
    assert sl.Identity(3).to(device="cpu").device is None
    with pytest.raises(ValueError, match=r"device='cpu' needs a backend"):
        sl.Identity(3, device="cpu")
    assert sl.Identity(3, backend="numpy", device="cpu").device is None
    with pytest.raises(ValueError, match=r"CPU"):
        sl.Identity(3, backend="numpy", device="cuda")


def test_static_devices_torch() -> None:
    torch = pytest.importorskip("torch")
    cpu = torch.device("cpu")
    eye = sl.Identity(3, dtype=torch.float32, backend="torch")
    assert eye.dtype is torch.float32
    assert isinstance(eye.device, torch.device)
    assert eye.device == cpu
    assert sl.Identity(3, dtype=np.float32, backend="torch").dtype is torch.float32
    assert sl.Identity(3, backend="torch", device="cpu").device == cpu
    assert isinstance(sl.Identity(3).to(backend="torch", device="cpu").device, torch.device)
    assert isinstance(eye.to(device="cpu").device, torch.device)
    S = sl.Permutation.stride(2, 2).to(backend="torch", device="cpu")
    assert isinstance(S.device, torch.device)
    assert S.T.device == cpu
    assert isinstance(sl.Dense(torch.eye(2)).to(device="cpu").device, torch.device)
    # bound to the device its arrays are on, it composes with operators there
    D = sl.Dense(torch.eye(3))
    np.testing.assert_allclose(to_numpy((D + eye).to_dense()), 2 * np.eye(3))
    assert sl.Identity(3, dtype=torch.float32).dtype is torch.float32  # value-free, torch dtype


# -- sizes -----------------------------------------------------------------------------------
def _size_takers() -> dict[str, Any]:
    """Everything that takes a size or count, as `f(n)` with `n` in a valid position."""
    b = np.ones((2, 2, 2))
    W = np.ones((4, 4))
    return {
        "Identity": lambda n: sl.Identity(n),
        "stride rows": lambda n: sl.Permutation.stride(n, 2),
        "stride cols": lambda n: sl.StridePermutation(2, n),
        "Monarch shape": lambda n: sl.Monarch(b, b, shape=(n, 4)),
        "GeneralizedMonarch perms": lambda n: sl.GeneralizedMonarch([b], [(n, 2), None]),
        "Monarch.layout": lambda n: sl.Monarch.layout(n, 4, 2),
        "Monarch.random": lambda n: sl.Monarch.random(4, 4, n),
        "BTT.random": lambda n: sl.BTT.random((n, 2), (2, 2), 1),
        "TT.random": lambda n: sl.TT.random((2, 2), (2, 2), n),
        "dft": lambda n: sl.dft(n),
        "dft factors": lambda n: sl.dft(4, factors=(n, 2)),
        "hadamard": lambda n: sl.hadamard(n),
        "project LowRank": lambda n: sl.project(W, sl.LowRank, rank=n),
        "project BlockDiag": lambda n: sl.project(W, sl.BlockDiag, nblocks=n),
        "project Kron": lambda n: sl.project(W, sl.Kron, factor_shapes=((n, 2), (2, 2))),
        "project Monarch": lambda n: sl.project(W, sl.Monarch, nblocks=n),
        "project Monarch blocks": lambda n: sl.project(
            W, sl.Monarch, blocks=((2, 2, n), (2, 2, 2))
        ),
        "project TT": lambda n: sl.project(W, sl.TT, ms=(n, 2), ns=(2, 2), ranks=1),
        "project BTT": lambda n: sl.project(W, sl.BTT, ms=(2, 2), ns=(2, 2), ranks=n),
        "nn.Linear in_features": lambda n: _snn().Linear(n, 8, "lowrank"),
        "nn.Linear nblocks": lambda n: _snn().Linear(16, 8, "monarch", nblocks=n),
        "nn.Linear rank": lambda n: _snn().Linear(16, 8, "btt", rank=n),
        "nn.Linear factors": lambda n: _snn().Linear(16, 8, "kron", factors=((n, 4), (4, 4))),
    }


def _snn() -> Any:
    pytest.importorskip("torch")
    import structlin.nn

    return structlin.nn


@pytest.mark.parametrize("value", [2.0, 2.5, True, np.float64(2.0), "2", None])
@pytest.mark.parametrize("name", list(_size_takers()))
def test_non_integer_sizes_refused(name: str, value: Any) -> None:
    if value is None and name in ("nn.Linear nblocks", "nn.Linear rank"):
        assert _size_takers()[name](value) is not None  # an option of None is its default
        return
    # (`nblocks=None` is "not given": project(W, Monarch) then asks for one of the two.)
    with pytest.raises(TypeError, match=r"must be an integer|must be an int|needs exactly one"):
        _size_takers()[name](value)


@pytest.mark.parametrize("name", list(_size_takers()))
def test_integer_sizes_accepted(name: str) -> None:
    for value in (2, np.int64(2), np.int32(2), np.array(2)):
        out = _size_takers()[name](value)
        assert out is not None
        if isinstance(out, sl.LinearOperator):
            assert all(type(s) is int for s in out.shape)


@pytest.mark.parametrize("name", list(_size_takers()))
def test_negative_sizes_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"must be (a )?(positive|non-negative)"):
        _size_takers()[name](-1)


# -- Permutation indices -------------------------------------------------------------------------
def test_permutation_index_kinds(backend: str) -> None:
    """Every integer kind is taken (converted to the backend's index dtype); bool and
    floating-point indices are refused."""
    dtypes = ["int8", "int16", "int32", "int64", "uint8", "uint16"]
    if backend != "torch":
        dtypes += ["uint32", "uint64"]
    x = np.array([10.0, 20.0, 30.0])
    for dtype in dtypes:
        P = sl.Permutation(arr(np.array([2, 0, 1], dtype=dtype), backend))
        np.testing.assert_allclose(to_numpy(P @ arr(x, backend)), x[[2, 0, 1]])
        np.testing.assert_allclose(to_numpy(arr(x, backend) @ P), x @ np.eye(3)[[2, 0, 1]])
        assert float(to_numpy(sl.slogdet(P)[0])) == 1.0
    for dtype, pattern in (("bool", "bool"), ("float64", "float")):
        with pytest.raises(TypeError, match=rf"integer dtype, got .*{pattern}"):
            sl.Permutation(arr(np.array([1, 0], dtype=dtype), backend))
