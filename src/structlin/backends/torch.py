"""PyTorch backend (CPU and CUDA)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from structlin.backends.base import Array, Backend, Device, DType
from structlin.errors import NotPositiveDefiniteError, SingularOperatorError

# torch.compiler.is_compiling is PyTorch >= 2.3; before it, values are read (a graph break).
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)
_TENSOR_MATMUL = torch.Tensor.matmul


def _dynamo_compiling() -> bool:
    return torch._dynamo.is_compiling()  # PyTorch < 2.3


_is_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", _dynamo_compiling)


def _view_root(x: Array) -> Array:
    return x._base if x._base is not None else x


class TorchBackend(Backend):
    name = "torch"
    cola_functions = "torch_fns"

    def is_array(self, x: object) -> bool:
        return isinstance(x, torch.Tensor)

    def device(self, x: Array) -> Device:
        return x.device

    def foreign_device(self, device: Device) -> Device:
        return torch.device(device)

    def is_concrete(self, x: Array) -> bool:
        # A meta tensor has a shape but no values; under torch.compile reading a value
        # (to refuse non-finite or singular input) would break the graph, so values are
        # left unread there, as under jax.jit.
        return x.device.type != "meta" and not _is_compiling()

    def is_floating(self, dtype: DType) -> bool:
        return dtype.is_floating_point or dtype.is_complex

    def is_complex(self, dtype: DType) -> bool:
        return dtype.is_complex

    def is_integer(self, dtype: DType) -> bool:
        return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)

    def result_type(self, *dtypes: DType) -> DType:
        out = dtypes[0]
        for d in dtypes[1:]:
            out = torch.promote_types(out, d)
        return out

    def default_float(self) -> DType:
        return torch.get_default_dtype()

    def index_dtype(self) -> DType:
        return torch.int64

    def canonical_dtype(self, dtype: DType) -> DType:
        if isinstance(dtype, torch.dtype):
            return dtype
        if isinstance(dtype, str):  # also names NumPy lacks, such as "bfloat16"
            named = getattr(torch, dtype.removeprefix("torch."), None)
            if isinstance(named, torch.dtype):
                return named
        return getattr(torch, np.dtype(dtype).name)

    def asarray(self, x: Any, dtype: DType = None, device: Device = None) -> Array:
        dtype = None if dtype is None else self.canonical_dtype(dtype)
        return torch.as_tensor(x, dtype=dtype, device=device)

    def astype(self, x: Array, dtype: DType) -> Array:
        return x.to(self.canonical_dtype(dtype))

    def copy(self, x: Array) -> Array:
        return x.clone()

    def may_share_memory(self, a: Array, b: Array) -> bool:
        if _is_compiling():
            # Storages cannot be read while tracing (a graph break); inside a graph memory
            # is shared through views, which know their base.
            return _view_root(a) is _view_root(b)
        try:
            return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            # No storage to compare (sparse tensors, some wrappers): "may" share, so the
            # caller copies rather than risk handing out an alias.
            return True

    def canonical_device(self, device: Device) -> Device:
        if device is not None:
            device = torch.device(device)
            if device.index is None and device.type not in ("cpu", "meta"):
                # "cuda" means the current one: name it as tensors there report it
                # ("cuda:0"), so that device checks compare equal.
                device = torch.empty(0, device=device).device
            return device
        default = getattr(torch, "get_default_device", None)  # PyTorch >= 2.3
        return default() if default is not None else torch.device("cpu")

    def to_device(self, x: Array, device: Device) -> Array:
        return x.to(device)

    def to_numpy(self, x: Array) -> np.ndarray:
        return x.detach().cpu().resolve_conj().numpy()

    def export_array(self, x: Array) -> tuple[np.ndarray, str]:
        t = x.detach().cpu().resolve_conj()
        name = str(t.dtype).removeprefix("torch.")
        try:
            return t.numpy(), name
        except TypeError:  # a dtype NumPy lacks (bfloat16, float8, complex32)
            return t.to(torch.complex64 if t.is_complex() else torch.float32).numpy(), name

    def import_array(self, host: np.ndarray, dtype: DType | str) -> Array:
        # A read-only host array (a JAX array's buffer) is copied: a tensor is writable,
        # and writing into one that shares an immutable array's memory would change it.
        if not host.flags.writeable:
            host = host.copy()
        return torch.as_tensor(host, dtype=self.canonical_dtype(dtype))

    def torch_function(
        self, func: Any, args: tuple[Any, ...], kwargs: Any, rmatmul: Callable[[Any, Any], Any]
    ) -> Any:
        """PyTorch's `__torch_function__` protocol for operators, which
        [`LinearOperator`][structlin.LinearOperator] delegates here: `tensor @ op` is
        `rmatmul(tensor, op)`, and every other PyTorch function refuses operators.

        PyTorch offers `tensor @ op` to `Tensor.__matmul__` first, which fails on the
        operator and only then lets Python call `op.__rmatmul__`; formatting that failure
        costs more than a small matmul. PyTorch asks this hook before failing, so
        `tensor @ op` is answered here. Not while Dynamo traces: it passes `op @ tensor`
        here too, as `Tensor.matmul(tensor, op)`, so it must fall back to running the
        code eagerly.
        """
        if func is _TENSOR_MATMUL and not kwargs and not _is_dynamo_compiling():
            X, A = args
            return rmatmul(X, A)
        return NotImplemented

    def eye(self, n: int, dtype: DType, device: Device = None) -> Array:
        return torch.eye(n, dtype=dtype, device=device)

    def zeros(self, shape: tuple[int, ...], dtype: DType, device: Device = None) -> Array:
        return torch.zeros(shape, dtype=dtype, device=device)

    def arange(self, n: int, device: Device = None) -> Array:
        return torch.arange(n, device=device)

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        return x.reshape(shape)

    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array:
        return x.permute(axes)

    def swap_last(self, x: Array) -> Array:
        return x.transpose(-1, -2)

    def take(self, x: Array, indices: Array, axis: int) -> Array:
        return torch.index_select(x, axis, indices)

    def concatenate(self, xs: list[Array], axis: int = 0) -> Array:
        return torch.cat(xs, dim=axis)

    def stack(self, xs: list[Array], axis: int = 0) -> Array:
        return torch.stack(xs, dim=axis)

    def conj(self, x: Array) -> Array:
        # Not the lazy `x.conj()`: its conjugate bit would reach results (`A.H.to_dense()`),
        # and a tensor carrying it refuses `.numpy()`.
        return torch.conj_physical(x) if x.is_complex() else x

    def real(self, x: Array) -> Array:
        return torch.real(x) if x.is_complex() else x

    def abs(self, x: Array) -> Array:
        return x.abs()

    def log(self, x: Array) -> Array:
        return x.log()

    def sum(self, x: Array, axis: int | None = None) -> Array:
        return x.sum() if axis is None else x.sum(dim=axis)

    def sqrt(self, x: Array) -> Array:
        return torch.sqrt(x)

    def exp(self, x: Array) -> Array:
        return torch.exp(x)

    def real(self, x: Array) -> Array:
        return x.real if x.is_complex() else x

    def where(self, condition: Array, x: Array, y: Array) -> Array:
        return torch.where(condition, x, y)

    def any(self, x: Array) -> Array:
        return torch.any(x)

    def implicit_solve(
        self,
        solve: Any,
        apply: Any,
        apply_adjoint: Any,
        leaves: list[Array],
        B: Array,
        symmetric: bool,
    ) -> tuple[Array, Any]:
        if not torch.is_grad_enabled() or not any(x.requires_grad for x in (B, *leaves)):
            with torch.no_grad():
                return solve(lambda V: apply(leaves, V), B)
        record: list[Any] = []
        X = _ImplicitSolve.apply(solve, apply, apply_adjoint, record, B, *leaves)
        return X, record[0]

    def custom_vjp(self, forward: Any, backward: Any, arrays: list[Array]) -> tuple[Array, Any]:
        if not torch.is_grad_enabled() or not any(x.requires_grad for x in arrays):
            with torch.no_grad():
                return forward(arrays)
        record: list[Any] = []
        Y = _CustomVJP.apply(forward, backward, record, *arrays)
        return Y, record[0]

    def vjp(self, f: Any, arrays: list[Array], cotangent: Array) -> list[Array | None]:
        with torch.enable_grad():
            inputs = [
                x.detach().requires_grad_(x.is_floating_point() or x.is_complex()) for x in arrays
            ]
            wanted = [x for x in inputs if x.requires_grad]
            found = iter(
                torch.autograd.grad(f(inputs), wanted, grad_outputs=cotangent, allow_unused=True)
            )
        return [next(found) if x.requires_grad else None for x in inputs]

    def prod(self, x: Array, axis: int | None = None) -> Array:
        return x.prod() if axis is None else x.prod(dim=axis)

    def minimum(self, x: Array, y: Array) -> Array:
        return torch.minimum(x, y)

    def all(self, x: Array) -> Array:
        return torch.all(x)

    def isfinite(self, x: Array) -> Array:
        return torch.isfinite(x)

    def sort(self, x: Array) -> Array:
        return torch.sort(x).values

    def argsort(self, x: Array) -> Array:
        return torch.argsort(x)

    # The library's own function, with no Python frame around it: operators' rules call it
    # on every product, where the frame's cost shows (64 x 64).
    matmul = staticmethod(torch.matmul)
    block_matmul = staticmethod(torch.matmul)

    def einsum(self, subscripts: str, *operands: Array) -> Array:
        return torch.einsum(subscripts, *operands)

    def diagonal(self, x: Array) -> Array:
        return torch.diagonal(x, dim1=-2, dim2=-1)

    def kron(self, a: Array, b: Array) -> Array:
        # torch.kron fails on some non-contiguous (e.g. transposed) inputs.
        (m1, n1), (m2, n2) = a.shape, b.shape
        return (a[:, None, :, None] * b[None, :, None, :]).reshape(m1 * m2, n1 * n2)

    def _solve(self, a: Array, b: Array) -> Array:
        try:
            return torch.linalg.solve(a, b)
        except torch.linalg.LinAlgError as e:
            raise SingularOperatorError(f"singular matrix of shape {tuple(a.shape)}: {e}") from None

    def _inv(self, a: Array) -> Array:
        try:
            return torch.linalg.inv(a)
        except torch.linalg.LinAlgError as e:
            raise SingularOperatorError(f"singular matrix of shape {tuple(a.shape)}: {e}") from None

    def _slogdet(self, a: Array) -> tuple[Array, Array]:
        sign, logabsdet = torch.linalg.slogdet(a)
        return sign, logabsdet

    def _svd(self, a: Array) -> tuple[Array, Array, Array]:
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        return u, s, vh

    def _eigh(self, a: Array) -> tuple[Array, Array]:
        w, v = torch.linalg.eigh(a)
        return w, v

    def _cholesky(self, a: Array) -> Array:
        L, info = torch.linalg.cholesky_ex(a)
        if self.is_concrete(info) and bool((info != 0).any()):
            raise NotPositiveDefiniteError(
                f"Cholesky factorisation failed for a matrix of shape {tuple(a.shape)}: "
                "not positive definite"
            )
        return L

    def _cholesky_solve(self, L: Array, b: Array) -> Array:
        return torch.cholesky_solve(b, L)

    def triangle(self, x: Array, lower: bool) -> Array:
        return torch.tril(x) if lower else torch.triu(x)

    def _solve_triangular(self, a: Array, b: Array, lower: bool) -> Array:
        return torch.linalg.solve_triangular(a, b, upper=not lower)

    def index_add(self, x: Array, index: Array, values: Array) -> Array:
        return x.index_add(0, index, values)

    def sparse_matmul(self, values: Array, rows: Array, cols: Array, m: int, X: Array) -> Array:
        if _is_compiling():  # torch.compile does not trace sparse tensors: gather and scatter
            return super().sparse_matmul(values, rows, cols, m, X)
        # A COO tensor around the triples (no copy, no check) and PyTorch's sparse product,
        # which differentiates with respect to the values and X.
        S = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), values, (m, X.shape[0]), check_invariants=False
        )
        return torch.sparse.mm(S, X)

    def sparse_entries(self, x: Any) -> tuple[Array, Array, Array, tuple[int, int]] | None:
        if not isinstance(x, torch.Tensor) or x.layout == torch.strided:
            return None
        if x.layout not in (torch.sparse_coo, torch.sparse_csr):
            raise TypeError(
                f"Sparse takes PyTorch sparse tensors of layout torch.sparse_coo or "
                f"torch.sparse_csr, got {x.layout}; convert with x.to_sparse_coo()"
            )
        if x.ndim != 2 or x.dense_dim() != 0:
            raise ValueError(
                f"Sparse needs a 2-D sparse matrix, got a PyTorch {x.layout} tensor of shape "
                f"{tuple(x.shape)} with {x.dense_dim()} dense dimensions"
            )
        m, n = x.shape
        if x.layout == torch.sparse_coo:
            x = x.coalesce()  # differentiable: gradients reach the tensor's values
            rows, cols = x.indices()
            return x.values(), rows, cols, (m, n)
        crow = x.crow_indices()
        counts = crow[1:] - crow[:-1]
        rows = torch.repeat_interleave(torch.arange(m, device=x.device), counts)
        return x.values(), rows, x.col_indices().to(torch.int64), (m, n)


class _ImplicitSolve(torch.autograd.Function):
    """`X = A^{-1} B` by an iterative `solve`, with the backward pass of implicit
    differentiation: one solve with `A^H` (see `Backend.implicit_solve`)."""

    @staticmethod
    def forward(
        ctx: Any,
        solve: Any,
        apply: Any,
        apply_adjoint: Any,
        record: list[Any],
        B: Array,
        *leaves: Array,
    ) -> Array:  # type: ignore[override]
        with torch.no_grad():
            X, info = solve(lambda V: apply(leaves, V), B)
        record.append(info)
        ctx.solve_fn, ctx.apply_fn, ctx.apply_adjoint_fn = solve, apply, apply_adjoint
        ctx.save_for_backward(X, *leaves)
        return X

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, G: Array) -> tuple[Any, ...]:  # type: ignore[override]
        X, *leaves = ctx.saved_tensors
        detached = [x.detach() for x in leaves]
        with torch.no_grad():
            dB, _ = ctx.solve_fn(lambda V: ctx.apply_adjoint_fn(detached, V), G)
        grads: list[Any] = [None] * len(leaves)
        wanted = [i for i, x in enumerate(leaves) if ctx.needs_input_grad[5 + i]]
        if wanted:
            with torch.enable_grad():
                inputs = [x.detach().requires_grad_(i in wanted) for i, x in enumerate(leaves)]
                Y = ctx.apply_fn(inputs, X.detach())
                found = torch.autograd.grad(
                    Y, [inputs[i] for i in wanted], grad_outputs=-dB, allow_unused=True
                )
            for i, g in zip(wanted, found, strict=True):
                grads[i] = g
        dB_out = dB if ctx.needs_input_grad[4] else None
        return (None, None, None, None, dB_out, *grads)


class _CustomVJP(torch.autograd.Function):
    """`Y = forward(arrays)` without its steps on the tape, and `backward` as its
    vector-Jacobian product (see `Backend.custom_vjp`)."""

    @staticmethod
    def forward(ctx: Any, forward: Any, backward: Any, record: list[Any], *arrays: Array) -> Array:  # type: ignore[override]
        with torch.no_grad():
            Y, aux = forward(list(arrays))
        record.append(aux)
        ctx.backward_fn = backward
        ctx.save_for_backward(Y, *arrays)
        return Y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, G: Array) -> tuple[Any, ...]:  # type: ignore[override]
        Y, *arrays = ctx.saved_tensors
        grads = ctx.backward_fn([x.detach() for x in arrays], Y.detach(), G)
        wanted = ctx.needs_input_grad[3:]
        return (None, None, None, *(g if w else None for g, w in zip(grads, wanted, strict=True)))
