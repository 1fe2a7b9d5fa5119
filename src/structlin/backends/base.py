"""The array operations every backend provides.

A backend is a stateless singleton that wraps one array library. Operators never
import NumPy, PyTorch or JAX directly: they ask their backend, which is chosen
from the arrays they hold (see [`structlin.backends.backend_of`][]).
"""

from __future__ import annotations

import abc
from typing import Any

Array = Any
DType = Any
Device = Any


class Backend(abc.ABC):
    """Array operations of one library, with NumPy semantics unless stated.

    Batched linear-algebra routines (`matmul`, `solve`, `inv`, `slogdet`) treat
    the last two axes as the matrix and broadcast over the leading ones.
    """

    name: str

    def __repr__(self) -> str:
        return f"<{self.name} backend>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # A backend is a singleton that operators compare by identity: a pickled or
        # copied one is the registered instance of its name.
        from structlin.backends import get_backend

        return get_backend, (self.name,)

    # -- introspection -------------------------------------------------------
    @abc.abstractmethod
    def is_array(self, x: object) -> bool:
        """Whether `x` is an array (or tracer) of this library."""

    def shape(self, x: Array) -> tuple[int, ...]:
        return tuple(x.shape)

    @abc.abstractmethod
    def device(self, x: Array) -> Device:
        """The device `x` lives on (`None` where the notion does not apply)."""

    @abc.abstractmethod
    def is_floating(self, dtype: DType) -> bool:
        """Whether `dtype` is a real or complex floating-point type."""

    @abc.abstractmethod
    def is_complex(self, dtype: DType) -> bool: ...

    @abc.abstractmethod
    def is_integer(self, dtype: DType) -> bool: ...

    @abc.abstractmethod
    def result_type(self, *dtypes: DType) -> DType: ...

    @abc.abstractmethod
    def default_float(self) -> DType: ...

    @abc.abstractmethod
    def index_dtype(self) -> DType: ...

    def canonical_dtype(self, dtype: DType) -> DType:
        """`dtype` (this library's, another's, or a name such as `"float32"`) as this library's."""
        import numpy as np

        try:
            return np.dtype(dtype)
        except TypeError:  # a torch.dtype
            return np.dtype(str(dtype).removeprefix("torch."))

    def is_concrete(self, x: Array) -> bool:
        """Whether the values of `x` can be read now (false for JAX tracers)."""
        return True

    # -- creation and conversion --------------------------------------------
    @abc.abstractmethod
    def asarray(self, x: Any, dtype: DType = None, device: Device = None) -> Array: ...

    @abc.abstractmethod
    def astype(self, x: Array, dtype: DType) -> Array: ...

    @abc.abstractmethod
    def to_device(self, x: Array, device: Device) -> Array: ...

    @abc.abstractmethod
    def to_numpy(self, x: Array) -> Any: ...

    @abc.abstractmethod
    def eye(self, n: int, dtype: DType, device: Device = None) -> Array: ...

    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...], dtype: DType, device: Device = None) -> Array: ...

    @abc.abstractmethod
    def arange(self, n: int, device: Device = None) -> Array:
        """`[0, 1, ..., n-1]` in the backend's index dtype."""

    # -- shape manipulation --------------------------------------------------
    @abc.abstractmethod
    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array: ...

    @abc.abstractmethod
    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array: ...

    @abc.abstractmethod
    def swap_last(self, x: Array) -> Array:
        """Swap the last two axes (a view where the library has views)."""

    @abc.abstractmethod
    def take(self, x: Array, indices: Array, axis: int) -> Array: ...

    @abc.abstractmethod
    def concatenate(self, xs: list[Array], axis: int = 0) -> Array: ...

    @abc.abstractmethod
    def stack(self, xs: list[Array], axis: int = 0) -> Array: ...

    # -- elementwise and reductions -----------------------------------------
    def pad_to(self, x: Array, axis: int, size: int) -> Array:
        """`x` with zeros appended along `axis` up to length `size` (unchanged if already that long)."""
        have = x.shape[axis]
        if have >= size:
            return x
        shape = list(x.shape)
        shape[axis] = size - have
        return self.concatenate([x, self.zeros(tuple(shape), x.dtype, self.device(x))], axis)

    @abc.abstractmethod
    def conj(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def abs(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def log(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def sum(self, x: Array, axis: int | None = None) -> Array: ...

    @abc.abstractmethod
    def prod(self, x: Array, axis: int | None = None) -> Array: ...

    @abc.abstractmethod
    def minimum(self, x: Array, y: Array) -> Array: ...

    @abc.abstractmethod
    def all(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def isfinite(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def sort(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def argsort(self, x: Array) -> Array: ...

    # -- linear algebra ------------------------------------------------------
    @abc.abstractmethod
    def matmul(self, a: Array, b: Array) -> Array: ...

    def block_matmul(self, a: Array, b: Array) -> Array:
        """`matmul` of two stacks that share their leading (block) axes, as the
        block-diagonal factors of BlockDiag, Monarch and BTT multiply activations.

        The same as `matmul` here; the JAX backend also lines up the operands'
        shardings along those axes (see `JaxBackend.block_matmul`).
        """
        return self.matmul(a, b)

    @abc.abstractmethod
    def einsum(self, subscripts: str, *operands: Array) -> Array: ...

    @abc.abstractmethod
    def diagonal(self, x: Array) -> Array:
        """Diagonal of the last two axes."""

    @abc.abstractmethod
    def kron(self, a: Array, b: Array) -> Array:
        """Kronecker product of two 2-D arrays."""

    @abc.abstractmethod
    def solve(self, a: Array, b: Array) -> Array:
        """`a^{-1} b` for a (batch of) square `a`; raises
        [`SingularOperatorError`][structlin.SingularOperatorError] where the
        library reports a singular matrix."""

    @abc.abstractmethod
    def inv(self, a: Array) -> Array:
        """Inverse of a (batch of) square matrices; raises like `solve`."""

    @abc.abstractmethod
    def slogdet(self, a: Array) -> tuple[Array, Array]:
        """`(sign, log|det|)` of a (batch of) square matrices."""

    @abc.abstractmethod
    def svd(self, a: Array) -> tuple[Array, Array, Array]:
        """Thin SVD `a = U diag(S) Vh` of a (batch of) matrices, `S` descending.

        For `a` of shape `(..., m, n)` and `k = min(m, n)`: `U` is `(..., m, k)`,
        `S` is `(..., k)` (real) and `Vh` is `(..., k, n)`.
        """
