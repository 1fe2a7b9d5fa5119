"""Backend selection: the array library is read off the arrays themselves.

`backend_of(x)` looks at the type of `x` only; it never imports PyTorch or JAX
(an array of a library can only exist once that library has been imported) and
never tries to convert anything.

Examples:
    >>> import numpy as np
    >>> from structlin.backends import backend_of, get_backend
    >>> backend_of(np.ones(3)) is get_backend("numpy")
    True
    >>> backend_of(np.ones(3)).name
    'numpy'
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from structlin.backends.base import Array, Backend, Device, DType

__all__ = ["Array", "Backend", "DType", "Device", "backend_of", "get_backend", "is_array"]

_BACKENDS: dict[str, Backend] = {}
_BY_TYPE: dict[type, Backend] = {}
# Called with the JAX backend the first time it is created (pytree registration).
_ON_JAX_LOAD: list[Callable[[], None]] = []


def get_backend(name: str) -> Backend:
    """The backend called `name` (`"numpy"`, `"torch"` or `"jax"`), importing its library."""
    backend = _BACKENDS.get(name)
    if backend is not None:
        return backend
    if name == "numpy":
        from structlin.backends.numpy import NumpyBackend as cls
    elif name == "torch":
        from structlin.backends.torch import TorchBackend as cls
    elif name == "jax":
        from structlin.backends.jax import JaxBackend as cls
    else:
        raise ValueError(f"unknown backend {name!r}; choose 'numpy', 'torch' or 'jax'")
    backend = _BACKENDS[name] = cls()
    if name == "jax":
        for hook in _ON_JAX_LOAD:
            hook()
    return backend


def _lookup(x: object) -> Backend | None:
    import numpy as np

    if isinstance(x, (np.ndarray, np.generic)):
        return get_backend("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return get_backend("torch")
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return get_backend("jax")
    return None


def backend_of(x: Any) -> Backend:
    """The backend of array `x`; `TypeError` if `x` is not a NumPy, PyTorch or JAX array.

    NumPy subclasses (`numpy.matrix`, memory maps) are NumPy's, but their types are not
    remembered: `_BY_TYPE` holds the plain types that the fast path of `A @ x` takes as
    they are, and the public entry points view subclasses as plain arrays first
    (`_checks.plain_array`). Masked arrays are refused (a mask has no linear-algebra meaning).
    """
    try:
        return _BY_TYPE[type(x)]
    except KeyError:
        pass
    backend = _lookup(x)
    if backend is None:
        raise TypeError(
            f"expected a NumPy, PyTorch or JAX array, got {type(x).__module__}.{type(x).__qualname__}; "
            "convert lists and scalars with numpy.asarray (or torch.as_tensor / jax.numpy.asarray)"
        )
    if backend.name == "numpy" and isinstance(x, _np().ndarray) and type(x) is not _np().ndarray:
        if isinstance(x, _np().ma.MaskedArray):
            raise TypeError(
                "numpy masked arrays are not supported (a mask has no linear-algebra meaning); "
                "pass x.filled(value) or x.data"
            )
        return backend
    _BY_TYPE[type(x)] = backend
    return backend


def _np() -> Any:
    import numpy

    return numpy


def is_array(x: object) -> bool:
    """Whether `x` is an array of one of the supported libraries."""
    return type(x) in _BY_TYPE or _lookup(x) is not None
