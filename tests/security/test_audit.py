"""pip-audit over the pinned runtime requirements: no dependency with a known vulnerability ships.

It needs PyPI's vulnerability data (the per-release JSON API). Where that
cannot be reached, or answers for none of the pins (a mirror, no network),
the test is skipped and says why: a skip is not a pass.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
NETWORK_TROUBLE = ("ConnectionError", "Max retries", "Temporary failure in name resolution", "timed out", "NewConnectionError")


def test_pinned_requirements_have_no_known_vulnerabilities() -> None:
    if importlib.util.find_spec("pip_audit") is None:
        pytest.skip("pip-audit is not installed in this environment (it belongs in requirements-dev)")
    try:
        done = subprocess.run(
            # --no-deps --disable-pip: requirements.txt is fully pinned by pip-compile,
            # so nothing needs resolving and no throwaway virtualenv is built
            [sys.executable, "-m", "pip_audit", "-r", str(REQUIREMENTS), "--no-deps", "--disable-pip",
             "--vulnerability-service", "pypi", "--format", "json", "--progress-spinner", "off"],
            capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("pip-audit did not finish within 300 s: PyPI's vulnerability service is too slow or unreachable")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        if any(trouble in done.stderr for trouble in NETWORK_TROUBLE):
            pytest.skip(f"PyPI's vulnerability service is unreachable from here: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip-audit failed (exit {done.returncode}): {done.stderr}") from None
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    vulnerable = {f"{d['name']}=={d['version']}": [v["id"] for v in d["vulns"]] for d in audited if d.get("vulns")}
    assert not vulnerable, f"pinned requirements with known vulnerabilities (upgrade them in requirements.in and `make lock`): {vulnerable}"
    unaudited = [d["name"] for d in report["dependencies"] if "skip_reason" in d]
    if unaudited:
        pytest.skip(
            f"PyPI's vulnerability service could not audit {len(unaudited)} of {len(report['dependencies'])} pinned packages"
            f" (it answered 'not found' for their releases: a mirror or a proxy is in the way), e.g. {', '.join(unaudited[:5])}"
        )
