"""JAX backend (works under `jit`, `vmap` and `grad`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from structlin.backends.base import Array, Backend, Device, DType
from structlin.errors import SingularOperatorError


class JaxBackend(Backend):
    name = "jax"

    def is_array(self, x: object) -> bool:
        return isinstance(x, jax.Array)

    def device(self, x: Array) -> Device:
        if isinstance(x, jax.core.Tracer):
            return None
        return x.device

    def is_concrete(self, x: Array) -> bool:
        return not isinstance(x, jax.core.Tracer)

    def is_floating(self, dtype: DType) -> bool:
        return jnp.issubdtype(dtype, jnp.inexact)

    def is_complex(self, dtype: DType) -> bool:
        return jnp.issubdtype(dtype, jnp.complexfloating)

    def is_integer(self, dtype: DType) -> bool:
        return jnp.issubdtype(dtype, jnp.integer)

    def result_type(self, *dtypes: DType) -> DType:
        return jnp.result_type(*dtypes)

    def default_float(self) -> DType:
        return jax.dtypes.canonicalize_dtype(jnp.float64)

    def index_dtype(self) -> DType:
        return jax.dtypes.canonicalize_dtype(jnp.int64)

    def asarray(self, x: Any, dtype: DType = None, device: Device = None) -> Array:
        out = jnp.asarray(x, dtype=dtype)
        return out if device is None else jax.device_put(out, device)

    def astype(self, x: Array, dtype: DType) -> Array:
        return x.astype(dtype)

    def to_device(self, x: Array, device: Device) -> Array:
        return jax.device_put(x, device)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def eye(self, n: int, dtype: DType, device: Device = None) -> Array:
        return self.asarray(jnp.eye(n, dtype=dtype), device=device)

    def zeros(self, shape: tuple[int, ...], dtype: DType, device: Device = None) -> Array:
        return self.asarray(jnp.zeros(shape, dtype=dtype), device=device)

    def arange(self, n: int, device: Device = None) -> Array:
        return self.asarray(jnp.arange(n), device=device)

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        return jnp.reshape(x, shape)

    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array:
        return jnp.transpose(x, axes)

    def swap_last(self, x: Array) -> Array:
        return jnp.swapaxes(x, -1, -2)

    def take(self, x: Array, indices: Array, axis: int) -> Array:
        return jnp.take(x, indices, axis=axis)

    def concatenate(self, xs: list[Array], axis: int = 0) -> Array:
        return jnp.concatenate(xs, axis=axis)

    def stack(self, xs: list[Array], axis: int = 0) -> Array:
        return jnp.stack(xs, axis=axis)

    def conj(self, x: Array) -> Array:
        return jnp.conj(x)

    def abs(self, x: Array) -> Array:
        return jnp.abs(x)

    def log(self, x: Array) -> Array:
        return jnp.log(x)

    def sum(self, x: Array, axis: int | None = None) -> Array:
        return jnp.sum(x, axis=axis)

    def prod(self, x: Array, axis: int | None = None) -> Array:
        return jnp.prod(x, axis=axis)

    def minimum(self, x: Array, y: Array) -> Array:
        return jnp.minimum(x, y)

    def all(self, x: Array) -> Array:
        return jnp.all(x)

    def isfinite(self, x: Array) -> Array:
        return jnp.isfinite(x)

    def sort(self, x: Array) -> Array:
        return jnp.sort(x)

    def argsort(self, x: Array) -> Array:
        return jnp.argsort(x)

    # The library's own function, with no Python frame around it: operators' rules call it
    # on every product, where the frame's cost shows (64 x 64).
    matmul = staticmethod(jnp.matmul)

    def einsum(self, subscripts: str, *operands: Array) -> Array:
        return jnp.einsum(subscripts, *operands)

    def diagonal(self, x: Array) -> Array:
        return jnp.diagonal(x, axis1=-2, axis2=-1)

    def kron(self, a: Array, b: Array) -> Array:
        return jnp.kron(a, b)

    def _check_finite(self, a: Array, out: Array) -> Array:
        # LAPACK through XLA reports singularity as inf/nan rather than raising;
        # outside tracing the values are concrete and the error can be eager.
        if (
            self.is_concrete(out)
            and not bool(jnp.all(jnp.isfinite(out)))
            and bool(jnp.all(jnp.isfinite(a)))
        ):
            raise SingularOperatorError(f"singular matrix of shape {tuple(a.shape)}")
        return out

    def solve(self, a: Array, b: Array) -> Array:
        return self._check_finite(a, jnp.linalg.solve(a, b))

    def inv(self, a: Array) -> Array:
        return self._check_finite(a, jnp.linalg.inv(a))

    def slogdet(self, a: Array) -> tuple[Array, Array]:
        sign, logabsdet = jnp.linalg.slogdet(a)
        return sign, logabsdet

    def svd(self, a: Array) -> tuple[Array, Array, Array]:
        u, s, vh = jnp.linalg.svd(a, full_matrices=False)
        return u, s, vh
