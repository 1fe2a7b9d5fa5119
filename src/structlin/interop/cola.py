"""`to_cola` and `from_cola`: structlin operators as CoLA operators, and back.

[CoLA](https://github.com/wilson-labs/cola) (`cola-ml`) is a library of
linear operators with iterative algorithms (CG, GMRES, Lanczos, Arnoldi, LOBPCG,
stochastic trace and log-determinant estimators). [`to_cola`][structlin.to_cola]
keeps the structure where CoLA has the same operator and hands CoLA everything
else as an operator whose products are structlin's, so CoLA's algorithms run on a
Monarch, BTT or TT operator at the cost of its structured products.
[`from_cola`][structlin.from_cola] maps back; `from_cola(to_cola(op))` represents
the same matrix as `op` for every structlin operator.

| structlin | CoLA |
|---|---|
| [`Dense`][structlin.Dense] | `Dense` |
| [`Diagonal`][structlin.Diagonal] | `Diagonal` |
| [`Identity`][structlin.Identity] | `Identity` |
| [`Permutation`][structlin.Permutation], [`StridePermutation`][structlin.StridePermutation] | `Permutation` (same convention: `P @ x == x[perm]`) |
| [`BlockDiag`][structlin.BlockDiag] with `b` blocks | `BlockDiag` of `b` `Dense` blocks |
| [`Kron`][structlin.Kron] | `Kronecker` |
| [`Product`][structlin.Product], [`Sum`][structlin.Sum] | `Product`, `Sum` |
| [`ScalarMul`][structlin.ScalarMul] `c A` | `Product(ScalarMul(c), A)` (CoLA's `ScalarMul` is `c I`) |
| [`Transpose`][structlin.Transpose], [`Adjoint`][structlin.Adjoint] | `Transpose`, `Adjoint` |
| anything else (Monarch, BTT, TT, LowRank, Inverse, your own) | a `StructlinOperator`, products by structlin |

CoLA is imported when one of these functions is first called; install it with
`pip install 'structlin[cola]'`. Installing `cola-ml` replaces the `plum` module
with CoLA's fork of it (`cola-plum-dispatch`); structlin uses only the API both
share and works with either.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any, NamedTuple

import numpy as np

from structlin import _checks, pytree
from structlin._dispatch import dispatch
from structlin.backends import (
    Backend,
    Device,
    DType,
    backend_of,
    get_backend,
    imported_backends,
    is_array,
)
from structlin.expressions.dense import Dense
from structlin.expressions.product import Product
from structlin.expressions.scalar_mul import ScalarMul
from structlin.expressions.sum import Sum
from structlin.expressions.transpose import Adjoint, Transpose
from structlin.operator import LinearOperator
from structlin.operators.block_diag import BlockDiag
from structlin.operators.diagonal import Diagonal
from structlin.operators.identity import Identity
from structlin.operators.kron import Kron
from structlin.operators.permutation import Permutation

__all__ = ["CoLAOperator", "from_cola", "to_cola"]

_INSTALL = "pip install 'structlin[cola]'"


def _cola() -> Any:
    """The `cola` module, or an ImportError that says how to get it."""
    try:
        import cola
        import cola.ops  # the operator classes
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "cola":
            raise
        raise ImportError(f"the CoLA bridge needs CoLA (cola-ml): {_INSTALL}") from error
    except TypeError as error:
        # cola-ml passes `cond=` to plum's dispatch, which only its own fork of plum accepts.
        raise ImportError(
            "CoLA failed to import because the active `plum` module is plum-dispatch, not "
            "CoLA's fork cola-plum-dispatch (plum-dispatch was installed after cola-ml); "
            "reinstall the fork with pip install --force-reinstall --no-deps "
            f"cola-plum-dispatch ({error})"
        ) from error
    return cola


class _Target(NamedTuple):
    """Backend, dtype and device for the value-free parts of a conversion (a bare `Identity`)."""

    backend: Backend
    dtype: DType
    device: Device


def _target(op: LinearOperator) -> _Target:
    backend = op.backend if op.backend is not None else get_backend("numpy")
    dtype = op.dtype if op.dtype is not None else backend.default_float()
    return _Target(backend, backend.canonical_dtype(dtype), op.device)


# -- structlin -> CoLA ---------------------------------------------------------------------
def to_cola(op: LinearOperator) -> Any:
    """`op` as a CoLA `LinearOperator` representing the same matrix, structure kept where CoLA has it.

    Dense, Diagonal, Identity, Permutation, BlockDiag, Kron, Product, Sum,
    ScalarMul, Transpose and Adjoint become the CoLA operators of the same
    structure (see the table in [`structlin.interop.cola`][structlin.interop.cola]),
    with their children converted recursively, so CoLA's own dispatch sees them
    (e.g. `cola.inv` of a `Kronecker` is the Kronecker product of inverses).
    Every other operator (Monarch, BTT, TT, LowRank, Inverse, ...) becomes a
    `StructlinOperator`: CoLA's `A @ X` and `X @ A` on it
    call structlin's `matmat` and `rmatmat`, so CoLA's iterative algorithms
    (`cola.inv(A, alg=cola.CG())`, `cola.eig(A, k, alg=cola.Lanczos())`, ...)
    cost what the structured products cost. Its arrays are the CoLA operator's
    parameters (CoLA's `flatten`, `.to(device)`, and its autograd rules for
    iterative solves see them).

    The arrays are shared, not copied. CoLA picks its array functions from the
    dtype; for NumPy operators the CoLA operators are made to use CoLA's NumPy
    functions (CoLA would otherwise pick JAX's for NumPy dtypes when JAX is installed).
    Those cannot apply the transposes of CoLA's own `Kronecker`, `BlockDiag`,
    `Permutation` and `ScalarMul` (`X @ C` raises CoLA's `NotImplementedError`);
    PyTorch and JAX operators, and the wrapped structlin operators, have both products.

    Args:
        op: A structlin operator of any backend.

    Raises:
        TypeError: `op` is not a structlin operator.
        ImportError: CoLA is not installed (`pip install 'structlin[cola]'`).

    Examples:
        ```python
        import cola
        import numpy as np
        import structlin as sl

        K = sl.Kron(2 * np.eye(3), np.diag([1.0, 2.0]))
        C = sl.to_cola(K)  # a cola Kronecker of a Dense and a Dense
        assert np.allclose(C.to_dense(), K.to_dense())
        M = sl.to_cola(sl.Monarch.random(16, 16, nblocks=4, rng=0))  # a StructlinOperator
        ```
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"to_cola needs a structlin operator, got {type(op).__name__}; "
            "wrap an array with structlin.Dense"
        )
    _cola()
    target = _target(op)
    out = _to_cola(op, target)
    _use_functions(out, target.backend)
    _mark_parameters(out)
    return out


@dispatch
def _to_cola(A: LinearOperator, target: object):
    """Fallback: a `StructlinOperator` whose products are structlin's rules."""
    return _structlin_operator_class()(A, target)


@dispatch
def _to_cola(A: Dense, target: object):
    return _cola().ops.Dense(A.array)


@dispatch
def _to_cola(A: Diagonal, target: object):
    return _cola().ops.Diagonal(A.diag)


@dispatch
def _to_cola(A: Identity, target: object):
    C = _cola().ops.Identity((A.n, A.n), _dtype_or(A, target))
    device = A.device if A.backend is not None else target.device
    return C if device is None else C.to(device)


@dispatch
def _to_cola(A: Permutation, target: object):
    # A StridePermutation builds its index array on demand, value-free ones in NumPy.
    perm = A.perm
    if A.backend is None:
        perm = target.backend.asarray(np.asarray(perm), device=target.device)
    return _cola().ops.Permutation(perm, dtype=_dtype_or(A, target))


@dispatch
def _to_cola(A: BlockDiag, target: object):
    ops = _cola().ops
    return ops.BlockDiag(*(ops.Dense(A.blocks[i]) for i in range(A.nblocks)))


@dispatch
def _to_cola(A: Kron, target: object):
    return _cola().ops.Kronecker(*(_to_cola(f, target) for f in A.factors))


@dispatch
def _to_cola(A: Product, target: object):
    return _cola().ops.Product(*(_to_cola(f, target) for f in A.ops))


@dispatch
def _to_cola(A: Sum, target: object):
    return _cola().ops.Sum(*(_to_cola(f, target) for f in A.ops))


@dispatch
def _to_cola(A: ScalarMul, target: object):
    ops = _cola().ops
    c = A.scalar
    if is_array(c) and backend_of(c).is_concrete(c):
        # CoLA copies the scalar with its library's constructor, which for a tensor warns
        # (torch.tensor); a number is what every library takes.
        c = backend_of(c).to_numpy(c).item()
    inner = _to_cola(A.op, target)
    m, dtype = A.shape[0], _dtype_or(A, target)
    # CoLA's Product wants one device; the inner operator's is the one CoLA chose.
    scalar = ops.ScalarMul(c, (m, m), dtype, inner.device)
    if not (is_array(scalar.c) and backend_of(scalar.c) is target.backend):
        # CoLA made it with the functions it picked from the dtype (JAX's for a NumPy
        # operator, see _use_functions).
        scalar.c = target.backend.asarray(c, dtype=dtype, device=target.device)
    return ops.Product(scalar, inner)


@dispatch
def _to_cola(A: Transpose, target: object):
    return _cola().ops.Transpose(_to_cola(A.op, target))


@dispatch
def _to_cola(A: Adjoint, target: object):
    return _cola().ops.Adjoint(_to_cola(A.op, target))


def _dtype_or(A: LinearOperator, target: _Target) -> DType:
    return target.dtype if A.dtype is None else A.dtype


def _use_functions(C: Any, backend: Backend) -> None:
    """Make `C` and the CoLA operators inside it use CoLA's functions for `backend`'s arrays
    (`Backend.cola_functions`).

    CoLA chooses its array functions (`xnp`) from the dtype, trying JAX first; a
    NumPy dtype is also a JAX dtype, so with JAX installed CoLA would treat NumPy
    operators with JAX functions and hand JAX arrays to their products.
    """
    cola = _cola()
    if backend.cola_functions is None:
        raise TypeError(f"CoLA has no array functions for the {backend.name} backend")
    fns = importlib.import_module(f"cola.backends.{backend.cola_functions}")

    seen: set[int] = set()

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, cola.ops.LinearOperator):
            node.xnp = fns
            for value in vars(node).values():
                visit(value)
        elif isinstance(node, (tuple, list)):
            for value in node:
                visit(value)

    visit(C)


def _mark_parameters(C: Any) -> None:
    """Apply CoLA's own test of which attributes hold parameters to `C` and its children.

    CoLA decides once per class, from the first instance it sees, which attributes
    hold arrays to flatten (its parameters); a `Sum` of NumPy operators seen first
    would hide the tensors of every later PyTorch `Sum` of the same operator types
    from CoLA's autograd rules. Children first: a parent's test flattens them.
    """
    cola = _cola()
    from cola.backends import np_fns
    from cola.ops.operator_base import definitely_dynamic
    from cola.ops.operator_base import is_array as cola_is_array

    fixed = set(cola.ops.LinearOperator._dynamic)  # xnp, shape, dtype, device, annotations
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, (tuple, list)):
            for value in node:
                visit(value)
            return
        if not isinstance(node, cola.ops.LinearOperator):
            return
        for key, value in vars(node).items():
            if key in fixed:
                continue
            visit(value)
            if definitely_dynamic(value) or any(map(cola_is_array, np_fns.tree_flatten(value)[0])):
                type(node)._dynamic[key] = True

    visit(C)


_STRUCTLIN_OPERATOR: type | None = None
# The structlin operator behind each StructlinOperator, rebuilt from its arrays when CoLA
# rebuilds the CoLA operator (tree_unflatten, .to(device), annotations such as cola.PSD).
_OPERATORS: weakref.WeakKeyDictionary[Any, LinearOperator] = weakref.WeakKeyDictionary()


def _structlin_operator_class() -> type:
    """The CoLA `LinearOperator` subclass that wraps structlin operators (defined on first use)."""
    global _STRUCTLIN_OPERATOR
    if _STRUCTLIN_OPERATOR is not None:
        return _STRUCTLIN_OPERATOR
    cola = _cola()

    class StructlinOperator(cola.ops.LinearOperator):
        """A structlin operator seen by CoLA: `A @ X` and `X @ A` are structlin's products.

        `leaves` are the operator's arrays (CoLA's parameters: its pytree flattening,
        `.to(device)` and its autograd rules for iterative algorithms see them) and
        `treedef` is its structure; `operator` rebuilds the structlin operator.
        """

        def __init__(self, op: LinearOperator, target: _Target):
            leaves, treedef = pytree.tree_flatten(op)
            self.leaves = tuple(leaves)
            self.treedef = treedef
            dtype = op.dtype if op.dtype is not None else target.dtype
            super().__init__(dtype=dtype, shape=tuple(int(s) for s in op.shape))
            device = op.device if op.backend is not None else target.device
            if device is not None:
                self.device = device
            _OPERATORS[self] = op

        @property
        def operator(self) -> LinearOperator:
            """The structlin operator, `op` itself for the operator `to_cola(op)` made."""
            op = _OPERATORS.get(self)
            if op is None:
                op = _OPERATORS[self] = pytree.tree_unflatten(self.treedef, list(self.leaves))
            return op

        def _matmat(self, X: Any) -> Any:
            return _apply(self.operator, X, rows=False)

        def _rmatmat(self, X: Any) -> Any:
            return _apply(self.operator, X, rows=True)

        def __str__(self) -> str:
            return type(self.operator).__name__

    # The arrays are CoLA parameters even for an operator that has none; CoLA would
    # otherwise fix this per class from the first instance it sees.
    StructlinOperator._dynamic.update(leaves=True, treedef=False)
    StructlinOperator.__module__ = __name__
    StructlinOperator.__qualname__ = "StructlinOperator"
    _STRUCTLIN_OPERATOR = StructlinOperator
    return StructlinOperator


def _apply(op: LinearOperator, X: Any, rows: bool) -> Any:
    """`op @ X`, or `X @ op` if `rows`, for an array CoLA passes; the result is of `X`'s library."""
    source = backend_of(X)
    backend = op.backend
    if backend is None or backend is source:
        return X @ op if rows else op @ X
    # Only NumPy operators meet other arrays here: CoLA functions chosen from a NumPy dtype
    # may be JAX's (see _use_functions). Compute in NumPy and give back X's library.
    if backend is not get_backend("numpy") or not source.is_concrete(X):
        raise TypeError(
            f"CoLA applied the {backend.name} operator {type(op).__name__} of shape "
            f"{_checks.shape_str(op.shape)} to a {source.name} array; convert the operator "
            f"with op.to(backend='{source.name}') before to_cola"
        )
    Xn = source.to_numpy(X)
    Y = Xn @ op if rows else op @ Xn
    return source.asarray(Y, device=source.device(X))


# -- CoLA -> structlin ---------------------------------------------------------------------
class CoLAOperator(LinearOperator):
    """A CoLA operator as a structlin operator: `A @ X` and `X @ A` are CoLA's products.

    What [`from_cola`][structlin.from_cola] returns for CoLA operators with no
    structlin counterpart (`Tridiagonal`, `Sparse`, `Jacobian`, `FFT`, a CoLA
    inverse, ...). Every structlin rule works on it through the fallbacks
    (`solve` and `slogdet` with the dense matrix, built by applying CoLA's
    operator to the identity); transposes are CoLA's. The CoLA operator is held
    as static data, so JAX transformations treat its arrays as constants.
    `to_cola` of it returns the CoLA operator.

    Args:
        cola_op: The CoLA `LinearOperator`.
        backend: Its structlin backend (found from its arrays if `None`).
    """

    _static = ("cola_op", "_backend", "_dtype", "_device")

    def __init__(self, cola_op: Any, backend: Backend | str | None = None):
        cola = _cola()
        if not isinstance(cola_op, cola.ops.LinearOperator):
            raise TypeError(
                f"CoLAOperator needs a CoLA LinearOperator, got {type(cola_op).__name__}"
            )
        if isinstance(backend, str):
            backend = get_backend(backend)
        if backend is None:
            backend = _cola_backend(cola_op)
        device = backend.foreign_device(cola_op.device)
        dtype = backend.canonical_dtype(cola_op.dtype)
        self._set(cola_op=cola_op, _backend=backend, _dtype=dtype, _device=device)

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.cola_op.shape
        return (int(m), int(n))

    @property
    def dtype(self) -> DType:
        return self._dtype

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def device(self) -> Device:
        return self._device


def from_cola(cola_op: Any) -> LinearOperator:
    """The structlin operator for a CoLA `LinearOperator`, structure kept where structlin has it.

    The inverse of [`to_cola`][structlin.to_cola]: CoLA's `Dense`, `Diagonal`,
    `Identity`, `Permutation`, `Kronecker`, `Product`, `Sum`, `ScalarMul`,
    `Transpose` and `Adjoint`, and a `BlockDiag` of equal dense blocks, become
    the structlin operators of the same structure (transposes structured:
    `Transpose(Kronecker(A, B))` gives `Kron(A^T, B^T)`); a
    `StructlinOperator` gives back the structlin operator
    it wraps (the very object for one made by `to_cola`); anything else becomes a
    [`CoLAOperator`][structlin.interop.cola.CoLAOperator] whose products are CoLA's.
    The arrays are shared, not copied; the backend is that of the CoLA
    operator's arrays.

    Args:
        cola_op: A CoLA `LinearOperator`.

    Raises:
        TypeError: `cola_op` is not a CoLA `LinearOperator`.
        ImportError: CoLA is not installed (`pip install 'structlin[cola]'`).

    Examples:
        ```python
        import cola
        import numpy as np
        import structlin as sl

        C = cola.ops.Kronecker(cola.ops.Dense(np.eye(2)), cola.ops.Diagonal(np.ones(3)))
        K = sl.from_cola(C)  # Kron(Dense, Diagonal)
        M = sl.Monarch.random(16, 16, nblocks=4, rng=0)
        assert sl.from_cola(sl.to_cola(M)) is M
        ```
    """
    cola = _cola()
    if not isinstance(cola_op, cola.ops.LinearOperator):
        raise TypeError(
            f"from_cola needs a CoLA LinearOperator, got {type(cola_op).__module__}."
            f"{type(cola_op).__qualname__}"
        )
    backend = _cola_backend(cola_op)
    dtype = backend.canonical_dtype(cola_op.dtype)
    device = backend.foreign_device(cola_op.device)
    return _from_cola(cola_op, _Target(backend, dtype, device))


def _cola_backend(C: Any) -> Backend:
    """The structlin backend of a CoLA operator: that of its first array that is not a scalar
    (CoLA makes the scalars of `c * A` with the functions it picks from the dtype, JAX's for
    NumPy dtypes), else of its first scalar, else of its `xnp`."""
    cola = _cola()
    structlin_class = _structlin_operator_class()
    found: list[tuple[bool, Backend]] = []  # (is a scalar, backend), in the order met
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if is_array(node):
            found.append((len(node.shape) == 0, backend_of(node)))
        elif isinstance(node, structlin_class):
            if node.operator.backend is not None:
                found.append((False, node.operator.backend))
        elif isinstance(node, cola.ops.LinearOperator):
            for key, value in vars(node).items():
                if key != "xnp":
                    visit(value)
        elif isinstance(node, (tuple, list)):
            for value in node:
                visit(value)

    visit(C)
    if found:
        return min(found, key=lambda f: f[0])[1]  # the first non-scalar's, if any
    name = getattr(C.xnp, "__name__", "").rpartition(".")[2]
    for backend in imported_backends():
        if backend.cola_functions == name:
            return backend
    return get_backend("numpy")


def _from_cola(C: Any, target: _Target) -> LinearOperator:
    ops = _cola().ops

    def convert(node: Any) -> LinearOperator:
        return _from_cola(node, target)

    if isinstance(C, _structlin_operator_class()):
        return C.operator
    if isinstance(C, ops.Dense):  # also Triangular, which stores the full matrix
        return Dense(C.A)
    if isinstance(C, ops.Diagonal):
        return Diagonal(C.diag)
    if isinstance(C, ops.Identity):
        return Identity(C.shape[0], _dtype(C, target), target.backend, target.device)
    if isinstance(C, ops.Permutation):
        return Permutation(C.perm, _dtype(C, target))
    if isinstance(C, ops.ScalarMul):
        identity = Identity(C.shape[0], _dtype(C, target), target.backend, target.device)
        return ScalarMul(_scalar(C.c, target), identity)
    if isinstance(C, ops.Kronecker):
        return Kron(*map(convert, C.Ms))
    if isinstance(C, ops.Sum):
        return Sum(*map(convert, C.Ms))
    if isinstance(C, ops.Product):
        first, *rest = C.Ms
        if isinstance(first, ops.ScalarMul) and rest:  # how CoLA writes c * A
            rest_op = convert(rest[0]) if len(rest) == 1 else Product(*map(convert, rest))
            return ScalarMul(_scalar(first.c, target), rest_op)
        return Product(*map(convert, C.Ms))
    if isinstance(C, ops.Transpose):
        return convert(C.A).T
    if isinstance(C, ops.Adjoint):
        return convert(C.A).H
    if isinstance(C, ops.BlockDiag):
        blocks = [convert(M) for M, c in zip(C.Ms, C.multiplicities, strict=True) for _ in range(c)]
        shapes = {b.shape for b in blocks}
        if all(isinstance(b, Dense) for b in blocks) and len(shapes) == 1:
            return BlockDiag(target.backend.stack([b.array for b in blocks]))
    return CoLAOperator(C, target.backend)


def _dtype(C: Any, target: _Target) -> DType:
    return target.backend.canonical_dtype(C.dtype)


def _scalar(c: Any, target: _Target) -> Any:
    """A CoLA `ScalarMul`'s scalar in the target backend (CoLA makes it with the functions it
    chose from the dtype, JAX's for a NumPy operator)."""
    if not is_array(c) or backend_of(c) is target.backend:
        return c
    return target.backend.asarray(backend_of(c).to_numpy(c), device=target.device)


# -- rules of CoLAOperator -----------------------------------------------------------------
@dispatch
def matmat(A: CoLAOperator, X: object):
    return A.cola_op @ X


@dispatch
def rmatmat(X: object, A: CoLAOperator):
    return X @ A.cola_op


@dispatch
def transpose(A: CoLAOperator):
    return CoLAOperator(A.cola_op.T, A.backend)


@dispatch
def adjoint(A: CoLAOperator):
    return CoLAOperator(A.cola_op.H, A.backend)


@dispatch
def _to_cola(A: CoLAOperator, target: object):
    return A.cola_op


@dispatch
def to(A: CoLAOperator, dtype: object, device: object, backend: object):
    same_backend = backend is None or backend is A.backend
    same_dtype = dtype is None or A.backend.canonical_dtype(dtype) == A.dtype
    if not (same_backend and same_dtype):
        raise TypeError(
            f"CoLAOperator of shape {_checks.shape_str(A.shape)} ({A.backend.name}, {A.dtype}) "
            "cannot change backend or dtype; convert the CoLA operator's arrays and call "
            "from_cola again"
        )
    if device is None or device == A.device:
        return A
    return CoLAOperator(A.cola_op.to(device), A.backend)
