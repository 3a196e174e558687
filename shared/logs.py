"""Logging: one JSON object a line on stdout (the shape Knative's and Cloud
Logging's collectors parse), or plain text for a person at a terminal.

Records go through a queue to a writer thread, so a slow stdout never holds
up a request. Under gevent that thread, its queue and its lock are the real
operating-system ones, not the monkey-patched greenlet versions: a greenlet
writing to a full pipe would stop every request in the worker.
"""

from __future__ import annotations

import _thread
import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_listener: _Writer | None = None
_pid = 0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        line = f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        return f"{line} {extras}".rstrip()


def _os_primitives() -> tuple[Any, Any, Any, Any]:
    """start_new_thread, allocate_lock, RLock and SimpleQueue as the operating system has them, gevent or not.

    From ``_thread``, not ``threading``: under gevent even the original
    ``threading.Thread`` starts a greenlet, because it calls the patched
    ``_thread.start_new_thread``.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        original = monkey.get_original
        return (
            original("_thread", "start_new_thread"),
            original("_thread", "allocate_lock"),
            original("_thread", "RLock"),
            original("queue", "SimpleQueue"),
        )
    return _thread.start_new_thread, _thread.allocate_lock, _thread.RLock, queue.SimpleQueue


class _Writer:
    """Drains the queue into the handler on an operating-system thread."""

    def __init__(self, handler: logging.Handler) -> None:
        self._start_thread, allocate_lock, rlock, simple_queue = _os_primitives()
        handler.lock = rlock()  # taken by the writer thread only, and at exit
        self.handler = handler
        self.records: queue.SimpleQueue[logging.LogRecord | None] = simple_queue()
        self._done = allocate_lock()

    def start(self) -> None:
        self._done.acquire()
        self._start_thread(self._drain, ())

    def stop(self) -> None:
        """Write what is queued, then end (at exit)."""
        self.records.put(None)
        if self._done.acquire(timeout=5):
            self._done.release()

    def _drain(self) -> None:
        try:
            while (record := self.records.get()) is not None:
                try:
                    self.handler.handle(record)
                except Exception:  # a record that cannot be written must not stop the writer
                    self.handler.handleError(record)
        finally:
            self._done.release()


def configure(settings: Settings) -> None:
    """Idempotent: the first call in each process wins (a forked worker starts its own writer)."""
    global _listener, _pid
    if _listener is not None and _pid == os.getpid():
        return
    _pid = os.getpid()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    _listener = _Writer(handler)
    _listener.start()
    atexit.register(_listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(_listener.records)]
    root.setLevel(settings.log_level.upper())
