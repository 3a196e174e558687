"""gunicorn process groups for apps that are not one of the functions: the
baseline and the monolith.

Each is served exactly as the real function it stands in for. The argv is
shared.serving's own for that function, with only the app and the process name
swapped, so a change to how the functions are served changes the baseline too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ops.devstack import ROOT, free_port, http_ok, stop_group, wait_until
from shared.serving import gunicorn_argv, worker_plan
from shared.settings import Settings

BENCH = Path(__file__).resolve().parent
BASELINE = BENCH / "baseline" / "main.py"
MONOLITH = BENCH / "monolith" / "main.py"
APP_PREFIX = "functions_framework:create_app("


def cpu_count(cpu_list: str) -> int:
    """How many CPUs a taskset list names: "0" -> 1, "0,1" -> 2, "0-3" -> 4."""
    count = 0
    for part in cpu_list.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def served_like(like: str, settings: Settings, *, source: Path, target: str, name: str, port: int) -> list[str]:
    """gunicorn argv that serves ``target`` in ``source`` exactly as shared.serving serves the function ``like``."""
    argv = gunicorn_argv(like, settings, host="127.0.0.1", port=port)
    if not argv[-1].startswith(APP_PREFIX) or "--name" not in argv:
        raise RuntimeError(f"shared.serving.gunicorn_argv changed shape; bench/servers.py needs updating: {argv}")
    argv[argv.index("--name") + 1] = f"flashsale-{name}"
    argv[-1] = f'{APP_PREFIX}target="{target}", source="{source}")'
    return argv


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers of a master process (its children)."""
    children = Path(f"/proc/{master}/task/{master}/children")
    try:
        return [int(pid) for pid in children.read_text().split()]
    except OSError:
        return []


@dataclass
class AppServer:
    """One gunicorn process group, in its own session, optionally pinned with taskset."""

    name: str
    like: str  # the function whose serving it copies: auth, stock or order
    source: Path
    target: str
    env: Mapping[str, str] = field(default_factory=dict)
    cpus: str | None = None
    log_dir: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    metrics_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Settings:
        env = dict(self.env)
        if self.cpus and not env.get("WORKERS"):
            # shared.serving counts the CPUs of the process it runs in; this one is pinned, the caller is not.
            env["WORKERS"] = str(cpu_count(self.cpus))
        return Settings.from_env(env)

    @property
    def workers(self) -> int:
        return worker_plan(self.like, self.settings).workers

    def argv(self) -> list[str]:
        argv = served_like(self.like, self.settings, source=self.source, target=self.target, name=self.name, port=self.port)
        argv[0] = str(Path(sys.executable).parent / "gunicorn")
        return ["taskset", "-c", self.cpus, *argv] if self.cpus else argv

    def start(self, timeout: float = 60) -> AppServer:
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        # The functions' metrics need a directory per process group, as shared.serving gives them.
        self.metrics_dir = Path(tempfile.mkdtemp(prefix=f"flashsale-bench-{self.name}-"))
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{self.name}.log").open("ab") if self.log_dir else open(os.devnull, "wb") as log:
            # The child holds its own copy of the log file; ours closes here.
            self.process = subprocess.Popen(self.argv(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._ready, timeout, f"{self.name} on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
        return http_ok(self.url + "/readyz")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process)
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    @property
    def master_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def baseline(like: str, env: Mapping[str, str], *, cpus: str | None = None, log_dir: Path | None = None) -> AppServer:
    """The empty function, served as ``like`` is."""
    return AppServer(f"baseline-{like}", like, BASELINE, "baseline", env, cpus, log_dir)


def monolith(env: Mapping[str, str], *, cpus: str | None = None, log_dir: Path | None = None) -> AppServer:
    """auth, stock and order in one app, served as order is (gevent): one process group for everything."""
    return AppServer("monolith", "order", MONOLITH, "monolith", env, cpus, log_dir)
