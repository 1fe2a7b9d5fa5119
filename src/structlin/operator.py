"""The `LinearOperator` base class.

An operator is a small immutable object that represents a matrix `A` of shape
`(m, n)` without necessarily storing it. Everything it can do is a plum-dispatched
rule in [`structlin.rules`][] (`matmat`, `transpose`, `inv`, ...); the methods here
are thin, checked entry points to those rules.

Each subclass names the attributes that hold arrays or other operators in
`_children` (they are the leaves of its pytree) and the hashable attributes
that describe it in `_static`. That single declaration gives pytree
flattening, JAX registration, `.to(...)` and parameter extraction for layers.
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from structlin import pytree
from structlin.backends import (
    Array,
    Backend,
    Device,
    DType,
    backend_of,
    get_backend,
    is_array,
    loaded_backends,
)
from structlin.backends.base import DeviceRef

if TYPE_CHECKING:
    from structlin.expressions.scalar_mul import ScalarMul
    from structlin.expressions.sum import Sum


_T = TypeVar("_T")


class cached_property(Generic[_T]):
    """A property computed once per instance, like `functools.cached_property`.

    Without the lock Python 3.11's version takes, which `torch.compile` cannot trace.
    Operators are immutable, so a value computed twice by two threads is the same value.
    """

    def __init__(self, f: Callable[[Any], _T]):
        self.f = f
        self.name = f.__name__
        self.__doc__ = f.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self.f(obj)
        # The instance attribute shadows this descriptor from now on.
        obj.__dict__[self.name] = value
        return value


class LinearOperator(abc.ABC):
    """A matrix `A` of shape `(m, n)` represented by structure.

    Attributes:
        shape: `(m, n)`, Python ints.
        dtype: The dtype of `A`'s entries, as the backend's dtype object
            (`numpy.dtype`, `torch.dtype`); `None` for value-free operators such
            as a generic [`Identity`][structlin.Identity], which adopt the dtype
            of what they act on.
        backend: The [`Backend`][structlin.backends.Backend] of the arrays
            (`None` for value-free operators).
        device: Where the arrays live, as the backend's device object
            (`torch.device`, a JAX device); `None` for NumPy and for value-free
            operators, which adopt the device of what they act on.

    Operations: `A @ x` (`x` of shape `(n,)` or `(n, k)`), `X @ A` (`X` of shape
    `(..., m)`), `A @ B`, `A + B`, `A - B`, `c * A`, `A / c`, `-A`, `A.T`, `A.H`,
    `A.inv()`, `A.to_dense()`, `A.to(dtype=..., device=...)`. `+` and `-` combine two
    operators; `0 + A` is `A` (so `sum([A, B])` works), while an array or another number
    is refused with a `TypeError` (write `sl.Dense(x) + A`, or `A + c * sl.Identity(n)`).

    Inputs: arrays are NumPy arrays, PyTorch tensors (`nn.Parameter` included) or
    JAX arrays, of a floating-point or complex dtype; integer and boolean arrays
    and dtypes are refused (`TypeError`), except a
    [`Permutation`][structlin.Permutation]'s indices. NumPy subclasses such as
    `numpy.matrix` are viewed as plain `numpy.ndarray`s (no copy; results are
    ndarrays); masked arrays are refused (`TypeError`: use `x.filled(value)` or
    `x.data`). Sizes and counts (`Identity(n)`, `nblocks`, `rank`, `shape`, ...)
    are Python or NumPy integers: bools and floats, even `4.0`, are refused
    (`TypeError`), negative or zero ones where they must be positive (`ValueError`).
    Casting a complex operator to a real dtype with `to` is refused (`TypeError`).

    Aliasing: an operator holds the arrays it is given as they are, like a view
    (no copy, so building one every forward pass from parameters is free), and
    caches nothing that depends on their values: a write into those arrays shows
    through on the operator's next use (`A @ x`, `solve`, `to_dense`, `A.T`, ...).
    `A.T`, and `A.H` of a real operator, hold views of the same arrays; operators
    derived by arithmetic (`A.inv()` of a `Dense`, `A.H` of a complex NumPy one,
    a constructor's cast to a common dtype) hold new arrays computed when they
    are built, so take them again after writing. Results
    never alias: `to_dense`, `diag`, `A @ x`, `solve` ... return arrays that
    share no memory with the operator's arrays or with `x`. A `Permutation`
    copies its indices (the exception: they must stay a valid permutation).

    Protocol: what a subclass provides. Rules are registered with
    [`@structlin.rules.dispatch`][structlin.rules] next to the class (see
    [`structlin.rules`][structlin.rules] for the table of rules, fallbacks and costs).

    - Must: `shape` (abstract here), `_children`/`_static` naming its state, and the
      rules `matmat` (`A @ X`; without it every use raises `TypeError`) and a structured
      transpose: `transpose` (preferred; it also serves `A.T @ x` and the layers) or at
      least `rmatmat` (`X @ A`). Without one, `A^T` is a lazy
      [`Transpose`][structlin.Transpose] whose every application builds the dense
      matrix through `matmat` (`O(mn)` memory, `O(mn)` time per column): `X @ A`,
      `A.T @ x` and the [`structlin.nn`][structlin.nn] layers (`X @ A^T`) all pay it,
      and the first such use warns with a
      [`DenseFallbackWarning`][structlin.DenseFallbackWarning] naming the rule. A complex
      operator also registers `adjoint` (else `A.H` is a lazy, dense
      [`Adjoint`][structlin.Adjoint] and warns the same way).
    - May (each replaces a fallback, whose cost is stated): `to_dense` (fallback
      `A @ I`), `inv` (a lazy [`Inverse`][structlin.Inverse] solving densely), `solve`
      (LU of the dense matrix, `O(n^3)`), `slogdet` (dense LU), `diag` (the dense
      matrix's diagonal, `O(n^2)` memory), `trace` (sum of `diag`), `compose`, `add`,
      `scale` (structured simplifications; else lazy [`Product`][structlin.Product],
      [`Sum`][structlin.Sum], [`ScalarMul`][structlin.ScalarMul], which are exact), `to`
      (rebuilds from converted leaves, usually right) and `project` (else `TypeError`).
    - For the layers and μP: `components` (the learnable dense factors and their
      shapes); without it [`structlin.mup`][structlin.mup] and
      `structlin.nn.Linear.from_operator` raise `TypeError` naming the rule.

    [`structlin.testing.check_operator`][structlin.testing.check_operator] checks a
    new operator against its dense matrix on every backend, and
    [`structlin.testing.dot_test`][structlin.testing.dot_test] its transpose.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Kron(np.eye(2), 2.0 * np.eye(2))  # every operator is a LinearOperator
        >>> isinstance(A, sl.LinearOperator), A.shape
        (True, (4, 4))
        >>> B = (A @ A.T).inv()  # stays structured: Kron(I, 4 I)^-1 = Kron(I, I / 4)
        >>> type(B).__name__, float(B.to_dense()[0, 0])
        ('Kron', 0.25)
        >>> type(A + sl.Identity(4)).__name__  # no structured rule: a lazy Sum
        'Sum'
    """

    _children: ClassVar[tuple[str, ...]] = ()
    _static: ClassVar[tuple[str, ...]] = ()
    # Whether this class's `matmat` rule also takes a vector `(n,)` and its `rmatmat` rule
    # rows of any batch shape `(..., m)`, as the backend's `matmul` does. `A @ x` then
    # hands such operands over as they are: for a small operator the two reshapes around
    # the rule cost as much as the product. A subclass that registers rules of its own
    # for 2-D operands only must set it back to `False`.
    _matmul_like: ClassVar[bool] = False

    # Tell NumPy to leave `ndarray @ op` and `scalar * op` to our reflected methods.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        pytree.register(cls)

    # -- immutability ----------------------------------------------------------
    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"{type(self).__name__} is immutable; build a new operator instead of setting {name!r}"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name!r}")

    # -- metadata ----------------------------------------------------------------
    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """`(m, n)`."""

    def _child_values(self) -> list[Any]:
        out: list[Any] = []
        for name in self._children:
            value = getattr(self, name)
            out.extend(value if isinstance(value, tuple) else (value,))
        return out

    @cached_property
    def backend(self) -> Backend | None:
        for child in self._child_values():
            if isinstance(child, LinearOperator):
                if child.backend is not None:
                    return child.backend
            elif is_array(child):
                return backend_of(child)
        return None

    @cached_property
    def device(self) -> Device:
        for child in self._child_values():
            if isinstance(child, LinearOperator):
                if child.backend is not None:
                    return child.device
            elif is_array(child):
                return backend_of(child).device(child)
        return None

    @cached_property
    def dtype(self) -> DType:
        dtypes = []
        for child in self._child_values():
            if isinstance(child, LinearOperator):
                if child.dtype is not None:
                    dtypes.append(child.dtype)
            elif is_array(child):
                dtypes.append(child.dtype)
        if not dtypes:
            return None
        backend = self.backend
        if backend is None:
            # Only value-free members (an `Identity` with a dtype but no backend): their
            # dtypes are NumPy's, as `dense_backend` materialises them with NumPy.
            backend = _numpy_backend()
            dtypes = [backend.canonical_dtype(d) for d in dtypes]
        return backend.result_type(*dtypes)

    @cached_property
    def _plain_operand(self) -> tuple[Backend, DType, Device, int, int, bool] | None:
        """`(backend, dtype, device, m, n, matmul_like)`, what `A @ x` and `x @ A` need to
        know to take an array of this backend, dtype and device without converting it.

        `None` where there is no such array: for value-free operators, integer-valued
        ones and dtypes not given as the backend's own (a name, another library's),
        which all take the full checks.
        """
        backend, dtype = self.backend, self.dtype
        if backend is None or dtype is None or backend.canonical_dtype(dtype) is not dtype:
            return None
        if not backend.is_floating(dtype):
            return None
        m, n = self.shape
        return backend, dtype, self.device, m, n, self._matmul_like

    @property
    def is_square(self) -> bool:
        return self.shape[0] == self.shape[1]

    # -- conversions -------------------------------------------------------------
    def to_dense(self) -> Array:
        """The `(m, n)` array this operator represents (see [`to_dense`][structlin.to_dense])."""
        return _api().to_dense(self)

    def to(
        self, dtype: DType = None, device: Device = None, backend: Backend | str | None = None
    ) -> LinearOperator:
        """A copy with floating-point arrays cast to `dtype`, all arrays moved to
        `device` and, if given, converted to `backend` (see [`to`][structlin.to]).

        Integer index arrays (of a [`Permutation`][structlin.Permutation]) keep their dtype.
        """
        return _api().to(self, dtype=dtype, device=device, backend=backend)

    # -- algebra -----------------------------------------------------------------
    @property
    def T(self) -> LinearOperator:
        """`A^T` (see [`transpose`][structlin.transpose])."""
        return _api().transpose(self)

    @property
    def H(self) -> LinearOperator:
        """`A^H`, the conjugate transpose (see [`adjoint`][structlin.adjoint])."""
        return _api().adjoint(self)

    def inv(self) -> LinearOperator:
        """`A^{-1}` (see [`inv`][structlin.inv])."""
        return _api().inv(self)

    # The common case first: an array that needs no conversion (a few attribute reads,
    # where the isinstance check against this ABC alone costs about as much).
    def __matmul__(self, other: Any) -> Any:
        Y = _api()._plain_matmat(self, other)
        if Y is not None:
            return Y
        if isinstance(other, LinearOperator):
            return _api().compose(self, other)
        return _api().matmat(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        Y = _api()._plain_rmatmat(other, self)
        if Y is not None:
            return Y
        if isinstance(other, LinearOperator):
            return NotImplemented
        return _api().rmatmat(other, self)

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        # PyTorch looks for its hook on the class; what it does is the torch backend's
        # (`TorchBackend.torch_function`: `tensor @ op` without a failed Tensor.__matmul__).
        return (_TORCH_FUNCTION or _torch_function())(func, args, kwargs, _rmatmul)

    # `A + B` and `A - B` take two operators. A zero number is the additive identity, so
    # that `sum([A, B])` (which starts from 0) works; an array or another number is
    # refused with the fix (`__array_ufunc__ = None` makes NumPy, and PyTorch and JAX do
    # so anyway, hand `array + A` to `__radd__`).
    def __add__(self, other: Any) -> Sum | LinearOperator:
        if not isinstance(other, LinearOperator):
            return _not_an_operator(self, other, "A + x", self)
        return _api().add(self, other)

    def __radd__(self, other: Any) -> Sum | LinearOperator:
        if isinstance(other, LinearOperator):  # a subclass's override asked first
            return _api().add(other, self)
        return _not_an_operator(self, other, "x + A", self)

    def __sub__(self, other: Any) -> Sum | LinearOperator:
        if not isinstance(other, LinearOperator):
            return _not_an_operator(self, other, "A - x", self)
        return _api().add(self, _api().scale(-1, other))

    def __rsub__(self, other: Any) -> Sum | LinearOperator:
        if isinstance(other, LinearOperator):
            return _api().add(other, _api().scale(-1, self))
        return _not_an_operator(self, other, "x - A", -self)

    def __neg__(self) -> ScalarMul | LinearOperator:
        return _api().scale(-1, self)

    def __mul__(self, c: Any) -> ScalarMul | LinearOperator:
        if isinstance(c, LinearOperator):
            raise TypeError(
                "`*` multiplies an operator by a scalar; use `A @ B` for the operator product"
            )
        if not _api().is_scalar(c):
            return _not_a_scalar(c, "*")
        return _api().scale(c, self)

    __rmul__ = __mul__

    def __truediv__(self, c: Any) -> ScalarMul | LinearOperator:
        if not _api().is_scalar(c):
            return _not_a_scalar(c, "/")
        return _api().scale(1 / c, self)

    # -- pickling and copying -----------------------------------------------------
    # Values cached on the instance (`backend`, `device`, `_plain_operand`, ...) are
    # derived from the arrays and may hold what cannot be pickled (a JAX `Device`): they
    # are dropped and recomputed on first use. A device its library cannot pickle, held
    # as a static attribute (an `Identity`'s JAX device), travels as its backend's
    # stand-in (`Backend.pickle_device`: a JAX device's platform and id).
    def __getstate__(self) -> dict[str, Any]:
        cls = type(self)
        return {
            name: _picklable(value)
            for name, value in self.__dict__.items()
            if not isinstance(getattr(cls, name, None), cached_property)
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(
                self, name, value.device() if isinstance(value, DeviceRef) else value
            )

    # Operators are compared by identity; `==` on arrays would be ambiguous.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        dtype = getattr(self.dtype, "name", None) or str(self.dtype).replace("torch.", "")
        backend = self.backend.name if self.backend is not None else "any"
        m, n = self.shape
        return f"{type(self).__name__}(shape=({m}, {n}), dtype={dtype}, backend={backend})"


# `structlin.functions`, bound on the first call of `_api`.
_FUNCTIONS: Any = None


def _api() -> Any:
    """`structlin.functions`, whose shorthands the operator methods are (`A @ x`, `A.T`, ...).

    It sits in the layer above this module, so it is imported on first use: importing
    it at the top of this module would be an import cycle. After that, a global read
    (which `torch.compile` traces).
    """
    global _FUNCTIONS
    if _FUNCTIONS is None:
        import structlin.functions

        _FUNCTIONS = structlin.functions
    return _FUNCTIONS


def _numpy_backend() -> Backend:
    return get_backend("numpy")


def _picklable(value: Any) -> Any:
    for backend in loaded_backends():
        ref = backend.pickle_device(value)
        if ref is not None:
            return ref
    return value


# `TorchBackend.torch_function`, looked up on the first call of `__torch_function__` (which
# only PyTorch makes, so the torch backend's import costs nothing new).
_TORCH_FUNCTION: Callable[..., Any] | None = None


def _torch_function() -> Callable[..., Any]:
    global _TORCH_FUNCTION
    _TORCH_FUNCTION = get_backend("torch").torch_function
    return _TORCH_FUNCTION


def _rmatmul(X: Any, A: LinearOperator) -> Any:
    """`X @ A` for the torch backend's `__torch_function__`."""
    Y = _api()._plain_rmatmat(X, A)
    return Y if Y is not None else _api().rmatmat(X, A)


def _not_an_operator(A: LinearOperator, x: Any, op: str, if_zero: LinearOperator) -> Any:
    """`if_zero` where `x` is the number 0, else a TypeError that says what to write."""
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        if x == 0:
            return if_zero
        fix = (
            f"for A + c I write A + c * sl.Identity({A.shape[0]})"
            if A.is_square
            else f"the operator of shape {A.shape} has no identity to add a multiple of"
        )
        raise TypeError(
            f"{op}: `+` and `-` combine two operators (or an operator and 0), got the number "
            f"{x!r}, which would be ambiguous (c I, or c on every entry?); {fix}"
        )
    if is_array(x):
        raise TypeError(
            f"{op}: `+` and `-` combine two operators, got {type(x).__name__} of shape "
            f"{tuple(x.shape)}; wrap the array as an operator, {op.replace('x', 'sl.Dense(x)')}, "
            f"or for a dense result write {op.replace('A', 'A.to_dense()')}"
        )
    return NotImplemented  # let Python raise its TypeError


def _not_a_scalar(c: Any, op: str) -> Any:
    if not is_array(c):
        return NotImplemented  # let Python try the other operand, then raise its TypeError
    raise TypeError(
        f"`{op}` takes a scalar, got {type(c).__name__} of shape {tuple(c.shape)}; to scale rows "
        "or columns use sl.Diagonal(v) @ A or A @ sl.Diagonal(v)"
    )
