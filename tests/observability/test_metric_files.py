"""shared.metric_files: counts kept in memory and written to the multiprocess files in batches, none lost.

Each case runs in a fresh interpreter with PROMETHEUS_MULTIPROC_DIR set, as a
gunicorn worker starts: the batched values must be installed before the first
metric is made, which this test process did long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run(directory: Path, script: str, **settings: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT), **settings}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def totals(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a scrape of the process group reads from the files: (sample name, labels) -> value."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in registry.collect() for sample in family.samples}


def requests_409(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    key = ("flashsale_http_requests_total", (("function", "order"), ("route", "/orders"), ("status", "409")))
    return found.get(key, 0.0)


PRESSES = """
    from shared import metrics, metric_files
    observe = metrics.http_observer("order")
    def press(n, elapsed=0.0004):
        for _ in range(n):
            observe("POST", "/orders", 409, elapsed)
"""


def counted_after(directory: Path, script: str, **settings: str) -> float:
    """Run ``script`` after the presses' setup in a fresh interpreter; the 409s a scrape of the files then reads."""
    run(directory, PRESSES + textwrap.indent(textwrap.dedent(script), "    "), **settings)
    return requests_409(totals(directory))


def test_counts_are_written_in_a_batch_and_exactly(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        PRESSES
        + """
    import json
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    press(1000, 0.0004)
    press(10, 0.3)
    def read():
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metric_files.os.environ["PROMETHEUS_MULTIPROC_DIR"])
        return {s.name + str(sorted(s.labels.items())): s.value for f in registry.collect() for s in f.samples}
    before = read()
    metric_files.flush()
    print(json.dumps([before, read()]))
    """,
        METRICS_FLUSH_SECONDS="3600",  # only the explicit flush writes
    )
    before, after = json.loads(out)
    count = "flashsale_http_requests_total[('function', 'order'), ('route', '/orders'), ('status', '409')]"
    assert before.get(count, 0.0) == 0.0  # a count is a number in memory until the batch is written
    assert after[count] == 1010
    assert after["flashsale_http_request_duration_seconds_count[('function', 'order'), ('route', '/orders')]"] == 1010
    assert after["flashsale_http_request_duration_seconds_sum[('function', 'order'), ('route', '/orders')]"] == pytest.approx(3.4)
    buckets = "flashsale_http_request_duration_seconds_bucket[('function', 'order'), ('le', '{}'), ('route', '/orders')]"
    assert after[buckets.format("0.001")] == 1000 and after[buckets.format("0.5")] == 1010


def test_the_writer_thread_writes_within_its_interval(tmp_path: Path) -> None:
    script = """
    import time
    press(500)
    time.sleep(0.5)  # ten intervals
    metric_files._process.files.clear()  # what follows must not be the exit's flush: nothing is left to write
    metric_files._process.values.clear()
    """
    assert counted_after(tmp_path, script, METRICS_FLUSH_SECONDS="0.05") == 500


def test_a_scrape_shows_its_own_workers_counts_at_once(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        PRESSES
        + """
    import os
    press(321)
    page = metrics.exposition(os.environ["PROMETHEUS_MULTIPROC_DIR"]).decode()
    print([line for line in page.splitlines() if line.startswith("flashsale_http_requests_total{")][0])
    """,
        METRICS_FLUSH_SECONDS="3600",
    )
    assert out.strip().endswith(" 321.0")


def test_a_worker_that_exits_leaves_every_count(tmp_path: Path) -> None:
    """No flush called and an interval that never ends: the exit writes them (a restart, a scale-down)."""
    assert counted_after(tmp_path, "press(12345)\n", METRICS_FLUSH_SECONDS="3600") == 12345


def test_a_forked_worker_counts_in_its_own_file_from_zero(tmp_path: Path) -> None:
    """gunicorn forks its workers: a child's counts are its own, the parent's stay the parent's, the sum is exact."""
    script = """
    import os, sys
    press(7)
    pid = os.fork()
    if pid == 0:
        press(5)
        sys.exit(0)
    os.waitpid(pid, 0)
    press(1)
    """
    assert counted_after(tmp_path, script) == 13
    files = sorted(p.name for p in tmp_path.glob("counter_batched_*.db"))
    assert len(files) == 2, files


def test_threads_lose_no_count(tmp_path: Path) -> None:
    """auth serves with threads: concurrent counts on one value must all land."""
    script = """
    import threading, sys
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    threads = [threading.Thread(target=press, args=(5000,)) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    """
    assert counted_after(tmp_path, script) == 40000


def test_gauges_are_written_at_once_in_prometheus_clients_own_files(tmp_path: Path) -> None:
    """A gauge's file carries the pid mark_process_dead looks for; its value is there without a flush."""
    out = run(
        tmp_path,
        """
    import os
    from shared import metrics
    metrics.observe_degraded("redis", True)
    print(os.getpid(), flush=True)
    os._exit(0)  # no exit handlers: only what was written at once
    """,
        METRICS_FLUSH_SECONDS="3600",
    )
    pid = out.strip()
    assert (tmp_path / f"gauge_livemostrecent_{pid}.db").exists()
    found = totals(tmp_path)
    assert found[("flashsale_dependency_degraded", (("dependency", "redis"),))] == 1.0


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="METRICS_FLUSH_SECONDS"):
        Settings.from_env({"METRICS_FLUSH_SECONDS": "0"}).validate()


def test_without_the_directory_nothing_is_batched(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", "from shared import metrics, metric_files; print(metric_files.installed())"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
