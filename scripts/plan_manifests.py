"""Carry the capacity plan for the mission's crowd into knative/*.yaml, or check that it is there.

    .venv/bin/python scripts/plan_manifests.py           # rewrite the planned values in knative/
    .venv/bin/python scripts/plan_manifests.py --check   # exit 1 and list what differs

The plan is ``flashsale plan --buyers 10000 --stock 1000`` on the repository's
reference figures (bench/reference/figures.json), so the manifests follow the
figures in git, not whatever ``make bench`` last wrote on this machine. What it
owns in each of auth, stock, order and events: the autoscaling metric, target,
min-scale, initial-scale, max-scale, target-burst-capacity and
panic-threshold-percentage annotations, containerConcurrency, timeoutSeconds,
and the probes' period, timeout and failure threshold (events' pods come from the
order.placed burst, its probes from order's figures); in dead-letters, the probes
and timeoutSeconds of events, whose image it runs. Values are replaced in place,
so comments and layout stay as they are.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.plan import (  # noqa: E402
    LATEST_FIGURES,
    REFERENCE_FIGURES,
    EventsPlan,
    FunctionPlan,
    Plan,
    Probe,
    Scenario,
    default_figures,
    load_figures,
    make_plan,
)

BUYERS, STOCK = 10_000, 1_000  # the mission's crowd: 10,000 buyers in one second for 1,000 units
FUNCTIONS = ("auth", "stock", "order")
# A Service the plan does not size gets the probes and timeoutSeconds of the one named: the dead-letter
# sink runs the events image.
PROBES_AS = {"dead-letters": "events"}
ANNOTATION = "autoscaling.knative.dev/"
PROBE_FIELDS = {"periodSeconds": "period_seconds", "timeoutSeconds": "timeout_seconds", "failureThreshold": "failure_threshold"}


def mission_plan(figures: Path = REFERENCE_FIGURES) -> Plan:
    return make_plan(Scenario(buyers=BUYERS, stock=STOCK), load_figures(figures, {}))


def planned(fn: FunctionPlan | EventsPlan) -> dict[str, Any]:
    """What the manifest of ``fn`` must say, keyed as :func:`deployed` reads it."""
    notes = fn.annotations
    return {
        ANNOTATION + "metric": notes.metric,
        ANNOTATION + "target": str(notes.target),
        ANNOTATION + "target-utilization-percentage": str(notes.target_utilization_percentage),
        ANNOTATION + "min-scale": str(notes.min_scale),
        ANNOTATION + "initial-scale": str(notes.initial_scale),
        ANNOTATION + "max-scale": str(notes.max_scale),
        ANNOTATION + "target-burst-capacity": str(notes.target_burst_capacity),
        ANNOTATION + "panic-threshold-percentage": None
        if notes.panic_threshold_percentage is None
        else str(notes.panic_threshold_percentage),
        "containerConcurrency": notes.container_concurrency,
        "timeoutSeconds": fn.timeout_seconds,
        "readinessProbe": _probe(fn.probes.readiness),
        "livenessProbe": _probe(fn.probes.liveness),
    }


def wanted(plan: Plan) -> dict[str, dict[str, Any]]:
    """For each manifest (by function), what it must say."""
    manifests = {function: planned(plan.functions[function]) for function in FUNCTIONS}
    manifests["events"] = planned(plan.events)
    for function, like in PROBES_AS.items():
        manifests[function] = {key: value for key, value in manifests[like].items() if key.endswith("Probe") or key == "timeoutSeconds"}
    return manifests


def _probe(probe: Probe) -> dict[str, int]:
    return {field: getattr(probe, attribute) for field, attribute in PROBE_FIELDS.items()}


def deployed(path: Path) -> dict[str, Any]:
    """The same keys as :func:`planned`, read from one Knative Service manifest."""
    service = yaml.safe_load(path.read_text())
    template = service["spec"]["template"]
    annotations = {k: str(v) for k, v in template.get("metadata", {}).get("annotations", {}).items()}
    (container,) = template["spec"]["containers"]
    values: dict[str, Any] = {key: annotations.get(key) for key in planned_keys() if key.startswith(ANNOTATION)}
    values["containerConcurrency"] = template["spec"].get("containerConcurrency")
    values["timeoutSeconds"] = template["spec"].get("timeoutSeconds")
    for probe in ("readinessProbe", "livenessProbe"):
        values[probe] = {field: container.get(probe, {}).get(field) for field in PROBE_FIELDS}
    return values


def planned_keys() -> tuple[str, ...]:
    suffixes = (
        "metric",
        "target",
        "target-utilization-percentage",
        "min-scale",
        "initial-scale",
        "max-scale",
        "target-burst-capacity",
        "panic-threshold-percentage",
    )
    return (*(ANNOTATION + s for s in suffixes), "containerConcurrency", "timeoutSeconds", "readinessProbe", "livenessProbe")


def differences(plan: Plan, knative: Path) -> list[str]:
    found = []
    for function, want in wanted(plan).items():
        have = deployed(knative / f"{function}.yaml")
        found += [f"{function}.yaml: {key} is {have[key]!r}, the plan says {want[key]!r}" for key in want if have[key] != want[key]]
    return found


def rewrite(text: str, want: dict[str, Any]) -> str:
    """``text`` with the planned values put in place; raises ValueError for what needs a hand."""
    lines = text.splitlines(keepends=True)
    for key, value in want.items():
        if key.startswith(ANNOTATION) and value is None:
            if any(re.match(rf"^\s*{re.escape(key)}:", line) for line in lines):
                raise ValueError(f"{key} must be removed by hand (the plan leaves it to Knative's default)")
        elif key.startswith(ANNOTATION):
            # Annotation values are strings: a number is quoted so that YAML keeps it one.
            text = f'"{value}"' if re.fullmatch(r"-?[0-9.]+", str(value)) else str(value)
            lines = _set_scalar(lines, re.escape(key), text, key)
        elif key == "timeoutSeconds":
            # The Service's spec.timeoutSeconds; a probe's own timeoutSeconds sits deeper, in its block.
            lines = _set_scalar(lines, "timeoutSeconds", str(value), key, indent=6)
        elif key == "containerConcurrency":
            present = any(re.match(r"^\s*containerConcurrency:", line) for line in lines)
            if present != (value is not None):
                raise ValueError(f"containerConcurrency must be {'added' if value is not None else 'removed'} by hand (the plan: {value})")
            if value is not None:
                lines = _set_scalar(lines, "containerConcurrency", str(value), key)
        else:
            lines = _set_probe(lines, key, value)
    return "".join(lines)


def _set_scalar(lines: list[str], key_pattern: str, value: str, name: str, indent: int | None = None) -> list[str]:
    space = r"\s*" if indent is None else rf" {{{indent}}}"
    pattern = re.compile(rf"^({space}{key_pattern}:\s*)(\"[^\"]*\"|'[^']*'|[^\s#]+)(.*)$", re.S)
    hits = [i for i, line in enumerate(lines) if pattern.match(line)]
    if len(hits) != 1:
        raise ValueError(f"{name}: expected one line to set, found {len(hits)}")
    (i,) = hits
    lines[i] = pattern.sub(lambda m: m.group(1) + value + m.group(3), lines[i])
    return lines


def _set_probe(lines: list[str], probe: str, fields: dict[str, int]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if re.match(rf"^\s*{probe}:\s*$", line)]
    if len(starts) != 1:
        raise ValueError(f"{probe}: expected one block, found {len(starts)}")
    (start,) = starts
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    block = lines[start + 1 : end]
    child = min(len(line) - len(line.lstrip()) for line in block if line.strip())
    for field, value in fields.items():
        pattern = re.compile(rf"^(\s{{{child}}}{field}:\s*)\S+(.*)$", re.S)
        hits = [i for i, line in enumerate(block) if pattern.match(line)]
        if hits:
            block[hits[0]] = pattern.sub(lambda m, v=value: m.group(1) + str(v) + m.group(2), block[hits[0]])
        else:
            block.append(" " * child + f"{field}: {value}\n")
    return lines[: start + 1] + block + lines[end:]


def deploy_check(knative: Path, reference: Path = REFERENCE_FIGURES, latest: Path = LATEST_FIGURES) -> list[str]:
    """Why ``make deploy`` should not apply knative/ as it is: empty when it may.

    The manifests must carry the plan of the reference figures they were made from; and a
    ``make bench`` on this machine newer than those figures (what ``flashsale plan`` reads
    by default) must not plan them differently, or the operator would deploy one plan
    while ``flashsale plan`` shows another.
    """
    plan = mission_plan(reference)
    found = differences(plan, knative)
    if found:
        return [
            f"knative/*.yaml differ from the plan of {plan.figures.path} (measured {plan.figures.measured_at}):",
            *(f"  {line}" for line in found),
            "  carry the plan into them: .venv/bin/python scripts/plan_manifests.py",
        ]
    if default_figures(reference, latest) != latest:
        return []
    newer = mission_plan(latest)
    moved = differences(newer, knative)
    if not moved:
        return []
    return [
        f"{newer.figures.path} (measured {newer.figures.measured_at}) is newer than {plan.figures.path}"
        f" (measured {plan.figures.measured_at}), which knative/*.yaml were planned from, and plans them differently:",
        *(f"  {line}" for line in moved),
        "  publish it first (scripts/reference_figures.py bench/results/<run>, then scripts/plan_manifests.py),"
        " or move it aside to deploy the reference plan",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a manifest differs from the plan")
    parser.add_argument("--figures", type=Path, default=REFERENCE_FIGURES, help="figures to plan from (bench/reference/figures.json)")
    parser.add_argument("--knative", type=Path, default=ROOT / "knative", help="the manifests' folder (knative/)")
    parser.add_argument(
        "--deploy-check",
        action="store_true",
        help="what make deploy runs: exit 1 if the manifests differ from the reference plan, or a newer"
        " bench/results/latest.json plans them differently",
    )
    args = parser.parse_args(argv)
    if args.deploy_check:
        problems = deploy_check(args.knative, args.figures)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    plan = mission_plan(args.figures)
    found = differences(plan, args.knative)
    if args.check or not found:
        for line in found:
            print(line)
        if found:
            print("run scripts/plan_manifests.py to carry the plan into the manifests", file=sys.stderr)
        return 1 if found else 0
    for function, want in wanted(plan).items():
        path = args.knative / f"{function}.yaml"
        try:
            path.write_text(rewrite(path.read_text(), want))
        except ValueError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 1
    left = differences(plan, args.knative)
    for line in left:
        print(f"still differs: {line}", file=sys.stderr)
    print(f"knative/ carries the plan for {BUYERS:,} buyers and {STOCK:,} units ({plan.figures.source})")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
