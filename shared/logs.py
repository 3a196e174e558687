"""Logging: one JSON object a line on stdout (the shape Knative's and Cloud
Logging's collectors parse), or plain text for a person at a terminal.

A line is formatted where it is logged and handed to a writer thread, which
writes every line waiting in one ``write`` about twenty times a second: a
request pays for formatting its line and one ``deque.append``, never for a
system call, a lock or waking another thread. A slow stdout never holds up
a request. Under gevent that thread and its lock are the real
operating-system ones, not the monkey-patched greenlet versions: a greenlet
writing to a full pipe would stop every request in the worker.

The access line of each answer (shared/http.py) skips the ``logging``
module's record and goes straight to :func:`line`, in the same format.

What is lost: a process killed with SIGKILL loses the lines of its last
flush interval (at most :data:`FLUSH_SECONDS`); a normal exit writes them.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from shared.blocking import Ticker
from shared.settings import Settings

FLUSH_SECONDS = 0.05  # lines reach stdout within this; one write each time, however many lines

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_writer: _Writer | None = None
_format: Callable[[float, str, str, str, dict[str, Any]], str] | None = None
_pid = 0


def json_line(created: float, severity: str, message: str, logger: str, fields: dict[str, Any]) -> str:
    entry: dict[str, Any] = {
        "time": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
        "severity": severity,
        "message": message,
        "logger": logger,
    }
    entry.update(fields)
    return json.dumps(entry, default=str)


def text_line(created: float, severity: str, message: str, logger: str, fields: dict[str, Any]) -> str:
    extras = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{datetime.fromtimestamp(created).strftime('%H:%M:%S')} {severity:<7} {message} {extras}".rstrip()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a caller passed as ``extra``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname, record.getMessage(), record.name, fields)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = text_line(record.created, record.levelname, record.getMessage(), record.name, _fields(record))
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


class _Writer:
    """Writes the lines waiting, all in one write, every FLUSH_SECONDS, on an operating-system thread."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque()  # append and popleft are atomic: no lock to take
        self._ticker = Ticker(self._flush, FLUSH_SECONDS)

    def start(self) -> None:
        """Write every FLUSH_SECONDS; what is waiting at exit is written then."""
        self._ticker.start()

    def stop(self) -> None:
        """Write what is waiting, then end."""
        self._ticker.stop()

    def _flush(self) -> None:
        batch: list[str] = []
        popleft = self.lines.popleft
        try:
            while True:
                batch.append(popleft())
        except IndexError:
            pass
        if not batch:
            return
        try:
            self.stream.write("".join(batch))
            self.stream.flush()
        except Exception:  # lines that cannot be written must not stop the writer
            try:
                os.write(2, f"flashsale: {len(batch)} log lines could not be written to stdout\n".encode())
            except OSError:
                pass


class _LineHandler(logging.Handler):
    """Formats a record in the caller's thread and hands the line to the writer."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self.writer = writer

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: formatting touches only the record, and the writer's deque is thread-safe.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.lines.append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def line(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """One INFO line for ``logger`` with ``fields``, as ``logger.info(message, extra=fields)`` would write it,
    without the logging module's record, handler and formatter in between (the access line, once per answer).
    The caller checks ``logger.isEnabledFor(logging.INFO)``."""
    writer, format_line = _writer, _format
    if writer is None or format_line is None:  # logging not configured here: the logging module decides
        logger.info(message, extra=fields)
        return
    writer.lines.append(format_line(time.time(), "INFO", message, logger.name, fields) + "\n")


def configure(settings: Settings) -> None:
    """Idempotent: the first call in each process wins (a forked worker starts its own writer)."""
    global _writer, _format, _pid
    if _writer is not None and _pid == os.getpid():
        return
    _pid = os.getpid()
    json_format = settings.log_format == "json"
    writer = _Writer(sys.stdout)
    handler = _LineHandler(writer)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    writer.start()
    _writer, _format = writer, (json_line if json_format else text_line)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
