"""The benchmark runner in quick mode: every benchmark runs and writes its reports (timings not checked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# End to end: CI runs it once, in the main environment (see .ci/run).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


def run_quick(out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)]


def test_quick_run_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    done = subprocess.run(
        run_quick(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (json_path,) = tmp_path.glob("*.json")
    results = json.loads(json_path.read_text())
    assert results["machine"]["quick"] is True
    benchmarks = {r["benchmark"] for r in results["records"]}
    expected = {"matmat", "algebra", "projection", "dispatch", "layers", "adapters", "solvers"}
    optional = {"cola": "cola_monarch", "jax": "sharding"}
    expected |= {name for module, name in optional.items() if importlib.util.find_spec(module)}
    assert expected <= benchmarks
    for record in results["records"]:
        assert record["median_s"] > 0
        assert record["ratio"] is None or record["ratio"] > 0
    markdown = json_path.with_suffix(".md").read_text()
    assert all(f"## {name}" in markdown for name in expected)
    # every row of every table has as many cells as its header (a table renders)
    blocks = (t.strip() for t in markdown.split("\n\n"))
    tables = [t.splitlines() for t in blocks if t.startswith("| case")]
    assert len(tables) == len(benchmarks)
    for table in tables:
        assert {row.count(" | ") for row in table} == {table[0].count(" | ")}, table[:3]
    plots = {p.name.split("-")[-1] for p in tmp_path.glob("*.png")}
    assert {"matmat.png", "algebra.png", "layers.png"} <= plots

    # --replot rewrites the same table from the JSON, running nothing
    json_path.with_suffix(".md").unlink()
    replot = [*run_quick(tmp_path), "--replot"]
    subprocess.run(replot, check=True, capture_output=True, timeout=120)
    assert json_path.with_suffix(".md").read_text() == markdown


def test_only_replaces_just_that_benchmark(tmp_path: Path) -> None:
    run = run_quick(tmp_path)
    subprocess.run([*run, "--only", "algebra"], check=True, capture_output=True, timeout=300)
    subprocess.run([*run, "--only", "layers"], check=True, capture_output=True, timeout=300)
    (json_path,) = tmp_path.glob("*.json")
    benchmarks = {r["benchmark"] for r in json.loads(json_path.read_text())["records"]}
    assert benchmarks == {"algebra", "layers"}
