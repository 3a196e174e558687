"""prometheus_client's multiprocess values, counted in memory and written to their files in batches.

Under gunicorn each worker keeps its values in a memory-mapped file that
``/metrics`` adds up (:mod:`shared.metrics`). prometheus_client writes that
file at every count, under a lock and after a ``getpid`` call; a loser's press
counts four values (the request, the latency's sum and bucket, the order
outcome), and under gevent that cost about 70 µs of a worker's CPU per answer,
a sixth of the answer (docs/performance.md, "Night of 27 November").

:class:`BatchedValue` takes their place: a count adds to a number in memory,
and a native thread writes the values that changed to the same files, in the
same format, every ``METRICS_FLUSH_SECONDS``. Every answer is still counted,
and counts stay exact:

* the worker answering a scrape writes its own counts first, so one worker's
  totals are exact at once, and the group's at most one interval late;
* a worker that exits (a restart, a scale-down, gunicorn's timeout) writes
  them at exit;
* a worker killed outright (SIGKILL, the kernel's OOM killer) loses at most
  its last interval's counts, as any Prometheus client loses its counts when
  its process dies; the totals carry on from what was written.

Counters and histograms are batched, each worker's in a file of its own
(``counter_batched_<pid>.db``; the collector reads every ``*.db`` by its first
word). Gauges are set rarely, and their files carry the worker's pid for
``mark_process_dead``: prometheus_client keeps them as before.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from shared.blocking import Ticker, os_primitives
from shared.settings import get_settings

BATCHED_TYPES = frozenset({"counter", "histogram", "summary"})


class _Process:
    """This process's files, values and writer thread; made again in a forked child."""

    def __init__(self) -> None:
        _, allocate_lock = os_primitives()
        self.pid = os.getpid()
        self.lock = allocate_lock()  # a native lock: uncontended it costs a fraction of a microsecond, gevent or not
        self.files: dict[str, MmapedDict] = {}
        self.values: list[BatchedValue] = []
        self.writer: Ticker | None = None

    def file(self, prefix: str) -> MmapedDict:
        found = self.files.get(prefix)
        if found is None:
            directory = get_settings().prometheus_multiproc_dir
            found = self.files[prefix] = MmapedDict(os.path.join(directory, f"{prefix}_batched_{self.pid}.db"))  # type: ignore[no-untyped-call]
        return found


_process = _Process()


class BatchedValue:
    """One value of a counter or histogram (a count, a sum, a bucket), as prometheus_client's values are used."""

    _multiprocess = True

    def __init__(self, typ: str, metric_name: str, name: str, labelnames: Any, labelvalues: Any, help_text: str) -> None:
        self._prefix = typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        with _process.lock:
            self._attach()
            _process.values.append(self)
        start_writer()

    def _attach(self) -> None:
        """Read the value from this process's file (a new key, or a new process, starts at zero)."""
        self._file = _process.file(self._prefix)
        self._value, self._timestamp = self._file.read_value(self._key)  # type: ignore[no-untyped-call]
        self._written = self._value

    def inc(self, amount: float) -> None:
        with _process.lock:
            self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _process.lock:  # a counter's reset()
            self._value = value
            self._timestamp = timestamp or 0.0

    def _write(self) -> None:
        self._file.write_value(self._key, self._value, self._timestamp)  # type: ignore[no-untyped-call]
        self._written = self._value

    def get(self) -> float:
        return float(self._value)

    def set_exemplar(self, _exemplar: Any) -> None:
        return  # prometheus_client keeps no exemplars in multiprocess mode either

    def get_exemplar(self) -> None:
        return None


def flush() -> None:
    """Write every value of this process that changed since it was last written."""
    with _process.lock:
        for value in _process.values:
            if value._value != value._written:
                value._write()


def start_writer() -> None:
    """The native thread that flushes every METRICS_FLUSH_SECONDS, and at exit (once per process; a fork starts its own)."""
    process = _process
    if process.writer is None:
        process.writer = Ticker(flush, get_settings().metrics_flush_seconds)
        process.writer.start()


def _after_fork() -> None:
    """A forked child writes its own file from zero, as prometheus_client's values do; the parent's stay the parent's."""
    global _process
    parent, _process = _process, _Process()
    for value in parent.values:
        value._attach()
        _process.values.append(value)
    if parent.writer is not None:
        start_writer()


def install() -> bool:
    """Batch the counters' and histograms' values when prometheus_client keeps them in files (``PROMETHEUS_MULTIPROC_DIR``).

    Call before the metrics are made: prometheus_client takes ``values.ValueClass``
    when a value is made. Without the directory (tests, one process) the
    values live in the process and a scrape reads them directly: nothing to
    batch, and False.
    """
    global _installed
    if values.ValueClass is values.MutexValue:  # prometheus_client saw no PROMETHEUS_MULTIPROC_DIR at import
        return False
    if not _installed:
        original = values.ValueClass

        def value(typ: str, metric_name: str, name: str, labelnames: Any, labelvalues: Any, help_text: str, **kwargs: Any) -> Any:
            if typ in BATCHED_TYPES:
                return BatchedValue(typ, metric_name, name, labelnames, labelvalues, help_text)
            return original(typ, metric_name, name, labelnames, labelvalues, help_text, **kwargs)

        values.ValueClass = value
        os.register_at_fork(after_in_child=_after_fork)
        _installed = True
    return True


def installed() -> bool:
    return _installed


_installed = False
