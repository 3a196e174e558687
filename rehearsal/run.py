"""make rehearsal: Knative's data path on this machine, every scenario, the database's verdict.

python -m rehearsal.run                        # the full run: 10,000 buyers for 1,000 units, ...
python -m rehearsal.run --quick                # about 1,000 buyers a crowd (what `make test` runs)
python -m rehearsal.run --only scale-down      # one scenario (repeatable)

Prints a verdict table, writes result.json and rehearsal.png into
rehearsal/results/<timestamp>/, and exits 1 if any check failed (an invariant
broken, a press without an answer, an answer out of its classes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rehearsal import chart
from rehearsal.scenarios import FULL, QUICK, SCENARIOS, Context, Outcome
from rehearsal.topology import raise_fd_limit

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("201", "200", "409", "429", "401", "503_retry_after", "503_proxy", "502", "other", "no_answer")


def table(outcomes: list[Outcome]) -> list[str]:
    heads = ["run", *COLUMNS, "p99 ms"]
    rows = [heads]
    for outcome in outcomes:
        for label, run in outcome.runs.items():
            rows.append([f"{outcome.name}/{label}", *(str(run.count(c)) for c in COLUMNS), f"{run.p99_ms or 0:,.0f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(heads))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.append("")
    for outcome in outcomes:
        lines.append(f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.name}")
        lines += [f"        {'ok  ' if ok else 'FAIL'}  {name}" for name, ok in outcome.checks.items()]
        lines += [f"        note  {note}" for note in outcome.notes]
        lines += [f"        {name}: {value}" for name, value in outcome.figures.items()]
    return lines


def run(names: list[str], *, quick: bool, results: Path, say=print) -> tuple[list[Outcome], Path]:  # type: ignore[no-untyped-def]
    raise_fd_limit()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / stamp
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flashsale-rehearsal-") as scratch:
        ctx = Context(QUICK if quick else FULL, Path(scratch), say)
        for name in names:
            say(f"{name} ...")
            began = time.monotonic()
            try:
                outcome = SCENARIOS[name](ctx)
            except Exception as exc:  # one scenario's crash is its failure, not the run's end
                outcome = Outcome(name, checks={f"ran to the end ({type(exc).__name__}: {exc})": False})
            outcome.figures["seconds"] = round(time.monotonic() - began, 1)
            outcomes.append(outcome)
            say(f"{name}: {'PASS' if outcome.passed else 'FAIL'} in {outcome.figures['seconds']:.0f} s")
        # k6's output, and the proxies' logs (a queue-proxy's failed requests with their termination state)
        for log in Path(scratch).glob("*/*.log"):
            (out / f"{log.parent.name}-{log.name}").write_text(log.read_text(errors="replace"))
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m rehearsal.run " + " ".join(sys.argv[1:]),
        "size": "quick" if quick else "full",
        "seconds": round(time.monotonic() - started, 1),
        "passed": all(o.passed for o in outcomes),
        "scenarios": [o.to_json() for o in outcomes],
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    chart.draw(outcomes, out / "rehearsal.png")
    return outcomes, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about 1,000 buyers a crowd")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    parser.add_argument("--results", default=str(RESULTS), help="where the timestamped result folder goes")
    args = parser.parse_args(argv)
    outcomes, out = run(args.only or list(SCENARIOS), quick=args.quick, results=Path(args.results))
    print("\n".join(["", "verdict", *table(outcomes)]))
    passed = all(o.passed for o in outcomes)
    print(f"\n{'every scenario passed' if passed else 'SOMETHING BROKE'}; result.json and rehearsal.png in {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
