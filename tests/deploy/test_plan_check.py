"""`make deploy` deploys one plan: the manifests carry the plan of the reference figures, and no newer local run plans them otherwise."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.deploy


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """What deploy.sh needs of the repository, in a folder of its own so its manifests can be changed."""
    root = tmp_path / "repo"
    for folder in ("scripts", "knative", "ops", "shared"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bench" / "reference", root / "bench" / "reference")
    return root


def dry_run(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "REGISTRY": "registry.example.com/shop", **env}
    return subprocess.run(
        ["bash", str(root / "scripts" / "deploy.sh")], capture_output=True, text=True, env=full_env, check=False, timeout=120
    )


def applies(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    return [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]


def test_the_repository_deploys(clone: Path) -> None:
    result = dry_run(clone)
    assert result.returncode == 0, result.stderr
    assert applies(result)


def test_a_changed_manifest_value_stops_the_deploy(clone: Path) -> None:
    order = clone / "knative" / "order.yaml"
    order.write_text(order.read_text().replace('autoscaling.knative.dev/min-scale: "55"', 'autoscaling.knative.dev/min-scale: "54"'))
    result = dry_run(clone)
    assert result.returncode != 0
    assert "differ from the plan of bench/reference/figures.json" in result.stderr
    assert "order.yaml: autoscaling.knative.dev/min-scale is '54', the plan says '55'" in result.stderr
    assert "PLAN_CHECK=0" in result.stderr
    assert applies(result) == [], "nothing is applied"

    assert dry_run(clone, PLAN_CHECK="0").returncode == 0


def newer_run(clone: Path, **changes: float) -> None:
    figures = json.loads((clone / "bench" / "reference" / "figures.json").read_text())
    figures["measured_at"] = "2099-01-01T00:00:00+00:00"
    for name, value in changes.items():
        section, key = name.split("__")
        figures[section][key] = value
    (clone / "bench" / "results").mkdir(parents=True)
    (clone / "bench" / "results" / "latest.json").write_text(json.dumps(figures))


def test_a_newer_local_run_that_plans_otherwise_stops_the_deploy(clone: Path) -> None:
    newer_run(clone, order__crowd_rps_per_process=621.0)
    result = dry_run(clone)
    assert result.returncode != 0
    assert "bench/results/latest.json (measured 2099-01-01T00:00:00+00:00) is newer than bench/reference/figures.json" in result.stderr
    assert "order.yaml: autoscaling.knative.dev/target is '264', the plan says '621'" in result.stderr
    assert applies(result) == []


def test_a_newer_local_run_with_the_same_plan_deploys(clone: Path) -> None:
    newer_run(clone)
    result = dry_run(clone)
    assert result.returncode == 0, result.stderr
