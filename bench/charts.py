"""PNG charts of a run with matplotlib: latency percentiles per scenario,
requests per second over time, and status codes over time."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.measure import Measure  # noqa: E402
from bench.results import Results  # noqa: E402

COLORS = {"baseline": "#9e9e9e", "flashsale": "#1f77b4"}
STATUS_COLORS = {"200": "#2ca02c", "201": "#1f77b4", "409": "#ff7f0e", "connection": "#d62728", "timeout": "#7f0000"}


def compared(results: Results) -> dict[str, dict[str, Measure]]:
    """scenario -> {"baseline": ..., "flashsale": ...} (or the isolation phases), in report order."""
    runs: dict[str, dict[str, Measure]] = {}
    for r in results.crowd:
        runs[f"crowd {r.number}"] = {"baseline": r.baseline, "flashsale": r.real}
    for name, pair in results.pairs.items():
        runs[name] = {"baseline": pair.baseline, "flashsale": pair.real}
    if results.login is not None:
        runs["login"] = {"flashsale": results.login}
    for deployment in ("split", "monolith"):
        phases = {p: results.isolation[f"{deployment}-{p}"] for p in ("alone", "storm") if f"{deployment}-{p}" in results.isolation}
        if phases:
            runs[f"isolation {deployment}"] = phases
    return runs


def _grid(count: int, columns: int = 3) -> tuple[Figure, list[Axes]]:
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return figure, flat[:count]


def latency(results: Results, out: Path) -> Path:
    runs = compared(results)
    figure, axes = _grid(len(runs))
    for ax, (name, measures) in zip(axes, runs.items(), strict=True):
        width = 0.8 / max(1, len(measures))
        for i, (who, m) in enumerate(measures.items()):
            values = [m.p50_ms or 0, m.p95_ms or 0, m.p99_ms or 0]
            ax.bar([x + i * width for x in range(3)], values, width, label=who, color=COLORS.get(who))
        ax.set_xticks([x + width * (len(measures) - 1) / 2 for x in range(3)], ["p50", "p95", "p99"])
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(name)
        ax.legend(fontsize="small")
    figure.suptitle("Latency percentiles of answered requests, per scenario")
    figure.tight_layout()
    path = out / "latency.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def throughput(results: Results, out: Path) -> Path:
    runs = compared(results)
    figure, axes = _grid(len(runs))
    for ax, (name, measures) in zip(axes, runs.items(), strict=True):
        for who, m in measures.items():
            ax.plot(range(len(m.per_second)), m.per_second, label=who, color=COLORS.get(who))
        ax.set_xlabel("s from the first request")
        ax.set_ylabel("requests/s")
        ax.set_title(name)
        ax.legend(fontsize="small")
    figure.suptitle("Requests per second over time")
    figure.tight_layout()
    path = out / "requests-per-second.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def statuses(results: Results, out: Path) -> Path:
    panels = [(f"{name}: {who}", m) for name, measures in compared(results).items() for who, m in measures.items()]
    figure, axes = _grid(len(panels), columns=4)
    for ax, (name, m) in zip(axes, panels, strict=True):
        classes = sorted(m.by_status_per_second)
        seconds = range(max((len(v) for v in m.by_status_per_second.values()), default=0))
        if classes:
            ax.stackplot(
                seconds,
                [m.by_status_per_second[c] for c in classes],
                labels=classes,
                colors=[STATUS_COLORS.get(c, "#8c564b") for c in classes],
            )
            ax.legend(fontsize="x-small", loc="upper right")
        ax.set_xlabel("s")
        ax.set_ylabel("answers/s")
        ax.set_title(name, fontsize="small")
    figure.suptitle("Status codes over time (connection = refused or reset before an answer)")
    figure.tight_layout()
    path = out / "status-codes.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def draw(results: Results, out: Path) -> list[str]:
    """Write every chart that has data; returns their file names (relative to ``out``)."""
    if not compared(results):
        return []
    out.mkdir(parents=True, exist_ok=True)
    return [path.name for path in (latency(results, out), throughput(results, out), statuses(results, out))]
