"""Run structlin's benchmarks and write the results: JSON, a Markdown table and PNG plots.

    python benchmarks/run.py                 # everything (about 20 minutes on a 2-core CPU)
    python benchmarks/run.py --quick         # every code path at toy sizes, under two minutes
    python benchmarks/run.py --only matmat --only projection
    python benchmarks/run.py --replot        # rewrite the table and plots from the JSON alone

Each benchmark is a module of this folder with `NAME`, `DESCRIPTION`, `PLOT`
(the case key for the x axis and the keys that split lines, or `None`) and
`run(settings) -> list[Record]`. Results go to `benchmarks/results/<machine>.json`
and `.md` (`--only` replaces just those benchmarks' records in an existing file),
and one `<machine>-<benchmark>.png` per benchmark with a plot. Quick runs write
under `benchmarks/results/quick/` unless `--out` says otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

# Module names; `cola_monarch`, not `cola`, which would shadow the CoLA package itself.
BENCHMARKS = (
    "matmat",
    "cola_monarch",
    "algebra",
    "projection",
    "dispatch",
    "layers",
    "adapters",
    "sharding",
    "mixer",
    "solvers",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, few rounds (for tests)")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run just this benchmark (repeatable)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="run nothing: rewrite the Markdown table and the plots from this machine's JSON",
    )
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = harness.Settings.make(args.quick, device)
    out = args.out or (HERE / "results" / "quick" if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    info = harness.machine(device)
    info["quick"] = args.quick
    slug = harness.machine_slug(info)
    json_path = out / f"{slug}.json"
    if args.replot:
        saved = json.loads(json_path.read_text())
        write_reports(json_path, saved["machine"], [harness.Record(**r) for r in saved["records"]])
        return 0

    names = args.only or list(BENCHMARKS)
    modules = {name: importlib.import_module(name) for name in names}
    rows: list[harness.Record] = []
    for name, module in modules.items():
        start = time.perf_counter()
        print(f"== {name}: {module.DESCRIPTION.splitlines()[0]}", flush=True)
        new = module.run(settings)
        rows += new
        print(f"   {len(new)} records in {time.perf_counter() - start:.1f} s", flush=True)

    if args.only and json_path.exists():  # keep the other benchmarks' records
        old = json.loads(json_path.read_text())["records"]
        kept = [harness.Record(**r) for r in old if r["benchmark"] not in names]
        rows = kept + rows
        rows.sort(key=lambda r: BENCHMARKS.index(r.benchmark) if r.benchmark in BENCHMARKS else 99)
    harness.write_json(json_path, info, rows)
    write_reports(json_path, info, rows)
    return 0


def write_reports(json_path: Path, info: dict, rows: list[harness.Record]) -> None:
    """The Markdown table beside `json_path`, and one plot per benchmark that has one."""
    present = {
        name: importlib.import_module(name) for name in dict.fromkeys(r.benchmark for r in rows)
    }
    descriptions = {name: module.DESCRIPTION for name, module in present.items()}
    json_path.with_suffix(".md").write_text(harness.markdown(info, rows, descriptions))
    for name, module in present.items():
        if module.PLOT is not None:
            harness.plot(
                json_path.with_name(f"{json_path.stem}-{name}.png"), rows, name, *module.PLOT
            )
    print(f"results: {json_path}, {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
