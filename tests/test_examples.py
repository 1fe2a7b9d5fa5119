"""Every example runs (in its small smoke mode), so the docs never show code that does not run."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

# End to end: CI runs it once, in the main environment (see .ci/run).
pytestmark = pytest.mark.slow

EXAMPLES = sorted((pathlib.Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
