"""JAX backend (works under `jit`, `vmap` and `grad`)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from structlin.backends.base import Array, Backend, Device, DeviceRef, DType
from structlin.errors import NotPositiveDefiniteError, SingularOperatorError


class JaxBackend(Backend):
    name = "jax"
    mutable = False
    cola_functions = "jax_fns"

    def is_array(self, x: object) -> bool:
        return isinstance(x, jax.Array)

    def device(self, x: Array) -> Device:
        if isinstance(x, jax.core.Tracer):
            return None
        return x.device

    def is_concrete(self, x: Array) -> bool:
        return not isinstance(x, jax.core.Tracer)

    def pickle_device(self, value: Any) -> DeviceRef | None:
        if isinstance(value, jax.Device):
            return _PickledDevice(value.platform, value.id)
        return None

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

    def import_array(self, host: Any, dtype: DType | str) -> Array:
        # The dtype as JAX would make it (float64 is float32 unless `jax_enable_x64`), and
        # a cast only where it differs: JAX warns of an explicit float64 it cannot make.
        x = jnp.asarray(host)
        want = jax.dtypes.canonicalize_dtype(self.canonical_dtype(dtype))
        return x if x.dtype == want else x.astype(want)

    def eye(self, n: int, dtype: DType, device: Device = None) -> Array:
        return self.asarray(jnp.eye(n, dtype=dtype), device=device)

    def zeros(self, shape: tuple[int, ...], dtype: DType, device: Device = None) -> Array:
        return self.asarray(jnp.zeros(shape, dtype=dtype), device=device)

    def arange(self, n: int, device: Device = None) -> Array:
        return self.asarray(jnp.arange(n), device=device)

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        spec = _explicit_spec(x)
        if spec is None:
            return jnp.reshape(x, shape)
        # Under Explicit mesh axes JAX asks where a reshape that merges a sharded
        # axis into a larger one puts the sharding (a stride permutation's last step).
        return jnp.reshape(x, shape, out_sharding=_reshaped_spec(x, spec, tuple(shape)))

    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array:
        return jnp.transpose(x, axes)

    def swap_last(self, x: Array) -> Array:
        return jnp.swapaxes(x, -1, -2)

    def take(self, x: Array, indices: Array, axis: int) -> Array:
        spec = _explicit_spec(x)
        if spec is None or spec[axis] is None or indices.ndim != 1:
            return jnp.take(x, indices, axis=axis)
        # A gather along an axis sharded over Explicit mesh axes needs its output's
        # sharding stated: the same as the input's (an all-to-all for a permutation),
        # or that axis whole where the result's length does not split evenly.
        out = list(spec)
        length = indices.shape[0]
        names = spec[axis] if isinstance(spec[axis], tuple) else (spec[axis],)
        if length % math.prod(jax.typeof(x).sharding.mesh.shape[n] for n in names):
            out[axis] = None
        index = (slice(None),) * axis + (indices,)
        return x.at[index].get(out_sharding=jax.sharding.PartitionSpec(*out))

    def concatenate(self, xs: list[Array], axis: int = 0) -> Array:
        return jnp.concatenate(xs, axis=axis)

    def stack(self, xs: list[Array], axis: int = 0) -> Array:
        return jnp.stack(xs, axis=axis)

    def conj(self, x: Array) -> Array:
        return jnp.conj(x)

    def real(self, x: Array) -> Array:
        return jnp.real(x)

    def abs(self, x: Array) -> Array:
        return jnp.abs(x)

    def log(self, x: Array) -> Array:
        return jnp.log(x)

    def sqrt(self, x: Array) -> Array:
        return jnp.sqrt(x)

    def exp(self, x: Array) -> Array:
        return jnp.exp(x)

    def real(self, x: Array) -> Array:
        return jnp.real(x)

    def where(self, condition: Array, x: Array, y: Array) -> Array:
        return jnp.where(condition, x, y)

    def any(self, x: Array) -> Array:
        return jnp.any(x)

    def while_loop(self, cond: Any, body: Any, state: Any) -> Any:
        return jax.lax.while_loop(cond, body, state)

    def implicit_solve(
        self,
        solve: Any,
        apply: Any,
        apply_adjoint: Any,
        leaves: list[Array],
        B: Array,
        symmetric: bool,
    ) -> tuple[Array, Any]:
        # `custom_linear_solve` differentiates through `matvec`'s closure (the leaves) and
        # hands `transpose_solve` the transposed `matvec` for the backward pass.
        def matvec(V: Array) -> Array:
            return apply(leaves, V)

        return jax.lax.custom_linear_solve(
            matvec,
            B,
            solve,
            transpose_solve=lambda vecmat, G: solve(vecmat, G),
            symmetric=symmetric,
            has_aux=True,
        )

    def custom_vjp(self, forward: Any, backward: Any, arrays: list[Array]) -> tuple[Array, Any]:
        @jax.custom_vjp
        def run(*arrays: Array) -> tuple[Array, Any]:
            return forward(list(arrays))

        def run_forward(*arrays: Array) -> tuple[tuple[Array, Any], Any]:
            Y, aux = forward(list(arrays))
            return (Y, aux), (arrays, Y)

        def run_backward(saved: Any, cotangents: Any) -> tuple[Any, ...]:
            # `backward` takes and gives cotangents in PyTorch's convention, conjugate to
            # JAX's for complex arrays (the same for real ones).
            arrays, Y = saved
            grads = backward(list(arrays), Y, jnp.conj(cotangents[0]))
            return tuple(
                _zero_cotangent(x) if g is None else _conj(g)
                for x, g in zip(arrays, grads, strict=True)
            )

        run.defvjp(run_forward, run_backward)
        return run(*arrays)

    def vjp(self, f: Any, arrays: list[Array], cotangent: Array) -> list[Array | None]:
        # In PyTorch's convention, as `custom_vjp`'s `backward` wants it.
        _, pullback = jax.vjp(lambda *xs: f(list(xs)), *arrays)
        return [_conj(g) for g in pullback(jnp.conj(cotangent))]

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

    def block_matmul(self, a: Array, b: Array) -> Array:
        """`a @ b` where one operand may be sharded along a leading (block) axis.

        Under a mesh with `Explicit` axes (`jax.make_mesh`'s default) the sharding is
        part of an array's type, and `jnp.matmul` rejects a batch axis sharded in one
        operand and not in the other. A structured factor sharded by block meets
        activations that are not, so the activations are resharded to hold, on each
        device, the rows of its own blocks: exactly the communication the
        permutation between two factors needs, and none inside a factor. Under
        `Auto` axes, or with no mesh, the types carry no sharding and this is `matmul`.
        """
        spec_a, spec_b = _explicit_spec(a), _explicit_spec(b)
        if spec_a is None and spec_b is None:
            return jnp.matmul(a, b)
        spec_a, spec_b = _matched_batch_specs(a.shape, spec_a, b.shape, spec_b)
        return jnp.matmul(_reshard(a, spec_a), _reshard(b, spec_b))

    def einsum(self, subscripts: str, *operands: Array) -> Array:
        return jnp.einsum(subscripts, *operands)

    def diagonal(self, x: Array) -> Array:
        return jnp.diagonal(x, axis1=-2, axis2=-1)

    def kron(self, a: Array, b: Array) -> Array:
        return jnp.kron(a, b)

    def _check_finite(self, out: Array, *inputs: Array) -> Array:
        # LAPACK through XLA reports singularity as inf/nan rather than raising;
        # outside tracing the values are concrete and the error can be eager. Non-finite
        # output from non-finite input (in the matrix or the right-hand side) is NaN
        # propagating, as on NumPy and PyTorch, not singularity.
        if (
            self.is_concrete(out)
            and not bool(jnp.all(jnp.isfinite(out)))
            and all(bool(jnp.all(jnp.isfinite(x))) for x in inputs)
        ):
            a = inputs[0]
            raise SingularOperatorError(f"singular matrix of shape {tuple(a.shape)}")
        return out

    # XLA's factorisations take no matrix split across devices (under Explicit mesh
    # axes JAX refuses one), so a sharded matrix is gathered whole first.
    def _solve(self, a: Array, b: Array) -> Array:
        a, b = _whole_matrices(a), _whole_matrices(b)
        return self._check_finite(jnp.linalg.solve(a, b), a, b)

    def _inv(self, a: Array) -> Array:
        a = _whole_matrices(a)
        return self._check_finite(jnp.linalg.inv(a), a)

    def _slogdet(self, a: Array) -> tuple[Array, Array]:
        sign, logabsdet = jnp.linalg.slogdet(_whole_matrices(a))
        return sign, logabsdet

    def _eigh(self, a: Array) -> tuple[Array, Array]:
        w, v = jnp.linalg.eigh(_whole_matrices(a))
        return w, v

    def _cholesky(self, a: Array) -> Array:
        L = jnp.linalg.cholesky(_whole_matrices(a))
        if self.is_concrete(L) and not bool(jnp.all(jnp.isfinite(L))):
            raise NotPositiveDefiniteError(
                f"Cholesky factorisation failed for a matrix of shape {tuple(a.shape)}: "
                "not positive definite"
            )
        return L

    def _cholesky_solve(self, L: Array, b: Array) -> Array:
        return jax.scipy.linalg.cho_solve((L, True), b)

    def triangle(self, x: Array, lower: bool) -> Array:
        return jnp.tril(x) if lower else jnp.triu(x)

    def _solve_triangular(self, a: Array, b: Array, lower: bool) -> Array:
        a, b = _whole_matrices(a), _whole_matrices(b)
        return jax.scipy.linalg.solve_triangular(a, b, lower=lower)

    def index_add(self, x: Array, index: Array, values: Array) -> Array:
        return x.at[index].add(values)

    def sparse_matmul(self, values: Array, rows: Array, cols: Array, m: int, X: Array) -> Array:
        from jax.experimental import sparse

        indices = jnp.stack([rows, cols], axis=1)
        return sparse.BCOO((values, indices), shape=(m, X.shape[0])) @ X

    def sparse_entries(self, x: Any) -> tuple[Array, Array, Array, tuple[int, int]] | None:
        import sys

        sparse = sys.modules.get("jax.experimental.sparse")
        if sparse is None or not isinstance(x, sparse.JAXSparse):
            return None
        if not isinstance(x, (sparse.BCOO, sparse.BCSR)):
            raise TypeError(
                f"Sparse takes JAX sparse matrices of type BCOO or BCSR, got "
                f"{type(x).__name__}; convert with jax.experimental.sparse.BCOO.fromdense(x.todense())"
            )
        if len(x.shape) != 2 or x.n_batch or x.n_dense:
            raise ValueError(
                f"Sparse needs a 2-D sparse matrix, got a {type(x).__name__} of shape "
                f"{tuple(x.shape)} with {x.n_batch} batch and {x.n_dense} dense dimensions"
            )
        m, n = x.shape
        index = self.index_dtype()
        if isinstance(x, sparse.BCOO):
            return x.data, x.indices[:, 0].astype(index), x.indices[:, 1].astype(index), (m, n)
        counts = jnp.diff(x.indptr)
        rows = jnp.repeat(jnp.arange(m, dtype=index), counts, total_repeat_length=x.nse)
        return x.data, rows, x.indices.astype(index), (m, n)

    def _svd(self, a: Array) -> tuple[Array, Array, Array]:
        a = _whole_matrices(a)
        if self.is_concrete(a):  # checked finite by `svd`
            u, s, vh = jnp.linalg.svd(a, full_matrices=False)
            return u, s, vh
        # Traced: the values cannot be checked, and LAPACK's SVD may never return on a
        # non-finite matrix; such a matrix is replaced by zeros and its results by NaN.
        finite = jnp.all(jnp.isfinite(a), axis=(-2, -1), keepdims=True)
        u, s, vh = jnp.linalg.svd(jnp.where(finite, a, 0), full_matrices=False)
        return (
            jnp.where(finite, u, jnp.nan),
            jnp.where(finite[..., 0], s, jnp.nan),
            jnp.where(finite, vh, jnp.nan),
        )


class _PickledDevice(DeviceRef):
    """A JAX device in a pickle (an operator's static device): its platform and id."""

    def __init__(self, platform: str, id: int):
        self.platform, self.id = platform, id

    def device(self) -> Device:
        for device in jax.devices(self.platform):
            if device.id == self.id:
                return device
        raise ValueError(
            f"cannot restore an operator pickled on JAX device {self.platform}:{self.id}, "
            "which this process does not have; load it where that device exists, or "
            "move it with op.to(device=...) before pickling"
        )


# -- explicit sharding ------------------------------------------------------------------

_Spec = tuple[Any, ...]


def _explicit_spec(x: Array) -> _Spec | None:
    """`x`'s sharding per axis as its type states it (Explicit mesh axes), or `None`
    when the type states none (no mesh, Auto axes, or a replicated array)."""
    spec = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(spec, "spec", None)
    if spec is None:
        return None
    entries = tuple(spec) + (None,) * (x.ndim - len(spec))
    return entries if any(e is not None for e in entries) else None


def _matched_batch_specs(
    shape_a: tuple[int, ...], spec_a: _Spec | None, shape_b: tuple[int, ...], spec_b: _Spec | None
) -> tuple[_Spec | None, _Spec | None]:
    """Specs for the two operands of a batched matmul in which every batch axis (aligned
    from the right, as broadcasting aligns them) that one operand shards and the other
    holds whole, of the same length, is sharded alike in both."""
    new_a = list(spec_a or (None,) * len(shape_a))
    new_b = list(spec_b or (None,) * len(shape_b))
    batch = min(len(shape_a), len(shape_b)) - 2
    for i in range(1, batch + 1):
        da, db = len(shape_a) - 2 - i, len(shape_b) - 2 - i
        if new_a[da] == new_b[db] or shape_a[da] != shape_b[db]:
            continue
        if new_b[db] is None:
            _move_to(new_b, db, new_a[da])
        elif new_a[da] is None:
            _move_to(new_a, da, new_b[db])
    return tuple(new_a), tuple(new_b)


def _mesh_axes(entry: Any) -> set[Any]:
    return set(entry) if isinstance(entry, tuple) else {entry} - {None}


def _move_to(spec: list[Any], axis: int, entry: Any) -> None:
    """Shard `axis` over `entry`'s mesh axes, taking them off any other axis (a mesh
    axis shards at most one axis of an array)."""
    taken = _mesh_axes(entry)
    for i, other in enumerate(spec):
        if _mesh_axes(other) & taken:
            spec[i] = None
    spec[axis] = entry


def _reshaped_spec(x: Array, spec: _Spec, shape: tuple[int, ...]) -> jax.sharding.PartitionSpec:
    """Where `reshape(x, shape)` keeps `x`'s sharding (the rule is `_reshape_spec`)."""
    if -1 in shape:
        known = math.prod(n for n in shape if n != -1)
        shape = tuple(x.size // known if n == -1 and known else n for n in shape)
    mesh_shape = dict(jax.typeof(x).sharding.mesh.shape)
    return jax.sharding.PartitionSpec(*_reshape_spec(tuple(x.shape), spec, shape, mesh_shape))


def _reshape_spec(
    shape_in: tuple[int, ...], spec: _Spec, shape: tuple[int, ...], mesh_shape: dict[Any, int]
) -> _Spec:
    """The sharding of each output axis of a reshape from `shape_in` (sharded as `spec`)
    to `shape`: each group of input axes that becomes a group of output axes passes
    its first sharded axis's mesh axes on to the group's first output axis longer
    than 1, which must split evenly over them (or the group ends up replicated,
    which costs an all-gather)."""
    if math.prod(shape) != math.prod(shape_in) or math.prod(shape) == 0:
        # jnp.reshape rejects the former with its own message; the latter holds nothing.
        return (None,) * len(shape)
    out: list[Any] = [None] * len(shape)
    i = j = 0
    while i < len(shape_in) or j < len(shape):
        group_in, group_out = [i], [j]
        size_in = shape_in[i] if i < len(shape_in) else 1
        size_out = shape[j] if j < len(shape) else 1
        while size_in != size_out:
            if size_in < size_out:
                i += 1
                group_in.append(i)
                size_in *= shape_in[i]
            else:
                j += 1
                group_out.append(j)
                size_out *= shape[j]
        i, j = i + 1, j + 1
        axes = next((spec[a] for a in group_in if a < len(shape_in) and spec[a] is not None), None)
        group_out = [o for o in group_out if o < len(shape) and shape[o] != 1]
        if axes is None or not group_out:
            continue
        names = axes if isinstance(axes, tuple) else (axes,)
        if shape[group_out[0]] % math.prod(mesh_shape[n] for n in names) == 0:
            out[group_out[0]] = axes
    return tuple(out)


def _whole_matrices(x: Array) -> Array:
    """`x` with its last two axes (its matrices; a vector's one axis) on every device."""
    spec = _explicit_spec(x)
    k = min(2, x.ndim)
    if spec is None or all(e is None for e in spec[x.ndim - k :]):
        return x
    return _reshard(x, spec[: x.ndim - k] + (None,) * k)


def _reshard(x: Array, spec: _Spec | None) -> Array:
    if spec is None or spec == (_explicit_spec(x) or (None,) * x.ndim):
        return x
    return jax.sharding.reshard(x, jax.sharding.PartitionSpec(*spec))


def _zero_cotangent(x: Array) -> Array:
    """The zero cotangent of `x`: zeros, or `float0` zeros for an integer or boolean array."""
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def _conj(x: Array) -> Array:
    return jnp.conj(x) if jnp.issubdtype(x.dtype, jnp.complexfloating) else x
