"""Run CPU-bound calls off a gevent worker's event loop.

bcrypt holds the CPU for a quarter of a second and releases the GIL while it
does. Run inline in a gevent worker it would freeze every other connection of
that worker, slow clients' half-sent requests included; run in a small pool of
native threads it leaves the loop free to accept, read and answer, while the
pool's size caps how many hashes run at once.
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_pools: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def gevent_active() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("socket"))


def os_primitives() -> tuple[Any, Any]:
    """start_new_thread and allocate_lock as the operating system has them, gevent or not.

    From ``_thread``, not ``threading``: under gevent even the original
    ``threading.Thread`` starts a greenlet, because it calls the patched
    ``_thread.start_new_thread``.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        original = monkey.get_original
        return original("_thread", "start_new_thread"), original("_thread", "allocate_lock")
    return _thread.start_new_thread, _thread.allocate_lock


class Ticker:
    """``work()`` every ``seconds`` on an operating-system thread, and a last time when stopped (at exit).

    Native, not a greenlet: its timed wait never needs a gevent worker's
    loop, and the loop never waits for it. Only the process that started it
    stops it: a forked child inherits the exit handler, not the thread.
    """

    def __init__(self, work: Callable[[], None], seconds: float) -> None:
        self._start_thread, allocate_lock = os_primitives()
        self.work = work
        self.seconds = seconds  # read at every wait
        self._stop = allocate_lock()  # held while running; released to stop, which also ends the current wait
        self._done = allocate_lock()
        self._pid: int | None = None

    def start(self) -> None:
        self._pid = os.getpid()
        self._stop.acquire()
        self._done.acquire()
        self._start_thread(self._run, ())
        atexit.register(self.stop)

    def stop(self) -> None:
        """Run the work a last time and end, waiting up to 5 s for it."""
        if self._pid == os.getpid() and self._stop.locked():
            self._stop.release()
            if self._done.acquire(timeout=5):
                self._done.release()

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                stopping = self._stop.acquire(timeout=self.seconds)
                self.work()
        finally:
            self._done.release()


def run_blocking(work: Callable[[], T], *, pool_name: str, size: int = 1) -> T:
    """``work()`` in the native thread pool ``pool_name`` (``size`` threads) when under gevent; inline otherwise."""
    if not gevent_active():
        return work()
    key = (os.getpid(), pool_name)
    pool = _pools.get(key)
    if pool is None:
        from gevent.threadpool import ThreadPool

        with _lock:
            pool = _pools.setdefault(key, ThreadPool(maxsize=size))
    outcome: tuple[bool, Any] = pool.apply(_captured, (work,))
    succeeded, value = outcome
    if not succeeded:
        # Raised here, in the caller's greenlet, with its traceback: an expected
        # refusal (sold out, email taken) is not printed by gevent as a crash.
        raise value
    result: T = value
    return result


def _captured(work: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, work()
    except Exception as exc:
        return False, exc
