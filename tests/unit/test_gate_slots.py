"""An order worker's gate slots are gevent's own semaphore under gevent, and bound presses to GATE_SLOTS either way.

Monkey-patching does not replace ``threading.BoundedSemaphore``: it stays pure
Python, a Condition with a new lock per waiter, about 20 times the CPU of
gevent's per acquire and release. A crowd's every press before the sold-out
memo arms queues on these slots.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import cast

from shared import ordering

ROOT = Path(__file__).resolve().parents[2]


def test_outside_gevent_the_slots_are_threading_s_and_hold_gate_slots_presses() -> None:
    slots = ordering._bounded_semaphore(ordering.GATE_SLOTS)
    held = [slots.__enter__() for _ in range(ordering.GATE_SLOTS)]
    assert all(held)
    assert not cast(threading.BoundedSemaphore, slots).acquire(blocking=False)  # the next press waits
    slots.__exit__(None, None, None)


def test_in_a_gevent_worker_the_slots_are_gevent_s_and_as_bounded() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey
        monkey.patch_all()
        import gevent, gevent.lock
        from shared import ordering
        slots = ordering._bounded_semaphore(ordering.GATE_SLOTS)
        assert isinstance(slots, gevent.lock.BoundedSemaphore), type(slots)
        inside = most = 0
        def press():
            global inside, most
            with slots:
                inside += 1
                most = max(most, inside)
                gevent.sleep(0.001)
                inside -= 1
        gevent.joinall([gevent.spawn(press) for _ in range(500)])
        assert most == ordering.GATE_SLOTS, most
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
