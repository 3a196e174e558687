"""``python -m tests.faults``: every fault scenario at full size, then the table (``make faults``).

Exits 1 if any scenario lost, oversold or undersold anything, or broke
another check; the table is Markdown, to paste into docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.faults import slow_auth
from tests.faults.scenarios import BY_NAME, FULL, SCENARIOS, SHORT, Report, run_scenario

COLUMNS = [
    "scenario",
    "buyers / units",
    "acknowledged",
    "found",
    "lost",
    "oversold",
    "unsold before → after reconcile",
    "over limit",
    "orders nobody was told of",
    "non-201/409 answers",
    "p50 / p95 wait",
    "verdict",
]


def row(report: Report) -> list[str]:
    v = report.verdict
    others = ", ".join(f"{label} ×{n}" for label, n in sorted(v.other_answers.items())) or "none"
    wait = f"{report.p50 * 1000:.0f} / {report.p95 * 1000:.0f} ms"
    if report.baseline_p95 is not None:
        wait += f" (without: {report.baseline_p95 * 1000:.0f} ms p95)"
    return [
        report.scenario.name,
        f"{v.buyers} / {v.total}",
        str(v.acknowledged),
        str(v.found),
        str(v.lost),
        str(v.oversold),
        f"{v.unsold_before_reconcile} → {v.undersold}",
        str(v.over_limit),
        str(v.unacknowledged),
        others,
        wait,
        "PASS" if report.ok else "FAIL",
    ]


def render(reports: list[Report]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in reports]
    lines.append("")
    for report in reports:
        lines.append(f"- **{report.scenario.name}**: {report.scenario.fault}. Proves: {report.scenario.proves}.")
        for note in report.notes:
            lines.append(f"  - {note}")
        rec = report.reconcile
        if not report.scenario.operator:
            healed = "never" if report.healed_after is None else f"{report.healed_after:.1f} s after the crash"
            lines.append(
                f"  - no command run; the buyers without an order pressed {report.second_wave_rounds} more round(s);"
                f" every unit sold: {healed}; {report.seconds:.1f} s in all"
            )
        else:
            lines.append(
                f"  - reconcile: exit {rec.get('exit_code')}, released {rec.get('released_tickets', '?')} tickets,"
                f" gate rebuilt: {rec.get('gate_rebuilt', '?')}; second wave: {report.second_wave_rounds} round(s);"
                f" {report.seconds:.1f} s in all"
            )
        lines.extend(f"  - FAIL: {problem}" for problem in report.problems)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the small crowds the pytest run uses")
    parser.add_argument("--only", action="append", choices=sorted(BY_NAME), help="run only this scenario (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    size = SHORT if args.short else FULL
    chosen = [BY_NAME[n] for n in args.only] if args.only else SCENARIOS
    print(f"fault scenarios: {size.buyers} buyers for {size.stock} units each, arriving {size.rate:.0f}/s", file=sys.stderr)
    reports = []
    with tempfile.TemporaryDirectory(prefix="flashsale-faults-") as tmp:
        for scenario in chosen:
            print(f"  {scenario.name} ...", file=sys.stderr, flush=True)
            report = run_scenario(scenario, size, Path(tmp) / scenario.name)
            print(f"  {scenario.name}: {'PASS' if report.ok else 'FAIL'} ({report.seconds:.1f} s)", file=sys.stderr, flush=True)
            reports.append(report)
    print(render(reports))
    if not args.only:
        with tempfile.TemporaryDirectory(prefix="flashsale-faults-") as tmp:
            auth = slow_auth.measure(Path(tmp))
        print(
            f"\n- **slow-clients on auth** (not a sale scenario, so not in the exit code): {auth.slow_clients} slow clients"
            f" (auth has {slow_auth.WORKERS} workers x {slow_auth.THREADS} thread); login p95 {auth.calm_p95 * 1000:.0f} ms without,"
            f" {auth.slow_p95 * 1000:.0f} ms with them; {auth.held_up} of {auth.logins} logins held up over {slow_auth.PATIENCE:.0f} s:"
            f" {'PASS' if auth.ok else 'FAIL (see docs/reliability.md, Slow clients and auth)'}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"scenario": r.scenario.name, "ok": r.ok, "problems": r.problems, **dict(zip(COLUMNS, row(r), strict=True))}
                    for r in reports
                ],
                indent=2,
            )
        )
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
