"""Serve one function under gunicorn, as its container does: ``python -m shared.serving [FUNCTION]``.

Worker choices, per function:
- auth burns CPU in bcrypt (which releases the GIL): gevent, one worker per
  CPU, each hashing in a pool of THREADS native threads (default 1; see
  shared/blocking.py). A pod hashes at most as many passwords as it has CPUs,
  further logins wait for a free hashing thread instead of slowing all of them,
  and a slow client's half-sent request costs a greenlet, not a hashing slot
  (with gthread, two trickling clients stalled a two-worker pod's logins).
- stock and order wait on Redis and the database: gevent, one worker per CPU,
  10,000 connections each, so a burst of buyers queues inside the worker (where
  the gate answers most of them in microseconds) rather than in the kernel's
  accept queue. Measured on an empty function with 10,000 connections at once:
  gevent with 10,000 worker connections had p99 1.8 s, with the default 1,000
  6.3 s, gthread 2x32 5.6 s.
- events is light: gthread, one worker, four threads.

Metrics: the workers of one function share a fresh ``PROMETHEUS_MULTIPROC_DIR``
(made here, emptied at start), so ``/metrics`` answers the group's totals. This
module is also gunicorn's config module (``-c python:shared.serving``) for the
hooks below; gunicorn takes every module-level name that is one of its settings,
so only the hooks may carry such names (a test checks).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"auth": "auth", "stock": "stock", "order": "order", "events": "order_placed"}
# gunicorn's own worker classes, but gevent's is ours: connections taken in bursts, a late request read (shared/gevent_worker.py)
GUNICORN_WORKER_CLASSES = {"gevent": "shared.gevent_worker.Worker", "gthread": "gthread"}


@dataclass(frozen=True)
class WorkerPlan:
    worker_class: str
    workers: int
    threads: int
    worker_connections: int


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_plan(function: str, settings: Settings) -> WorkerPlan:
    workers = settings.workers or cpus()
    if function in {"stock", "order"}:
        return WorkerPlan("gevent", workers, 1, settings.worker_connections)
    if function == "events":
        return WorkerPlan("gthread", settings.workers or 1, settings.threads or 4, 0)
    # auth: one worker whose THREADS hashing threads run bcrypt (which releases the GIL) side by side.
    # Two single-thread workers measured half the logins a second with two logins in flight: the kernel
    # handed both connections to one worker while the other idled (python -m bench.auth_layout).
    return WorkerPlan("gevent", settings.workers or 1, settings.threads or cpus(), settings.worker_connections)


def gunicorn_argv(function: str, settings: Settings, *, host: str = "0.0.0.0", port: int | None = None) -> list[str]:
    if function not in TARGETS:
        raise SystemExit(f"FUNCTION must be one of {', '.join(TARGETS)}; got {function!r}")
    plan = worker_plan(function, settings)
    source = ROOT / "functions" / function / "main.py"
    app = f'functions_framework:create_app(target="{TARGETS[function]}", source="{source}")'
    argv = [
        "gunicorn",
        "--bind", f"{host}:{port or settings.port}",
        "--worker-class", GUNICORN_WORKER_CLASSES[plan.worker_class],
        "--workers", str(plan.workers),
        "--backlog", "4096",
        "--timeout", "30",
        "--graceful-timeout", "10",
        "--keep-alive", "5",
        "--name", f"flashsale-{function}",
        "--chdir", str(ROOT),
        "--config", "python:shared.serving",
        # gunicorn 27 opens a control socket at $HOME/.gunicorn/gunicorn.ctl in every master: one
        # path for every function on a machine, the last to start taking it. Nothing here uses it.
        "--no-control-socket",
    ]  # fmt: skip
    if plan.worker_class == "gevent":
        argv += ["--worker-connections", str(plan.worker_connections)]
    else:
        argv += ["--threads", str(plan.threads)]
    if settings.access_log:
        argv += ["--access-logfile", "-"]
    return [*argv, app]


METRICS_DIR_PREFIX = "flashsale-metrics-"


def metrics_dir(function: str, settings: Settings) -> Path:
    """An empty directory for the process group's metric files: counts from an earlier run must not add up."""
    if not settings.prometheus_multiproc_dir:
        return Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{function}-"))
    directory = Path(settings.prometheus_multiproc_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


# gunicorn server hooks (this module is its config module) -----------------
def post_worker_init(worker: Any) -> None:
    """In each worker, after gevent's patching and before the first request.

    Logging from the start: a worker that so far answered only probes has no
    Context yet, yet logs each request. gunicorn's own refusals of malformed
    requests in problem+json (shared/server_refusals.py). Tracing, if the settings turn it on.
    Every request body within BODY_TIMEOUT_SECONDS or 408 (shared/bodytimeout.py,
    outermost, so before the order shortcuts read a body too). The healing loop
    in stock and events workers (shared/healing.py). The Redis pool of the
    functions a crowd presses opened now, not in the crowd's first second
    (shared/redisconn.py ``RedisConn.warm``).
    """
    from shared import bodytimeout, healing, logs, server_refusals, tracing
    from shared.context import context
    from shared.redisconn import MAX_CONNECTIONS

    settings = get_settings()
    logs.configure(settings)
    server_refusals.install()
    function = worker.cfg.proc_name.removeprefix("flashsale-")
    tracing.configure(settings, function, app=worker.wsgi)
    worker.wsgi = bodytimeout.guard(worker.wsgi, settings, function)
    healing.start(function, settings)
    # order's whole pool: every press reaches the gate until the sold-out memo
    # arms; a few for stock's cache misses.
    warm = {"order": MAX_CONNECTIONS, "stock": 8}.get(function)
    if warm:
        context().redis.warm(warm)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges stop counting; its counters stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """The group stops: remove the metrics directory if it is one this module made."""
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))
    if directory.name.startswith(METRICS_DIR_PREFIX) and directory.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    settings = get_settings()
    function = sys.argv[1] if len(sys.argv) > 1 else settings.function
    argv = gunicorn_argv(function, settings, host=settings.bind_host)
    # Set before gunicorn starts, so every worker's prometheus_client sees it at import.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(function, settings))
    executable = shutil.which("gunicorn", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if executable is None:
        raise SystemExit("gunicorn is not installed")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.execv(executable, argv)


if __name__ == "__main__":
    main()
