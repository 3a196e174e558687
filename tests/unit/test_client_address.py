"""The caller's address behind each networking layer Knative runs on, as auth sees X-Forwarded-For.

Each hop that appends puts its peer's address at the end: the ingress gateway
the client's (when it is told to), the activator the gateway's, queue-proxy
the activator's; auth itself sees queue-proxy on 127.0.0.1. With
``TRUSTED_PROXIES: "3"`` (knative/config.yaml) the client is the third entry
from the end, whatever the client wrote in front.
"""

from __future__ import annotations

import pytest
from flask import Request
from werkzeug.test import EnvironBuilder

from shared.http import client_address

CLIENT, GATEWAY, ACTIVATOR = "198.51.100.7", "10.0.1.5", "10.0.2.9"
TRUSTED = 3  # knative/config.yaml


def request(forwarded_for: str | None) -> Request:
    headers = [("X-Forwarded-For", forwarded_for)] if forwarded_for is not None else []
    return Request(EnvironBuilder(path="/login", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ())


@pytest.mark.parametrize(
    ("layer", "forwarded_for"),
    [
        # net-kourier with use-remote-address: true in config-kourier (make deploy requires it): Envoy appends the client.
        ("kourier, use-remote-address true", f"{CLIENT}, {GATEWAY}, {ACTIVATOR}"),
        # Istio's ingress gateway appends the client (use_remote_address on gateways); sidecars append nothing.
        ("istio gateway", f"{CLIENT}, {GATEWAY}, {ACTIVATOR}"),
        # Contour's Envoy listeners set use_remote_address: true.
        ("contour", f"{CLIENT}, {GATEWAY}, {ACTIVATOR}"),
        # An entry the client wrote itself sits in front and is never believed.
        ("kourier, a client-written entry", f"203.0.113.66, {CLIENT}, {GATEWAY}, {ACTIVATOR}"),
    ],
)
def test_the_client_is_found_where_the_gateway_appends_it(layer: str, forwarded_for: str) -> None:
    assert client_address(request(forwarded_for), TRUSTED) == CLIENT, layer


@pytest.mark.parametrize(
    ("layer", "forwarded_for"),
    [
        # Kourier's default, use-remote-address: false: Envoy appends nothing, two entries for three trusted hops.
        ("kourier, use-remote-address false", f"{GATEWAY}, {ACTIVATOR}"),
        ("no proxy at all", None),
        ("an empty header", " , "),
    ],
)
def test_a_chain_shorter_than_the_trusted_hops_gives_no_address(layer: str, forwarded_for: str | None) -> None:
    # Bug caught: falling back to remote_addr, queue-proxy's 127.0.0.1 for every caller: one rate-limit bucket
    # for the whole login wave (250 logins through gateway and activator: 100 x 401, then 150 x 429).
    assert client_address(request(forwarded_for), TRUSTED) is None, layer


def test_with_no_trusted_hops_the_peer_is_the_client() -> None:
    assert client_address(request(f"203.0.113.66, {CLIENT}"), 0) == "127.0.0.1"


def test_requests_with_no_address_are_counted_each_and_logged_once_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Bug caught: a line per request (a login wave writes thousands) or none at all (nobody learns the ingress is misconfigured).
    import time

    from shared import ratelimit

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    limiter = ratelimit.LoginLimiter(None, 10, 100, 60, registrations_per_address=20)  # type: ignore[arg-type]  # never reaches Redis
    counted: list[int] = []
    limiter.observe_unknown_address.append(lambda: counted.append(1))
    with caplog.at_level("WARNING", logger="shared.ratelimit"):
        for _ in range(5):
            limiter.check_registration(None)
        clock[0] += ratelimit.UNKNOWN_ADDRESS_LOG_SECONDS - 1
        limiter.check_registration(None)
        clock[0] += 1
        limiter.check_registration(None)
    assert len(counted) == 7
    lines = [r for r in caplog.records if "client address unknown" in r.getMessage()]
    assert [r.__dict__["requests"] for r in lines] == [1, 6]
