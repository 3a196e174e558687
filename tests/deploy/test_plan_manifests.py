"""scripts/plan_manifests.py: the manifests carry `flashsale plan --buyers 10000 --stock 1000` on the reference figures.

When this fails after new figures or a planner change, regenerate the manifests with
``.venv/bin/python scripts/plan_manifests.py`` and review the diff.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "plan_manifests.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_manifests_carry_the_plan() -> None:
    result = run("--check")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nregenerate: .venv/bin/python scripts/plan_manifests.py"


def test_the_manifests_equal_the_plan_command_on_a_fresh_clone() -> None:
    # What `flashsale plan --buyers 10000 --stock 1000 --json` prints where make bench never ran.
    command = [sys.executable, "-m", "ops.plan", "--buyers", "10000", "--stock", "1000", "--json"]
    command += ["--figures", str(REPO / "bench" / "reference" / "figures.json")]
    plan = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=120, check=True, cwd=REPO).stdout)
    for function in ("auth", "stock", "order"):
        notes = plan["functions"][function]["annotations"]
        with (REPO / "knative" / f"{function}.yaml").open() as f:
            service = yaml.safe_load(f)
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        for key in ("target", "min-scale", "initial-scale", "max-scale"):
            assert int(annotations[f"autoscaling.knative.dev/{key}"]) == notes[key.replace("-", "_")], f"{function} {key}"
        assert annotations["autoscaling.knative.dev/metric"] == notes["metric"], function


@pytest.fixture
def knative_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "knative"
    shutil.copytree(REPO / "knative", copy)
    return copy


def test_a_manifest_that_drifted_from_the_plan_is_found_and_rewritten(knative_copy: Path) -> None:
    order = knative_copy / "order.yaml"
    original = order.read_text()
    drifted = original.replace("autoscaling.knative.dev/min-scale: ", "autoscaling.knative.dev/min-scale: 1", 1)
    drifted = drifted.replace("            failureThreshold: 3\n", "", 1)
    assert drifted != original
    order.write_text(drifted)

    check = run("--check", "--knative", str(knative_copy))
    assert check.returncode == 1
    assert "order.yaml: autoscaling.knative.dev/min-scale" in check.stdout
    assert "order.yaml: readinessProbe" in check.stdout

    assert run("--knative", str(knative_copy)).returncode == 0
    assert yaml.safe_load(order.read_text()) == yaml.safe_load(original)
    assert run("--check", "--knative", str(knative_copy)).returncode == 0


def test_comments_survive_a_rewrite(knative_copy: Path) -> None:
    before = (knative_copy / "stock.yaml").read_text()
    assert run("--knative", str(knative_copy)).returncode == 0
    assert (knative_copy / "stock.yaml").read_text() == before  # nothing to change, nothing changed
