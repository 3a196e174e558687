"""The measured figures a plan is made from: where they are read, which ones it needs, and loading them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository: ops/plan/figures.py is three levels down
REFERENCE_FIGURES = ROOT / "bench" / "reference" / "figures.json"  # in git: a fresh clone plans from it
LATEST_FIGURES = ROOT / "bench" / "results" / "latest.json"  # written by a full `make bench`, ignored by git


class FiguresMissing(Exception):
    """A figure the plan needs is in neither the figures file nor the flags."""


@dataclass(frozen=True)
class FigureSpec:
    section: str
    key: str
    flag: str
    meaning: str
    required: bool = True  # make bench measures it; an optional one only adds a check

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def attribute(self) -> str:
        return f"{self.section}_{self.key}"


FIGURE_SPECS = (
    FigureSpec("order", "losers_rps_per_process", "--order-losers-rps", "409 sold_out answers per second, one order process"),
    FigureSpec("order", "crowd_rps_per_process", "--order-crowd-rps", "POST /orders per second in the crowd, one order process"),
    FigureSpec("order", "p99_ms", "--order-p99-ms", "p99 latency of POST /orders in the benchmark's crowd (ms)"),
    FigureSpec("order", "max_ms", "--order-max-ms", "slowest POST /orders answer in the benchmark (ms)"),
    FigureSpec("stock", "rps_per_process", "--stock-rps", "GET /stock per second, one stock process"),
    FigureSpec("stock", "p99_ms", "--stock-p99-ms", "p99 latency of GET /stock in the benchmark (ms)"),
    FigureSpec("stock", "max_ms", "--stock-max-ms", "slowest GET /stock answer in the benchmark (ms)"),
    FigureSpec("auth", "logins_per_s_per_cpu", "--auth-logins-per-cpu", "logins per second per CPU (bcrypt-bound)"),
    FigureSpec("auth", "bcrypt_verify_ms", "--bcrypt-verify-ms", "one bcrypt verify at the deployed cost (ms)"),
    FigureSpec("auth", "max_ms", "--auth-max-ms", "slowest POST /login answer in the benchmark (ms)"),
    FigureSpec("redis", "gate_admits_per_s", "--gate-admits-per-s", "gate Lua calls per second one Redis key answers"),
    FigureSpec("database", "orders_per_s", "--db-orders-per-s", "orders per second the database confirms"),
    FigureSpec("database", "key_lookups_per_s", "--db-key-lookups-per-s", "Idempotency-Key lookups per second the database answers", False),
)


@dataclass(frozen=True)
class Figures:
    order_losers_rps_per_process: float
    order_crowd_rps_per_process: float
    order_p99_ms: float
    order_max_ms: float
    stock_rps_per_process: float
    stock_p99_ms: float
    stock_max_ms: float
    auth_logins_per_s_per_cpu: float
    auth_bcrypt_verify_ms: float
    auth_max_ms: float
    redis_gate_admits_per_s: float
    database_orders_per_s: float
    database_key_lookups_per_s: float | None = None
    source: str = "flags"
    path: str | None = None  # the figures file, as shown (relative to the repository when inside it); None: flags alone
    measured_at: str | None = None  # the file's measured_at


def default_figures(reference: Path | None = None, latest: Path | None = None) -> Path:
    """The newer of the reference figures (in git) and the last ``make bench`` on this machine.

    Newer by the ``measured_at`` each file records; on a tie, or when ``latest``
    is missing or unreadable, the reference, which someone reviewed.
    """
    reference = reference or REFERENCE_FIGURES
    latest = latest or LATEST_FIGURES
    latest_at = _measured_at(latest)
    reference_at = _measured_at(reference)
    if latest_at is not None and (reference_at is None or latest_at > reference_at):
        return latest
    return reference


def _measured_at(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    when = data.get("measured_at") if isinstance(data, dict) else None
    # ISO 8601 in UTC, as make bench writes it, so the strings sort as the times do.
    return when if isinstance(when, str) else None


def load_figures(path: Path | None, overrides: dict[str, float]) -> Figures:
    """Figures from a benchmark figures file, each replaced by its flag when given.

    ``overrides`` maps a figure's dotted name (``order.p99_ms``) to its value.
    Raises FiguresMissing naming every figure neither source gives.
    """
    measured: dict[str, Any] = {}
    source = "flags"
    shown: str | None = None
    problem = ""
    if path is not None and path.exists():
        try:
            measured = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FiguresMissing(f"cannot read {path}: {exc}") from exc
        if not isinstance(measured, dict):
            raise FiguresMissing(f"{path} is not a JSON object")
        shown = _shown(path)
        source = f"{shown} ({_provenance(measured)})"
    elif path is not None:
        problem = f"{path} does not exist (run `make bench`)"

    values: dict[str, Any] = {}
    missing: list[FigureSpec] = []
    for spec in FIGURE_SPECS:
        value: Any = overrides.get(spec.name)
        if value is None:
            section = measured.get(spec.section)
            value = section.get(spec.key) if isinstance(section, dict) else None
        if value is None:
            if spec.required:
                missing.append(spec)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise FiguresMissing(f"figure {spec.name} must be a positive number, got {value!r}")
        values[spec.attribute] = float(value)
    if missing:
        lines = [f"  {spec.name}: {spec.meaning} (or {spec.flag})" for spec in missing]
        head = (problem + "; no flag gives") if problem else f"{_shown(path) if path else 'the flags'} give no figure for"
        raise FiguresMissing(f"{head}:\n" + "\n".join(lines))
    if overrides and source != "flags":
        source += f", overridden by flags: {', '.join(sorted(overrides))}"
    when = measured.get("measured_at")
    return Figures(**values, source=source, path=shown, measured_at=when if isinstance(when, str) else None)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _provenance(measured: dict[str, Any]) -> str:
    machine = measured.get("machine")
    cpu_model = machine.get("cpu_model") if isinstance(machine, dict) else None
    cpu = f" ({cpu_model})" if cpu_model else ""
    return (
        f"measured {measured.get('measured_at', 'at an unknown time')} by `{measured.get('command', '?')}`"
        f" on {measured.get('cpus', '?')} CPUs{cpu}, bcrypt cost {measured.get('bcrypt_rounds', '?')}"
    )
