"""Test configuration: JAX in float64 mode with a compilation cache, and a hypothesis profile
sized for CI."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
    # Compiling is most of the JAX tests' time. The persistent cache (keyed by JAX version,
    # program and flags) is shared by the xdist workers and by later runs: CI's second
    # environment then reuses the first one's programs. JAX_COMPILATION_CACHE_DIR overrides.
    jax.config.update(
        "jax_compilation_cache_dir",
        os.environ.get(
            "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parent.parent / ".jax_cache")
        ),
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

settings.register_profile(
    "default",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        cuda = torch.cuda.is_available()
    for item in items:
        if "cuda" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))
