"""Random arrays for the `random` constructors of the structured operators."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from structlin import _checks
from structlin.backends import Array, Backend, Device, DType, get_backend

Seed = np.random.Generator | int | None


def mup_std(fan_in: int, fan_out: int) -> float:
    """`sqrt(min(fan_in, fan_out)) / fan_in`: the structure-aware muP init scale of a dense
    component ("Compute Better Spent", Section 3.2), which gives the component a spectral
    norm of order `sqrt(fan_out / fan_in)`."""
    return math.sqrt(min(fan_in, fan_out)) / fan_in


def normal(
    shape: tuple[int, ...],
    std: float,
    *,
    rng: Seed = None,
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> Array:
    """Entries drawn from `N(0, std^2)` with NumPy's generator `rng` (or seed), then moved to
    `backend`/`device` and cast to `dtype` (the backend's default float if `None`).

    Drawing with NumPy makes a seed give the same operator on every backend.
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    dtype = (
        backend.default_float()
        if dtype is None
        else _checks.float_dtype(dtype, backend, "random operator: dtype")
    )
    # Drawn in float64 on the host (twice for complex values).
    _checks.allocation(
        8 * math.prod(shape) * (2 if backend.is_complex(dtype) else 1),
        f"random values of shape {_checks.shape_str(shape)}",
        "choose smaller sizes (or more blocks)",
    )
    values: Any = std * generator.standard_normal(shape)
    if backend.is_complex(dtype):
        values = (values + 1j * std * generator.standard_normal(shape)) / math.sqrt(2)
    return backend.asarray(values, dtype=dtype, device=device)
