"""A token nobody signed costs a worker no memory beyond a small fixed bound.

The order function parses a Bearer token before it checks the signature (a
loser is refused from memory first, docs/security.md). A parse that kept
whatever the payload held let a stranger fill a worker: a payload of nested
empty lists within the old 4,096-character limit is ~140 KB of Python objects,
and 1,500 such presses took one order worker from ~60 MB to ~270 MB, where it
stayed.

The test runs the order function under real gunicorn with one worker and reads
that worker's resident memory before and after 1,500 such presses.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.devstack import Stack, local_stack

pytestmark = pytest.mark.integration

PRESSES = 1_500
GROWTH_BOUND_KB = 8 * 1024  # a few MB: allocator noise and the parsed-token cache's small entries


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def nested_token(n: int) -> str:
    """A well-formed compact JWS, unsigned by us, whose payload is as many empty lists as 4,096 characters hold."""
    header = b64(json.dumps({"alg": "EdDSA", "kid": "k"}).encode())
    signature = b64(os.urandom(64))
    room = (4_096 - len(header) - len(signature) - 2) * 3 // 4 - 40
    payload = json.dumps({"sub": f"stranger-{n}", "x": [[]] * (room // 4)}, separators=(",", ":"))
    token = f"{header}.{b64(payload.encode())}.{signature}"
    assert len(token) <= 4_096
    return token


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def only_worker(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.fixture
def order_stack(tmp_path: Path) -> Iterator[Stack]:
    env = {"WORKERS": "1", "LOG_LEVEL": "WARNING"}
    with local_stack(tmp_path, functions=("order",), extra_env=env) as (stack, _):
        yield stack


def press(connection: http.client.HTTPConnection, token: str) -> int:
    body = json.dumps({"sku": "no-such-phone"})
    connection.request("POST", "/orders", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def test_unsigned_nested_claims_do_not_grow_a_worker(order_stack: Stack) -> None:
    # Bug caught: every such header was parsed and kept for 60 s before its signature was checked: +~200 MB.
    worker = only_worker(order_stack.processes["order"].pid)
    connection = http.client.HTTPConnection("127.0.0.1", order_stack.ports["order"], timeout=30)
    try:
        warm = [press(connection, nested_token(-n)) for n in range(1, 51)]  # the request path's own first allocations
        assert set(warm) == {401}, warm
        before = rss_kb(worker)
        statuses = [press(connection, nested_token(n)) for n in range(PRESSES)]
        after = rss_kb(worker)
    finally:
        connection.close()
    assert set(statuses) == {401}, sorted(set(statuses))
    assert only_worker(order_stack.processes["order"].pid) == worker  # the same worker throughout, not a fresh one
    assert after - before <= GROWTH_BOUND_KB, f"the worker grew {(after - before) / 1024:.0f} MB over {PRESSES} unsigned presses"
