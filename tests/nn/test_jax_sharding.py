"""Structured operators and `structlin.nn.jax` layers under `jax.jit` with `NamedSharding`.

The check runs in a subprocess (`tests/jax_sharding_worker.py`) because the 4 CPU
devices of `XLA_FLAGS=--xla_force_host_platform_device_count=4` must be requested
before JAX is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

WORKER = Path(__file__).parents[1] / "jax_sharding_worker.py"


def test_monarch_sharded_by_block_over_4_devices_matches_unsharded() -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
