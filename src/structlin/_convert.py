"""Conversion of operators between dtypes, devices and backends."""

from __future__ import annotations

from typing import Any

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Backend, backend_of, get_backend, is_array, registered_backends
from structlin.operator import LinearOperator
from structlin.pytree import _flatten_one, _unflatten_one


def convert_array(x: Any, dtype: Any, device: Any, backend: Backend | None) -> Any:
    """Move one leaf to `backend`/`device` and cast it to `dtype` if it is floating point.

    Integer arrays (permutation indices) keep their dtype; Python scalars pass through.
    Between backends the arrays go through the host (`Backend.export_array` and
    `import_array`), dtypes NumPy lacks (bfloat16) included.
    """
    if not is_array(x):
        return x
    source = backend_of(x)
    cast = dtype is not None and source.is_floating(x.dtype)
    if backend is not None and backend is not source:
        host, name = source.export_array(x)
        x = backend.import_array(host, dtype if cast else name)
        source, cast = backend, False
    if cast:
        x = source.astype(x, source.canonical_dtype(dtype))
    if device is not None:
        x = source.to_device(x, device)
    return x


@dispatch
def to(A: LinearOperator, dtype: object, device: object, backend: object):
    """Rebuild `A` with every array leaf converted by `convert_array` (`O(size of leaves)`)."""

    def convert(child: Any) -> Any:
        if isinstance(child, LinearOperator):
            return to(child, dtype, device, backend)
        if isinstance(child, tuple):
            return tuple(convert(c) for c in child)
        return convert_array(child, dtype, device, backend)

    children, static = _flatten_one(A)
    return _unflatten_one(type(A), static, tuple(convert(c) for c in children))


def static_meta(
    what: str, dtype: Any, backend: Backend | str | None, device: Any
) -> tuple[Any, Backend | None, Any]:
    """`(dtype, backend, device)` of an operator that holds no arrays (an `Identity`, a
    stride permutation), each as the backend's own object.

    `dtype` must be floating point or complex (see `_checks.float_dtype`); `device`
    becomes the backend's device object (`torch.device`; PyTorch's default device when
    `None`). A value-free operator (no backend) has no device: it adopts its operand's,
    so a `device` without a `backend` is refused.
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    if backend is not None and not isinstance(backend, Backend):
        raise TypeError(
            f"{what} backend must be {', '.join(map(repr, registered_backends()))} or a "
            f"Backend, got {backend!r}"
        )
    dtype = _checks.float_dtype(dtype, backend, f"{what} dtype")
    if backend is None:
        if device is not None:
            raise ValueError(
                f"{what}: device={device!r} needs a backend (e.g. backend='torch'); without "
                "one the operator is value-free and adopts the device of what it acts on"
            )
        return dtype, None, None
    return dtype, backend, backend.canonical_device(device)


def static_dtype(
    dtype: Any, current: Any, backend: Backend | None, current_backend: Backend | None
) -> Any:
    """The dtype a value-free operator (no arrays) keeps after `to(dtype, ..., backend)`."""
    dtype = dtype if dtype is not None else current
    target = backend if backend is not None else current_backend
    return dtype if dtype is None or target is None else target.canonical_dtype(dtype)


def bind(
    ops: tuple[LinearOperator, ...], backend: Backend | None, dtype: Any, device: Any
) -> tuple[LinearOperator, ...]:
    """Bring the members of a composite to one backend, dtype and device.

    Value-free members (a generic `Identity`) get the composite's backend and
    device, so that its dense conversion builds every part in one library; members
    of a narrower dtype are cast (a copy, once, at construction) so that the rules
    never meet mixed dtypes, which PyTorch refuses.
    """
    if backend is None:
        return ops
    return tuple(
        op
        # `is not None` first: numpy.dtype("float64") == None is True.
        if op.backend is not None and op.dtype is not None and op.dtype == dtype
        else to(op, dtype, device if op.backend is None else None, backend)
        for op in ops
    )


def unify(ops: tuple[LinearOperator, ...], what: str) -> tuple[LinearOperator, ...]:
    """Check that `ops` share a backend and device, then `bind` them to it and their common dtype."""
    _checks.same_backend(ops, what)
    bound = next((op for op in ops if op.backend is not None), None)
    if bound is None:
        return ops
    return bind(ops, bound.backend, _checks.common_dtype(ops, bound.backend), bound.device)
