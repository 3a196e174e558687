"""Where a crowd's CPU went: each group is counted from its own processes, and only inside the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bench.cpu import CpuUse, children, machine_busy_seconds, metered, redis_pids
from bench.measure import Measure
from bench.results import CrowdRound
from ops.devstack import RedisServer

TICKS = os.sysconf("SC_CLK_TCK")
# Arithmetic between clock reads: reading the process clock is a system call, and the spin should be user time.
SPIN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end:\n    sum(range(20000))\n"

# A stand-in for a gunicorn master: it forks a worker that waits for SIGUSR1,
# spins, writes the file named in argv[1], then idles until killed.
MASTER = f"""
import os, signal, sys, time
def work(*_):
    exec({SPIN.format(seconds=0.6)!r})
    open(sys.argv[1], "w").close()
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGUSR1, work)
    while True:
        time.sleep(0.05)
time.sleep(120)
"""


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, "the worker never finished its spin"
        time.sleep(0.02)


@pytest.fixture
def spun(tmp_path: Path) -> Path:
    return tmp_path / "spun"


@pytest.fixture
def master(spun: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", MASTER, str(spun)], start_new_session=True)
    deadline = time.monotonic() + 10
    while not children(process.pid):
        assert time.monotonic() < deadline, "the stand-in master never forked its worker"
        time.sleep(0.02)
    yield process
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_the_machines_busy_time_leaves_idle_and_iowait_out() -> None:
    # user nice system idle iowait irq softirq steal, in clock ticks
    stat = f"cpu  {3 * TICKS} {1 * TICKS} {2 * TICKS} {100 * TICKS} {50 * TICKS} 0 {1 * TICKS} 0 0 0\ncpu0 0 0 0 0\n"
    assert machine_busy_seconds(stat) == pytest.approx(7.0)


def test_a_workers_cpu_counts_for_its_master_and_a_reaped_child_for_k6(master: subprocess.Popen[bytes], spun: Path) -> None:
    (worker,) = children(master.pid)
    with metered(master.pid, None) as use:
        os.kill(worker, signal.SIGUSR1)
        subprocess.run([sys.executable, "-c", SPIN.format(seconds=0.4)], check=True)  # k6's place: a child run to its end
        wait_for(spun)
    assert use.workers_s >= 0.5, use
    assert 0 <= use.workers_kernel_s < use.workers_s / 2, use  # a spin is user time
    assert 0.35 <= use.k6_s < 0.6 + 0.4, use  # the reaped child's CPU, not the worker's
    assert use.machine_s >= use.workers_s + use.k6_s - 0.1  # the whole machine was at least that busy


def test_cpu_spent_before_the_run_is_not_counted(master: subprocess.Popen[bytes], spun: Path) -> None:
    (worker,) = children(master.pid)
    os.kill(worker, signal.SIGUSR1)
    wait_for(spun)
    with metered(master.pid, None) as use:
        time.sleep(0.3)
    assert use.workers_s < 0.1, use


def test_redis_server_is_found_by_its_port(redis_server: RedisServer) -> None:
    port = urlparse(redis_server.url).port
    assert port is not None
    assert redis_server.process is not None and redis_server.process.pid in redis_pids(port)
    assert redis_pids(port + 1) == [] or redis_server.process.pid not in redis_pids(port + 1)


def test_a_crowd_round_keeps_its_cpu_through_json_and_divides_by_answers() -> None:
    use = CpuUse(wall_s=10.0, workers_s=4.0, k6_s=2.0, redis_s=0.5, machine_s=9.0)
    found = CrowdRound(Measure("b", answered=2000), Measure("f", answered=1000), {"baseline": use, "flashsale": use}, 1)
    again = CrowdRound.from_json(found.to_json())
    assert again.cpu == found.cpu
    assert again.cpu_per_answer_ms("baseline") == pytest.approx(2.0)
    assert again.cpu_per_answer_ms("flashsale") == pytest.approx(4.0)
    assert use.rest_s == pytest.approx(2.5)


def test_a_processs_memory_is_read_as_its_proportional_share() -> None:
    from bench.auth_layout import pss_mib

    assert 5 < pss_mib(os.getpid()) < 4096  # this interpreter with pytest loaded: some MiB, not none, not the machine


def test_a_workers_other_threads_are_counted_apart_from_its_main_thread() -> None:
    """The log writer's CPU, not its waits: a thread that spins counts, the main thread's sleep does not."""
    from bench.cpu import thread_seconds

    code = f"import threading, time\nthreading.Thread(target=lambda: exec({SPIN.format(seconds=0.5)!r})).start()\ntime.sleep(30)\n"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while thread_seconds(process.pid) < 0.4:
            assert time.monotonic() < deadline, "the spinning thread's CPU was not counted"
            time.sleep(0.05)
        main = (Path("/proc") / str(process.pid) / "task" / str(process.pid) / "stat").read_text().rsplit(")", 1)[1].split()
        assert (int(main[11]) + int(main[12])) / TICKS < 0.3  # the main thread only slept
    finally:
        process.kill()
        process.wait()
    assert thread_seconds(process.pid) == 0.0  # gone: nothing, not an error
