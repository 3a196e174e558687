"""`make deploy` stops when Kourier would not pass the client's address, which auth's TRUSTED_PROXIES counts on.

Kourier's Envoy appends the client's address to X-Forwarded-For only with
``use-remote-address: "true"`` in the ConfigMap config-kourier, which net-kourier reads
from its own namespace, knative-serving (net-kourier ``pkg/reconciler/ingress/config/kourier.go``;
default false, ``config/200-config.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.test_manifests import fake_command, knative_services, run_script

pytestmark = pytest.mark.deploy

KOURIER = "kourier.ingress.networking.knative.dev"
FIX = """kubectl patch configmap/config-kourier -n knative-serving --type merge -p '{"data":{"use-remote-address":"true"}}'"""


def fake_cluster(folder: Path, ingress_class: str, remote_address: str | None) -> Path:
    """kubectl and kn for a recent Knative with the given ingress; every other call is logged."""
    log = folder / "calls"
    kourier = "exit 1" if remote_address is None else f'echo "{remote_address}"'
    fake_command(
        folder,
        "kubectl",
        f"""case "$*" in
  "get namespace "*) echo 1.23.0 ;;
  "get configmap config-network -n knative-serving "*) echo "{ingress_class}" ;;
  "get configmap config-kourier -n knative-serving "*) {kourier} ;;
  *) echo "kubectl $*" >> {log} ;;
esac
""",
    )
    fake_command(folder, "kn", f'echo "kn $*" >> {log}\n')
    return log


def deploy(folder: Path, **env: str) -> tuple[int, str, str]:
    result = run_script("deploy.sh", {"DRY_RUN": "0", "REGISTRY": "registry.example.com/shop", **env}, folder)
    log = folder / "calls"
    return result.returncode, result.stderr, log.read_text() if log.exists() else ""


@pytest.mark.parametrize("remote_address", ["", "false"])
def test_kourier_without_the_client_address_stops_the_deploy(tmp_path: Path, remote_address: str) -> None:
    fake_cluster(tmp_path, KOURIER, remote_address)
    code, err, calls = deploy(tmp_path)
    assert code != 0
    assert "use-remote-address" in err and "config-kourier" in err
    assert FIX in err, "the message names the one-line fix"
    assert "KOURIER_CHECK=0" in err
    assert calls == "", "nothing is applied"


def test_kourier_with_the_client_address_deploys(tmp_path: Path) -> None:
    fake_cluster(tmp_path, KOURIER, "true")
    code, err, calls = deploy(tmp_path)
    assert code == 0, err
    assert calls.count("kn service apply") == len(knative_services())


def test_the_check_can_be_skipped(tmp_path: Path) -> None:
    fake_cluster(tmp_path, KOURIER, "false")
    code, err, calls = deploy(tmp_path, KOURIER_CHECK="0")
    assert code == 0, err
    assert calls.count("kn service apply") == len(knative_services())


@pytest.mark.parametrize(
    ("ingress_class", "said"), [("istio.ingress.networking.knative.dev", "not Kourier"), ("", "cannot read the ingress class")]
)
def test_another_ingress_or_no_answer_warns_and_goes_on(tmp_path: Path, ingress_class: str, said: str) -> None:
    fake_cluster(tmp_path, ingress_class, None)
    code, err, calls = deploy(tmp_path)
    assert code == 0, err
    assert said in err and "TRUSTED_PROXIES" in err
    assert calls.count("kn service apply") == len(knative_services())


def test_the_dry_run_names_the_check_and_its_fix() -> None:
    result = run_script("deploy.sh", {"DRY_RUN": "1", "REGISTRY": "registry.example.com/shop"})
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "config-kourier" in line]
    assert line.startswith("# ") and FIX in line
