"""Publish one full ``make bench`` run's figures as the repository's reference figures.

    .venv/bin/python scripts/reference_figures.py bench/results/<timestamp> [--this-machine]

Writes bench/reference/figures.json: what ``flashsale plan`` reads on a clone
that has never run ``make bench`` (bench/results/ is not in git). The file is the
run's per-process figures (``Results.figures()``, the shape of latest.json), the
folder they came from, and the machine they were measured on. ``--this-machine``
fills in the CPU model, memory and redis-server version when the run's
results.json predates their recording; give it only on the machine that ran the
benchmark. After publishing, re-plan the manifests: scripts/plan_manifests.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import Results  # noqa: E402
from bench.run import machine_hardware  # noqa: E402
from ops.plan import FIGURE_SPECS, REFERENCE_FIGURES  # noqa: E402


def reference(run: Path, *, this_machine: bool) -> dict[str, object]:
    results = Results.from_json(json.loads((run / "results.json").read_text()))
    if results.meta.get("command") != "make bench":
        raise SystemExit(f"{run}: made by `{results.meta.get('command')}`, not a full `make bench`; publish only a full run")
    machine = dict(results.meta.get("machine") or {})
    if this_machine:
        machine = {**{k: v for k, v in machine_hardware().items() if v is not None}, **{k: v for k, v in machine.items() if v}}
    results.meta["machine"] = machine
    figures = results.figures()
    missing = [spec.name for spec in FIGURE_SPECS if spec.required and (figures.get(spec.section) or {}).get(spec.key) is None]
    if missing:
        raise SystemExit(f"{run}: the run did not measure {', '.join(missing)}")
    try:
        folder = str(run.resolve().relative_to(ROOT))
    except ValueError:
        folder = str(run)
    about = (
        f"The per-process figures of the full `make bench` of {figures['measured_at']}, on {figures['cpus']} CPUs"
        f" ({machine.get('cpu_model', 'CPU model not recorded')}, {machine.get('memory_gib', '?')} GiB, Linux {machine.get('kernel', '?')},"
        f" Python {machine.get('python', '?')}, redis-server {machine.get('redis', '?')}). k6, redis-server and the functions"
        " shared those CPUs, so a pod with a CPU of its own answers more than these rates."
    )
    return {"about": about, **figures, "results": folder}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a bench/results/<timestamp> folder of a full make bench")
    parser.add_argument("--this-machine", action="store_true", help="add this machine's CPU model, memory and redis-server")
    parser.add_argument("--out", type=Path, default=REFERENCE_FIGURES, help="where to write (bench/reference/figures.json)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reference(args.run, this_machine=args.this_machine), indent=2) + "\n")
    print(f"wrote {args.out}; now run scripts/plan_manifests.py to carry the plan into knative/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
