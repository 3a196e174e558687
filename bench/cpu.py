"""Where a run's CPU went: the serving workers, k6, redis-server and everything else.

On two cores the crowd's client, the function and Redis share the machine: a
run that took longer may have spent its time in the function's workers or in
anything beside them. :func:`metered` reads the CPU time each group used over
one run, so the report can say, per answer, what the workers cost and what
the rest of the machine took.

Sources: ``/proc/<pid>/stat`` (utime + stime) for the gunicorn master and its
workers and for redis-server, ``getrusage(RUSAGE_CHILDREN)`` for k6 (a child
of this process, reaped when the run ends), and ``/proc/stat`` for the whole
machine's busy time.
"""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass
class CpuUse:
    """CPU seconds each group used during one run, and the run's wall time."""

    wall_s: float = 0.0
    workers_s: float = 0.0  # the gunicorn group serving the load (master and workers)
    workers_kernel_s: float = 0.0  # of which in the kernel: system calls, the loopback network stack, fsync
    workers_threads_s: float = 0.0  # of which on the workers' other threads: the log writer, the database thread
    k6_s: float = 0.0
    redis_s: float = 0.0
    machine_s: float = 0.0  # every CPU's busy time (user, nice, system, irq, softirq, steal)
    redis_scripts: int | None = None  # Lua scripts redis-server ran meanwhile: the presses that reached the gate

    @property
    def rest_s(self) -> float:
        """Busy time that was none of the three: other servers, the kernel's work for no one in particular, other tenants."""
        return max(0.0, self.machine_s - self.workers_s - self.k6_s - self.redis_s)

    def per(self, count: int, seconds: float) -> float | None:
        """Milliseconds of ``seconds`` per one of ``count`` (answers, requests)."""
        return round(seconds * 1000 / count, 3) if count else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CpuUse:
        return cls(**data)


def process_seconds(pid: int) -> tuple[float, float]:
    """(utime + stime, stime) of ``pid``: all its CPU and the kernel's share of it ((0, 0) once it is gone)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    # After the command's closing parenthesis: field 3 (state) is fields[0], so utime (14) and stime (15) are [11] and [12].
    user, kernel = int(fields[11]) / TICKS, int(fields[12]) / TICKS
    return user + kernel, kernel


def thread_seconds(pid: int) -> float:
    """CPU seconds of ``pid``'s threads other than its main one (0 once it is gone)."""
    total = 0.0
    try:
        tasks = [task for task in (PROC / str(pid) / "task").iterdir() if task.name != str(pid)]
    except OSError:
        return 0.0
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in (PROC / str(pid) / "task" / str(pid) / "children").read_text().split()]
    except OSError:
        return []


def machine_busy_seconds(stat: str | None = None) -> float:
    """Busy seconds of every CPU since boot, from the ``cpu`` line of /proc/stat (idle and iowait left out)."""
    text = stat if stat is not None else (PROC / "stat").read_text()
    values = [int(v) for v in text.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS


def redis_pids(port: int) -> list[int]:
    """redis-server processes listening on ``port`` (by their command line)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # redis-server retitles itself "redis-server 127.0.0.1:<port>"; before that its argv says "--port <port>".
        if "redis-server" in command and re.search(rf"(:|--port ){port}\b", command):
            found.append(int(entry.name))
    return found


@dataclass
class _Snapshot:
    at: float
    groups: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> (seconds, of which in the kernel)
    threads: dict[int, float] = field(default_factory=dict)  # pid -> seconds on threads other than the main one
    k6: float = 0.0
    machine: float = 0.0


def _snapshot(pids: list[int]) -> _Snapshot:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _Snapshot(
        time.monotonic(),
        {pid: process_seconds(pid) for pid in pids},
        {pid: thread_seconds(pid) for pid in pids},
        usage.ru_utime + usage.ru_stime,
        machine_busy_seconds(),
    )


@contextmanager
def metered(master: int | None, redis_port: int | None) -> Iterator[CpuUse]:
    """The CPU each group used inside the ``with`` block, filled in when it ends.

    ``master``: the gunicorn master serving the load (its workers are its
    children). k6 must be run inside the block as a child of this process.
    """
    workers = [master, *children(master)] if master else []
    redis = redis_pids(redis_port) if redis_port else []
    use = CpuUse()
    before = _snapshot(workers + redis)
    yield use
    after = _snapshot(workers + redis)

    def spent(pids: list[int], kernel: bool = False) -> float:
        # A process that ended inside the block reads 0 after: count what it had before as nothing more.
        part = 1 if kernel else 0
        return sum(max(0.0, after.groups.get(pid, (0.0, 0.0))[part] - before.groups.get(pid, (0.0, 0.0))[part]) for pid in pids)

    use.wall_s = round(after.at - before.at, 3)
    use.workers_s = round(spent(workers), 3)
    use.workers_kernel_s = round(spent(workers, kernel=True), 3)
    use.workers_threads_s = round(sum(max(0.0, after.threads.get(pid, 0.0) - before.threads.get(pid, 0.0)) for pid in workers), 3)
    use.redis_s = round(spent(redis), 3)
    use.k6_s = round(after.k6 - before.k6, 3)
    use.machine_s = round(after.machine - before.machine, 3)
