"""The kernel's side of a crowd: sockets left in TIME_WAIT.

10,000 one-shot buyers leave 10,000 sockets in TIME_WAIT for a minute. The
next crowd should not start among them (ports to reuse, a busier connection
table), so the benchmark waits for them to drain, with a deadline.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

SOCKSTAT = (Path("/proc/net/sockstat"), Path("/proc/net/sockstat6"))
_TCP_TIMEWAIT = re.compile(r"^TCP6?:.*\btw (\d+)", re.MULTILINE)


def timewait_in(text: str) -> int:
    """TIME_WAIT sockets in a /proc/net/sockstat text (0 when it has no TCP line)."""
    return sum(int(n) for n in _TCP_TIMEWAIT.findall(text))


def timewait() -> int | None:
    """TIME_WAIT sockets now, IPv4 and IPv6 together; None where /proc/net/sockstat does not exist."""
    texts = [path.read_text() for path in SOCKSTAT if path.exists()]
    return sum(timewait_in(text) for text in texts) if texts else None


@dataclass(frozen=True)
class Drain:
    waited_s: float
    timewait: int | None  # when the wait ended
    drained: bool  # False: the deadline came first


def drain_timewait(below: int, deadline_s: float, interval_s: float = 1.0) -> Drain:
    """Wait until fewer than ``below`` sockets are in TIME_WAIT, or ``deadline_s`` passed."""
    started = time.monotonic()
    while True:
        count = timewait()
        waited = time.monotonic() - started
        if count is None or count < below:
            return Drain(waited, count, True)
        if waited >= deadline_s:
            return Drain(waited, count, False)
        time.sleep(interval_s)
