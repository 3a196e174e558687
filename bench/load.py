"""One k6 run of the benchmark: the script's JSON summary, its raw points, and
the figures the report needs, read from both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import timeseries
from loadtest.run import run_k6

BENCH_K6 = Path(__file__).resolve().parent / "k6"
# The tags the series and the report read; fewer tags make the raw file smaller.
SYSTEM_TAGS = "status,method,name,group,scenario,error_code,expected_response"


@dataclass
class Load:
    """What one run of a script against one target measured."""

    label: str  # e.g. "crowd-1-baseline"
    script: str
    exit_code: int
    summary: dict[str, Any]
    raw: Path | None
    series: dict[str, timeseries.Series] = field(default_factory=dict)  # by scenario
    output: str = ""

    def scenario(self, name: str) -> timeseries.Series:
        return self.series.get(name) or timeseries.Series()

    def summary_rps(self, scenario: str) -> float | None:
        """req/s as the script reports it (requests over the scenario's DURATION)."""
        value = self.summary.get("scenarios", {}).get(scenario, {}).get("rps")
        return float(value) if isinstance(value, int | float) else None

    def counter(self, name: str) -> int:
        return int(self.summary.get("counters", {}).get(name, 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "script": self.script,
            "exit_code": self.exit_code,
            "summary_file": self.summary.get("summary_file"),
            "raw": self.raw.name if self.raw else None,
            "scenarios": {name: series.to_json() for name, series in self.series.items()},
        }


def script_path(script: str) -> str:
    """loadtest/ scripts by name; the benchmark's own from bench/k6/."""
    return str(BENCH_K6 / script) if (BENCH_K6 / script).exists() else script


def run(script: str, env: dict[str, str], out_dir: Path, label: str, *, timeout: float = 900) -> Load:
    """Run ``script`` with ``env``; keep the summary, the gzipped raw points and k6's output in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_file, raw = out_dir / f"{label}-summary.json", out_dir / f"{label}-points.json.gz"
    summary_file.unlink(missing_ok=True)
    raw.unlink(missing_ok=True)
    result = run_k6(
        script_path(script),
        env,
        summary_file,
        timeout=timeout,
        k6_args=["--out", f"json={raw}", "--system-tags", SYSTEM_TAGS],
    )
    (out_dir / f"{label}-output.txt").write_text(trim(result.output))
    series = timeseries.read(raw) if raw.exists() else {}
    return Load(label, script, result.exit_code, result.summary, raw if raw.exists() else None, series, result.output)


def trim(output: str, keep: int = 200) -> str:
    """k6 prints a warning per failed request; 10,000 of them say no more than the first few."""
    lines = output.splitlines()
    if len(lines) <= keep:
        return output
    return "\n".join([*lines[: keep // 2], f"... {len(lines) - keep} lines left out ...", *lines[-keep // 2 :]]) + "\n"
