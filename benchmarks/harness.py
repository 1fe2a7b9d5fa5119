"""Timing, records and reports shared by every benchmark.

A benchmark builds its contenders for one case (a dictionary of zero-argument
callables doing the same work) and hands them to [`compare`][], which warms
each up, then times them in turns (the order rotating every round, so drift in
the machine's speed hits every contender alike) and keeps the median of each.
Ratios are taken against one baseline contender of the same case, inside one
run, never across runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SLOW_S = 1.0  # calls at least this long are warmed up once, not twice


@dataclasses.dataclass(frozen=True)
class Settings:
    """How hard to measure: `quick` runs every code path once or twice, for the tests."""

    quick: bool = False
    rounds: int = 7
    min_sample_s: float = 0.02  # a sample repeats the call until it has run this long
    device: str = "cpu"

    @classmethod
    def make(cls, quick: bool, device: str) -> Settings:
        return (
            cls(quick=True, rounds=2, min_sample_s=0.0, device=device)
            if quick
            else cls(device=device)
        )


@dataclasses.dataclass
class Record:
    """One contender on one case: the median seconds per call and its ratio to the baseline."""

    benchmark: str
    case: dict[str, Any]
    contender: str
    median_s: float
    spread_s: float  # half the interquartile range of the samples
    ratio: float | None = None  # median / the baseline's median, same case, same run
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _sample(fn: Callable[[], Any], number: int, sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return (time.perf_counter() - start) / number


def compare(
    contenders: dict[str, Callable[[], Any]],
    settings: Settings,
    *,
    baseline: str | None = None,
) -> dict[str, tuple[float, float, float | None]]:
    """Median seconds per call of each contender, timed in rotating turns.

    Returns `{name: (median, spread, ratio to baseline)}`. Each contender runs
    twice untimed first (caches, plum resolution, allocator), once if that call
    took `SLOW_S` or more; a sample repeats a call until `settings.min_sample_s`
    has passed so microsecond calls are timed over many repetitions.
    """
    sync = synchronizer(settings.device)
    numbers = {}
    for name, fn in contenders.items():
        once = _sample(fn, 1, sync)
        if once < SLOW_S:  # a slow call gains nothing from warming up: spare the second
            once = _sample(fn, 1, sync)
        numbers[name] = max(1, min(10_000, int(settings.min_sample_s / max(once, 1e-9))))
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one contender's sample would charge it for everyone
    try:
        for i in range(settings.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                samples[name].append(_sample(contenders[name], numbers[name], sync))
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    out = {}
    base = statistics.median(samples[baseline]) if baseline else None
    for name, values in samples.items():
        median = statistics.median(values)
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [median, median, median]
        out[name] = (median, (q[2] - q[0]) / 2, median / base if base else None)
    return out


def records(
    benchmark: str,
    case: dict[str, Any],
    timings: dict[str, tuple[float, float, float | None]],
    extra: dict[str, dict[str, Any]] | None = None,
) -> list[Record]:
    return [
        Record(
            benchmark, dict(case), name, median, spread, ratio, dict((extra or {}).get(name, {}))
        )
        for name, (median, spread, ratio) in timings.items()
    ]


# -- the machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The library versions a run records, by module: the distribution that installs it. Read from
# the installed distribution's metadata, not from `module.__version__`, which some lack (CoLA has
# none, so runs recorded "CoLA None" although cola-ml 0.0.7 was installed and timed). `plum` is
# installed by plum-dispatch or by CoLA's fork cola-plum-dispatch, whichever pip put last.
DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "jax": ("jax",),
    "cola": ("cola-ml",),
    "plum": ("plum-dispatch", "cola-plum-dispatch"),
    "scipy": ("scipy",),
}


def _version(distributions: tuple[str, ...]) -> str | None:
    """The installed version of the first of these distributions that is installed."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine(device: str) -> dict[str, Any]:
    """What the numbers were measured on: processor, cores, accelerator, library versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "date": datetime.date.today().isoformat(),
    }
    for module, distribution in DISTRIBUTIONS.items():
        info[module] = _version(distribution)
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name()
    else:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def machine_slug(info: dict[str, Any]) -> str:
    name = info.get("gpu") or info["cpu"]
    name = re.sub(r"\(R\)|\(TM\)|CPU|Processor|@.*", "", name)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{info['device'].split(':')[0]}-{slug}-{info['cores']}cores"


# -- reports ---------------------------------------------------------------------------------------
def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_case(case: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in case.items())


def write_json(path: Path, info: dict[str, Any], rows: Sequence[Record]) -> None:
    path.write_text(
        json.dumps({"machine": info, "records": [dataclasses.asdict(r) for r in rows]}, indent=1)
        + "\n"
    )


def markdown(info: dict[str, Any], rows: Sequence[Record], descriptions: dict[str, str]) -> str:
    """One table per benchmark: case, contender, median time, ratio to the baseline, extras."""
    lines = [
        f"# structlin benchmarks on {info.get('gpu') or info['cpu']}",
        "",
        f"{info['cores']} cores, device `{info['device']}`, {info['platform']}; "
        f"Python {info['python']}, NumPy {info['numpy']}, PyTorch {info['torch']}, "
        f"JAX {info['jax']}, CoLA {info['cola'] or 'not installed'}; measured {info['date']}"
        + (" (quick mode: timings not meaningful)" if info.get("quick") else "")
        + ".",
        "",
        "Medians over rounds in which the contenders run in turns; the ratio is the "
        "contender's time over the baseline's, in the same case of the same run "
        "(below 1: faster than the baseline).",
    ]
    for benchmark in dict.fromkeys(r.benchmark for r in rows):
        mine = [r for r in rows if r.benchmark == benchmark]
        extra_keys = list(dict.fromkeys(k for r in mine for k in r.extra))
        lines += ["", f"## {benchmark}", "", descriptions.get(benchmark, ""), ""]
        header = ["case", "contender", "time", "ratio", *extra_keys]
        lines.append(_row(header))
        lines.append(_row(["---"] * len(header)))
        for r in mine:
            ratio = "" if r.ratio is None else f"{r.ratio:.3g}"
            extras = [_fmt_extra(r.extra.get(k)) for k in extra_keys]
            lines.append(
                _row([_fmt_case(r.case), r.contender, _fmt_time(r.median_s), ratio, *extras])
            )
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt_extra(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# Contenders that are the reference a structlin line is read against, drawn dashed in plots.
BASELINES = ("dense", "numpy", "direct", "cola")


def plot(path: Path, rows: Sequence[Record], benchmark: str, x: str, series: Sequence[str]) -> None:
    """Time against `case[x]` on log-log axes, one line per contender and value of `series`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r.benchmark == benchmark]
    panels = sorted(
        {tuple((k, v) for k, v in r.case.items() if k not in (x, *series)) for r in mine}
    )
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    # One colour per value of `series` (per contender if there is one value), shared by the
    # contenders, and the baselines dashed or dotted: each line reads against its own baseline.
    keys = sorted({tuple(str(r.case.get(k)) for k in series) for r in mine})
    contenders = list(dict.fromkeys(r.contender for r in mine))
    baselines = [c for c in contenders if c in BASELINES]
    for ax, panel in zip(axes.flat, panels, strict=False):  # more axes than panels
        lines: dict[tuple[str, tuple[str, ...]], list[tuple[Any, float]]] = {}
        for r in mine:
            if tuple((k, v) for k, v in r.case.items() if k not in (x, *series)) != panel:
                continue
            key = tuple(str(r.case.get(k)) for k in series)
            lines.setdefault((r.contender, key), []).append((r.case[x], r.median_s))
        for (contender, key), points in sorted(lines.items()):
            points.sort()
            colour = keys.index(key) if len(keys) > 1 else contenders.index(contender)
            style = (
                ("--", ":", "-.")[baselines.index(contender) % 3] if contender in baselines else "-"
            )
            label = " ".join([contender, *(f"{k}={v}" for k, v in zip(series, key, strict=True))])
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                style,
                marker="o",
                color=f"C{colour % 10}",
                label=label,
                ms=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel("seconds")
        ax.set_title(", ".join(f"{k}={v}" for k, v in panel) or benchmark, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(benchmark)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
