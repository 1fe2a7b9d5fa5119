"""Argument checks shared by constructors and the public functions.

Every message names the offending shapes, dtypes or backends and says how to fix it.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from structlin.backends import (
    _BY_TYPE,
    Array,
    Backend,
    DType,
    array_kinds,
    asarray_hint,
    backend_of,
    dtype_backend,
    get_backend,
    is_array,
    lookup,
)


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def size(value: Any, what: str, minimum: int | None = 1) -> int:
    """`value` as a Python int, for an argument that is a size or a count.

    Python ints and NumPy integer scalars (anything `operator.index` takes) are
    accepted; bools, floats (even `4.0`) and values below `minimum` are refused,
    never truncated (`minimum=None`: no bound, for callers that check it themselves).
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an integer, got the bool {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{what} must be an integer, got {type(value).__name__} {value!r}; "
            "sizes are never rounded, pass an int"
        ) from None
    if minimum is not None and n < minimum:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{what} must be {kind}, got {n}")
    return n


def plain_array(x: Any, what: str) -> Array:
    """`x` as its library's plain array type, or a `TypeError`.

    NumPy subclasses are viewed as `numpy.ndarray` (no copy): a `numpy.matrix` would
    turn every product into a 2-D matrix, and other subclasses' extra meaning (units,
    memory maps) is not linear algebra. Masked arrays are refused, since a mask has no
    linear-algebra meaning and dropping it silently would compute with the hidden
    entries. PyTorch tensor subclasses (`nn.Parameter`) and JAX arrays pass as they are.
    """
    if type(x) in _BY_TYPE:  # a plain array type met before: the common case
        return x
    backend = lookup(x)
    return x if backend is None else backend.plain_array(x, what)


def float_dtype(dtype: DType, backend: Backend | None, what: str) -> DType:
    """`dtype` (a dtype of any library, a scalar type such as `numpy.float32`, or a name)
    as `backend`'s dtype object; `TypeError` unless it is floating point or complex.

    With no backend, a PyTorch dtype stays a PyTorch dtype and anything else becomes a
    `numpy.dtype`. `None` passes through.
    """
    if dtype is None:
        return None
    if backend is None:
        backend = dtype_backend(dtype)
    try:
        canonical = backend.canonical_dtype(dtype)
    except (TypeError, ValueError, AttributeError):
        raise TypeError(
            f"{what} must be a dtype such as numpy.float64 or torch.float32, got {dtype!r}"
        ) from None
    if not backend.is_floating(canonical):
        raise TypeError(
            f"{what} must be a floating-point or complex dtype, got {canonical}; structlin "
            "operators hold real or complex floating-point values: use e.g. float32, float64 "
            "or complex128"
        )
    return canonical


def float_array(x: Any, what: str, ndim: int | None = None) -> tuple[Array, Backend]:
    """Check that `x` is a floating-point array (of `ndim` dimensions); return it (viewed as
    its library's plain array type, see `plain_array`) and its backend."""
    if not is_array(x):
        raise TypeError(
            f"{what} must be {array_kinds()}, got {type(x).__name__}; "
            f"convert it with {asarray_hint()}"
        )
    x = plain_array(x, what)
    backend = backend_of(x)
    if not backend.is_floating(x.dtype):
        raise TypeError(
            f"{what} has dtype {x.dtype}; structlin needs floating-point or complex values, "
            "cast it first (e.g. x.astype(numpy.float64) or x.double())"
        )
    if ndim is not None and len(x.shape) != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {shape_str(x.shape)}")
    return x, backend


def same_backend(items: Sequence[Any], what: str) -> None:
    """Check that operators (or arrays) share one backend and one device.

    Value-free operators (backend `None`) are compatible with everything.
    """
    seen: list[tuple[Any, Any, Any]] = []
    for item in items:
        if hasattr(type(item), "_children"):  # an operator (it declares its pytree children)
            backend, device = item.backend, item.device
        else:  # an array (a TypeError for what is neither)
            backend = backend_of(item)
            device = backend.device(item)
        if backend is not None:
            seen.append((backend, device, item))
    for backend, device, item in seen[1:]:
        backend0, device0, item0 = seen[0]
        if backend is not backend0:
            raise TypeError(
                f"{what} mixes backends: {_describe(item0)} is {backend0.name} but "
                f"{_describe(item)} is {backend.name}; convert with op.to(backend=...)"
            )
        if device is not None and device0 is not None and device != device0:
            raise ValueError(
                f"{what} mixes devices: {_describe(item0)} is on {device0} but "
                f"{_describe(item)} is on {device}; move one with op.to(device=...)"
            )


def _describe(item: Any) -> str:
    if is_array(item):
        return f"array of shape {shape_str(item.shape)}"
    return f"{type(item).__name__} of shape {shape_str(item.shape)}"


def square(A: Any, what: str) -> int:
    m, n = A.shape
    if m != n:
        raise ValueError(
            f"{what} needs a square operator, got {type(A).__name__} of shape {shape_str(A.shape)}"
        )
    return n


def common_dtype(items: Sequence[Any], backend: Backend | None) -> Any:
    # A value-free Identity may carry another library's dtype (or a name): canonicalise first.
    dtypes = [backend.canonical_dtype(item.dtype) for item in items if item.dtype is not None]
    if not dtypes:
        return None
    return backend.result_type(*dtypes)


def dense_backend(A: Any) -> tuple[Backend, Any, Any]:
    """`(backend, dtype, device)` to materialise `A` with; value-free operators default to NumPy."""
    backend = A.backend if A.backend is not None else get_backend("numpy")
    # A value-free operator may carry another library's dtype (or a name).
    dtype = backend.canonical_dtype(A.dtype) if A.dtype is not None else backend.default_float()
    return backend, dtype, A.device


def keywords(what: str, given: Iterable[str], valid: Sequence[str]) -> None:
    """Refuse keywords not in `valid`, naming the first, the nearest valid one and all of them."""
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return
    name = unknown[0]
    near = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    options = ", ".join(valid) if valid else "none"
    raise TypeError(f"{what} takes no option {name}{hint}; its options: {options}")


def finite(x: Array, what: str) -> None:
    """Refuse an array with inf or nan entries (where its values can be read), by count.

    For the inputs of factorisations: LAPACK returns garbage on them, and its SVD may
    never return. One `isfinite` reduction, negligible next to the factorisation.
    """
    backend = backend_of(x)
    if not backend.is_concrete(x) or bool(backend.all(backend.isfinite(x))):
        return
    values = backend.to_numpy(x)
    nan, inf = int(np.count_nonzero(np.isnan(values))), int(np.count_nonzero(np.isinf(values)))
    raise ValueError(
        f"{what} has {nan + inf} non-finite entries ({inf} inf, {nan} nan) of {values.size}; "
        "the factorisations need finite values: replace them first "
        "(e.g. numpy.nan_to_num / torch.nan_to_num) or find where they came from"
    )


# -- allocations ------------------------------------------------------------------------
# A dense array is refused before it is allocated when it would take more than the
# memory of the device it would live on (the host's physical memory for NumPy and CPU
# arrays): no such allocation can succeed, and trying one may exhaust swap or fail deep
# inside the library. The environment variable `STRUCTLIN_MAX_DENSE_BYTES` sets another
# limit (in bytes), read on every check.
CHECK_FROM = 1 << 24
"""Allocations of fewer bytes than this are never checked (nothing to save there)."""


@functools.lru_cache(maxsize=1)
def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def memory_limit(device: Any = None) -> int | None:
    """Bytes one array may take on `device`: `STRUCTLIN_MAX_DENSE_BYTES` if set, else the
    device's total memory (the host's for NumPy and CPU arrays); `None` if unknown."""
    env = os.environ.get("STRUCTLIN_MAX_DENSE_BYTES")
    if env:
        return int(float(env))
    kind = getattr(device, "type", None) or getattr(device, "platform", None)
    if kind is None or kind == "cpu":
        return _host_memory()
    try:
        if kind == "cuda":  # a torch.device
            import torch

            return int(torch.cuda.get_device_properties(device).total_memory)
        stats = device.memory_stats()  # a JAX device
        return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None
    except Exception:  # an unknown kind of device: no limit we can tell
        return None


def _bytes_str(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # unreachable


def allocation(nbytes: int, what: str, fix: str, device: Any = None) -> None:
    """ValueError if an allocation of `nbytes` on `device` exceeds `memory_limit(device)`."""
    if nbytes < CHECK_FROM:
        return
    limit = memory_limit(device)
    if limit is None or nbytes <= limit:
        return
    where = "the host" if device is None or str(device) == "cpu" else str(device)
    raise ValueError(
        f"{what} would take {_bytes_str(nbytes)} ({nbytes} bytes), more than the "
        f"{_bytes_str(limit)} of memory of {where}; {fix} (the limit is the device's "
        "memory; the environment variable STRUCTLIN_MAX_DENSE_BYTES sets another)"
    )


def dense_allocation(A: Any) -> None:
    """`allocation` for the dense `(m, n)` matrix of operator `A`."""
    m, n = A.shape
    if m * n * 16 < CHECK_FROM:  # no dtype takes more than 16 bytes an entry
        return
    _, dtype, device = dense_backend(A)
    itemsize = getattr(dtype, "itemsize", None) or 8
    allocation(
        math.prod((m, n, itemsize)),
        f"the dense matrix of {type(A).__name__} of shape {shape_str(A.shape)} ({dtype})",
        "work with the operator instead (A @ x, or A @ X for a few columns at a time); where "
        "a dense fallback of solve, inv, slogdet or diag needed it, an iterative method "
        "(sl.to_scipy(A) with scipy.sparse.linalg) needs none",
        device,
    )
