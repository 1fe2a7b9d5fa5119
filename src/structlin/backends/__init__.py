"""Backend selection: the array library is read off the arrays themselves.

`backend_of(x)` looks at the type of `x` only; it never imports PyTorch or JAX
(an array of a library can only exist once that library has been imported) and
never tries to convert anything.

The backends are a registry: NumPy, PyTorch and JAX are registered here, each as
one module (`structlin.backends.numpy`, `.torch`, `.jax`) imported on first use.
A new array library is one module with a [`Backend`][structlin.backends.Backend]
subclass plus one call to [`register_backend`][structlin.backends.register_backend];
nothing else in structlin names a library.

Examples:
    >>> import numpy as np
    >>> from structlin.backends import available_backends, backend_of, get_backend
    >>> backend_of(np.ones(3)) is get_backend("numpy")
    True
    >>> backend_of(np.ones(3)).name
    'numpy'
    >>> available_backends()[0]
    'numpy'
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from structlin.backends.base import Array, Backend, Device, DType

__all__ = [
    "Array",
    "Backend",
    "DType",
    "Device",
    "available_backends",
    "backend_of",
    "get_backend",
    "is_array",
    "register_backend",
]

_BACKENDS: dict[str, Backend] = {}
# The plain array types met so far, each with its backend: the fast path of `A @ x`.
_BY_TYPE: dict[type, Backend] = {}
# Hooks called with no argument the first time the backend of that name is created.
_ON_LOAD: dict[str, list[Callable[[], None]]] = {}
# Called the first time the JAX backend is created (pytree registration).
_ON_JAX_LOAD: list[Callable[[], None]] = _ON_LOAD.setdefault("jax", [])


class _Registration:
    """What structlin knows of a backend before importing it (see `register_backend`)."""

    __slots__ = ("array_types", "asarray", "dtype_types", "factory", "label", "library", "name")

    def __init__(
        self,
        name: str,
        factory: str | Callable[[], Backend],
        library: str,
        array_types: tuple[str, ...],
        dtype_types: tuple[str, ...],
        label: str,
        asarray: str | None,
    ):
        self.name, self.factory, self.library = name, factory, library
        self.array_types, self.dtype_types = array_types, dtype_types
        self.label, self.asarray = label, asarray

    def loaded_types(self, names: tuple[str, ...]) -> tuple[type, ...] | None:
        """The types named by `names` (`"torch.Tensor"`), or `None` while the library is not
        imported: then no object can be of them, and looking would import it."""
        if sys.modules.get(self.library) is None:  # (None marks a blocked import)
            return None
        types = []
        for dotted in names:
            module, _, attr = dotted.rpartition(".")
            owner = sys.modules.get(module)
            if owner is None:  # a submodule not imported yet (imported with its library)
                owner = importlib.import_module(module)
            types.append(getattr(owner, attr))
        return tuple(types)

    def create(self) -> Backend:
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        backend = factory()
        if not isinstance(backend, Backend) or backend.name != self.name:
            raise TypeError(
                f"backend {self.name!r} was registered with {self.factory!r}, which made "
                f"{backend!r}; it must make a Backend whose name is {self.name!r}"
            )
        return backend


_REGISTRY: dict[str, _Registration] = {}
# `(registration, array types)` of the registered libraries imported so far, in
# registration order (see `_loaded`): a library's array types are looked up once.
_LOADED_ARRAY_TYPES: list[tuple[_Registration, tuple[type, ...]]] = []
# The registrations whose library is not imported yet.
_PENDING: list[_Registration] = []


def register_backend(
    name: str,
    backend: str | Callable[[], Backend],
    *,
    library: str,
    array_types: tuple[str, ...],
    dtype_types: tuple[str, ...] = (),
    label: str | None = None,
    asarray: str | None = None,
) -> None:
    """Make a backend known to structlin, without importing its library.

    Args:
        name: The backend's name (`get_backend(name)`, `Backend.name`, `backend="..."`).
        backend: The [`Backend`][structlin.backends.Backend] subclass (or any callable
            returning the instance), or `"module:attribute"` naming it, imported the
            first time the backend is needed.
        library: The top-level module of the array library (`"torch"`). Until it is in
            `sys.modules` no array of it can exist, so `backend_of` does not look for its
            types and nothing imports it.
        array_types: Dotted names of the library's array types (`"torch.Tensor"`);
            `backend_of` recognises their instances (subclasses included).
        dtype_types: Dotted names of the library's own dtype classes (`"torch.dtype"`),
            for a library whose dtypes are not NumPy's; a dtype of any other kind is
            taken to be NumPy's.
        label: The library's name in messages (`"PyTorch"`); `name` by default.
        asarray: The function that makes the library's arrays (`"torch.as_tensor"`), named
            in messages that ask for an array.

    Backends are listed, and arrays recognised, in registration order; a name is
    registered once (`ValueError` for a second registration).

    Examples:
        A backend for a hypothetical library `mylib` is one module with a `Backend`
        subclass (see `structlin/backends/numpy.py`) and one registration:

        ```python
        from structlin.backends import register_backend

        register_backend(
            "mylib", "mypackage.structlin_backend:MylibBackend", library="mylib",
            array_types=("mylib.Array",), label="MyLib", asarray="mylib.asarray",
        )
        ```

        structlin registers its own three the same way, in `structlin/backends/__init__.py`.
    """
    if name in _REGISTRY:
        raise ValueError(f"a backend named {name!r} is already registered")
    _REGISTRY[name] = reg = _Registration(
        name, backend, library, tuple(array_types), tuple(dtype_types), label or name, asarray
    )
    _PENDING.append(reg)


def available_backends() -> tuple[str, ...]:
    """The registered backends whose library is installed, in registration order
    (`("numpy", "torch", "jax")` with all three installed). Imports nothing."""
    out = []
    for name, reg in _REGISTRY.items():
        if sys.modules.get(reg.library) is not None:  # imported (None marks a blocked import)
            out.append(name)
            continue
        try:
            found = importlib.util.find_spec(reg.library) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            out.append(name)
    return tuple(out)


def registered_backends() -> tuple[str, ...]:
    """The names of all registered backends, installed or not, in registration order."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend called `name` (one of the registered ones: `"numpy"`, `"torch"` or
    `"jax"` unless more are registered), importing its library."""
    backend = _BACKENDS.get(name)
    if backend is not None:
        return backend
    reg = _REGISTRY.get(name)
    if reg is None:
        raise ValueError(f"unknown backend {name!r}; choose {backend_choices()}")
    backend = _BACKENDS[name] = reg.create()
    for hook in _ON_LOAD.get(name, ()):
        hook()
    return backend


def _loaded() -> list[tuple[_Registration, tuple[type, ...]]]:
    """`(registration, array types)` of the registered libraries imported so far, brought
    up to date with those imported since the last call."""
    if _PENDING:
        _load_pending()
    return _LOADED_ARRAY_TYPES


def _load_pending() -> None:
    for reg in list(_PENDING):
        types = reg.loaded_types(reg.array_types)
        if types is not None:
            _PENDING.remove(reg)
            _LOADED_ARRAY_TYPES.append((reg, types))
            order = list(_REGISTRY)
            _LOADED_ARRAY_TYPES.sort(key=lambda entry: order.index(entry[0].name))


def _lookup(x: object) -> Backend | None:
    if _PENDING:
        _load_pending()
    for reg, types in _LOADED_ARRAY_TYPES:
        if isinstance(x, types):
            return get_backend(reg.name)
    return None


def backend_of(x: Any) -> Backend:
    """The backend of array `x`; `TypeError` if `x` is not an array of a registered
    library (NumPy, PyTorch or JAX).

    The first array of a type is looked up in the registry, and its backend may refuse
    it (NumPy: masked arrays) or keep its type out of `_BY_TYPE` (NumPy subclasses such
    as `numpy.matrix`, which the public entry points view as plain arrays first, see
    `_checks.plain_array`); `_BY_TYPE` holds the plain types that the fast path of
    `A @ x` takes as they are.
    """
    try:
        return _BY_TYPE[type(x)]
    except KeyError:
        pass
    backend = _lookup(x)
    if backend is None:
        raise TypeError(
            f"expected {array_kinds()}, got {type(x).__module__}.{type(x).__qualname__}; "
            f"convert lists and scalars with {asarray_hint()}"
        )
    if backend.admit_type(x):
        _BY_TYPE[type(x)] = backend
    return backend


def lookup(x: object) -> Backend | None:
    """The backend of `x` if it is an array of a registered library, else `None` (no check
    of the array itself, unlike `backend_of`)."""
    backend = _BY_TYPE.get(type(x))
    return backend if backend is not None else _lookup(x)


def is_array(x: object) -> bool:
    """Whether `x` is an array of one of the registered libraries."""
    return type(x) in _BY_TYPE or _lookup(x) is not None


def dtype_backend(dtype: DType) -> Backend:
    """The backend whose dtype objects `dtype` is: the one whose registration names its
    dtype class (PyTorch for a `torch.dtype`), else NumPy."""
    for reg in _REGISTRY.values():
        if reg.dtype_types:
            types = reg.loaded_types(reg.dtype_types)
            if types is not None and isinstance(dtype, types):
                return get_backend(reg.name)
    return get_backend("numpy")


def imported_backends() -> tuple[Backend, ...]:
    """The backends of the registered libraries imported so far, in registration order
    (nothing is imported)."""
    return tuple(get_backend(reg.name) for reg, _ in _loaded())


def loaded_backends() -> tuple[Backend, ...]:
    """The backends created so far (no library is imported)."""
    return tuple(_BACKENDS.values())


# -- the registry in messages -------------------------------------------------------------
def _either(words: list[str], last: str = "or") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def array_kinds() -> str:
    """`"a NumPy, PyTorch or JAX array"`: the registered libraries, for messages."""
    return f"a {_either([reg.label for reg in _REGISTRY.values()])} array"


def asarray_hint() -> str:
    """`"numpy.asarray (or torch.as_tensor / jax.numpy.asarray)"`, for messages."""
    names = [reg.asarray for reg in _REGISTRY.values() if reg.asarray]
    return names[0] + (f" (or {' / '.join(names[1:])})" if len(names) > 1 else "")


def backend_choices() -> str:
    """`"'numpy', 'torch' or 'jax'"`: the registered names, for messages."""
    return _either([repr(name) for name in _REGISTRY])


register_backend(
    "numpy",
    "structlin.backends.numpy:NumpyBackend",
    library="numpy",
    array_types=("numpy.ndarray", "numpy.generic"),
    label="NumPy",
    asarray="numpy.asarray",
)
register_backend(
    "torch",
    "structlin.backends.torch:TorchBackend",
    library="torch",
    array_types=("torch.Tensor",),
    dtype_types=("torch.dtype",),
    label="PyTorch",
    asarray="torch.as_tensor",
)
register_backend(
    "jax",
    "structlin.backends.jax:JaxBackend",
    library="jax",
    array_types=("jax.Array",),
    label="JAX",
    asarray="jax.numpy.asarray",
)
