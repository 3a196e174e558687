"""The rehearsal's chart: every run's presses by class, and the answered presses' p99."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

from rehearsal.scenarios import Outcome  # noqa: E402

CLASS_COLORS = {
    "201": "#1f77b4", "200": "#2ca02c", "409": "#ff7f0e", "429": "#9467bd", "401": "#8c564b",
    "503_retry_after": "#bcbd22", "503_proxy": "#e377c2", "502": "#d62728", "other": "#7f7f7f", "no_answer": "#000000",
}  # fmt: skip


def draw(outcomes: list[Outcome], path: Path) -> Path | None:
    runs = [(f"{o.name}/{label}", run) for o in outcomes for label, run in o.runs.items()]
    if not runs:
        return None
    figure, (presses_ax, p99_ax) = plt.subplots(1, 2, figsize=(14, 0.5 * len(runs) + 2.5))
    names = [name for name, _ in runs]
    left = [0.0] * len(runs)
    for kind, color in CLASS_COLORS.items():
        shares = [run.count(kind) / max(1, run.presses) for _, run in runs]
        if any(shares):
            presses_ax.barh(names, shares, left=left, color=color, label=kind)
            left = [a + b for a, b in zip(left, shares, strict=True)]
    presses_ax.set_xlabel("share of presses")
    presses_ax.legend(fontsize="small", loc="lower right")
    presses_ax.invert_yaxis()
    p99_ax.barh(names, [run.p99_ms or 0 for _, run in runs], color="#1f77b4")
    p99_ax.set_xlabel("p99 of answered presses, ms")
    p99_ax.invert_yaxis()
    figure.suptitle("Rehearsal: every press by class (no_answer must be 0), and p99")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
