"""Knative's data path on 127.0.0.0/8: an ingress gateway, an activator in front
of auth, a queue-proxy per pod, two pods or more per function, one Redis, one
SQLite file.

Every proxy is an HAProxy process in its own process group, stopped by its PID;
every pod is a gunicorn group started by ops.devstack.Stack (one Stack per pod:
``python -m shared.serving <function>`` with WORKERS=1). The baseline's pods are
the empty function bench serves (bench/servers.py). Addresses:

    buyers            127.1.0.0/16 (k6 --local-ips)
    ingress gateway   listens on 127.0.0.10, connects from 127.0.0.2
    activator         listens on 127.0.0.11, connects from 127.0.0.3
    queue-proxy       listens on 127.0.0.1, connects to its pod from 127.0.0.1

so auth reads ``client, 127.0.0.2, 127.0.0.3`` in X-Forwarded-For from
127.0.0.1, as it would on Kourier with ``use-remote-address: true``.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import yaml

from bench.servers import AppServer, baseline
from ops.devstack import RedisServer, Stack, ensure_keys, free_port, stop_groups, wait_until

HERE = Path(__file__).resolve().parent
HAPROXY_DIR = HERE / "haproxy"
INGRESS_ADDRESS, INGRESS_SOURCE = "127.0.0.10", "127.0.0.2"
ACTIVATOR_ADDRESS, ACTIVATOR_SOURCE = "127.0.0.11", "127.0.0.3"
# Envoy's default circuit breakers, per upstream cluster: connections, pending requests (and requests).
ENVOY_MAX_CONNECTIONS = 1024
ENVOY_MAX_PENDING = 1024
PROXY_MAXCONN = 12_000  # connections a proxy holds at once: a crowd of 10,000 and its upstream side


def _revision_settings(function: str) -> tuple[int, int]:
    """containerConcurrency (0: none) and timeoutSeconds of knative/<function>.yaml: the manifests stay the one place they live."""
    with (HERE.parent / "knative" / f"{function}.yaml").open() as manifest:
        spec = yaml.safe_load(manifest)["spec"]["template"]["spec"]
    return int(spec.get("containerConcurrency", 0)), int(spec["timeoutSeconds"])


# The functions' Knative settings; the baseline (the empty function) is served as order is.
_SETTINGS = {function: _revision_settings(function) for function in ("auth", "stock", "order")}
CONTAINER_CONCURRENCY = {**{f: cc for f, (cc, _) in _SETTINGS.items()}, "baseline": _SETTINGS["order"][0]}
TIMEOUT_SECONDS = {**{f: timeout for f, (_, timeout) in _SETTINGS.items()}, "baseline": _SETTINGS["order"][1]}
DRAIN_QUIET_SECONDS = 1.0  # queue-proxy waits 30 s without a request; the rehearsal's pods see no late stragglers
POD_ENV = {"WORKERS": "1", "LOG_LEVEL": "WARNING"}  # two cores: one worker a pod, or eight pods oversubscribe them


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Lift this process's open-file limit (children inherit it): to ``wanted`` where allowed (root), else to the hard limit.

    Returns the connections a proxy may then hold: HAProxy needs two descriptors a
    proxied connection and refuses to start with a maxconn its limit cannot carry.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
        except (ValueError, OSError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, min(PROXY_MAXCONN, (soft - 256) // 2))


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise SystemExit("haproxy is not installed: run `make setup` (apt-get install haproxy)")
    return found


def render(template: str, **values: object) -> str:
    return Template((HAPROXY_DIR / template).read_text()).substitute({k: str(v) for k, v in values.items()})


class Proxy:
    """One HAProxy process in its own process group, with a runtime API socket; stopped by its PID."""

    def __init__(self, name: str, config: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.config_file = workdir / f"{name}.cfg"
        self.config_file.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    def start(self) -> Proxy:
        log = (self.workdir / f"{self.name}.log").open("ab")
        with log:
            # -db: stay in the foreground, so the PID is HAProxy's own and a signal reaches it.
            self.process = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(self._answers, 10, f"haproxy {self.name}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / f"{self.name}.log").read_text(errors="replace")
            raise RuntimeError(f"haproxy {self.name} exited with {self.process.returncode}: {log[-2000:]}")
        return "Name:" in self.command("show info")

    def command(self, line: str) -> str:
        """One runtime API command (`set server be/srv state drain`, `show stat`, ...); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def backend_total(self, backend: str) -> int:
        """Requests a backend has taken since the proxy started."""
        return sum(
            int(row.get("stot") or 0) for row in self._stat_rows() if row.get("pxname") == backend and row.get("svname") == "BACKEND"
        )

    def _stat_rows(self) -> list[dict[str, str]]:
        header, *rows = self.command("show stat").splitlines()
        columns = header.lstrip("# ").split(",")
        return [dict(zip(columns, row.split(","), strict=False)) for row in rows if row]

    def requests_total(self) -> int:
        """Requests the proxy has received since it started (its frontends' req_tot)."""
        return sum(int(row.get("req_tot") or 0) for row in self._stat_rows() if row.get("svname") == "FRONTEND")

    def in_flight(self) -> int:
        """Requests at the proxy's servers or queued for them now; idle pooled connections do not count."""
        return sum(int(row.get("scur") or 0) + int(row.get("qcur") or 0) for row in self._stat_rows() if row.get("svname") == "BACKEND")

    def stop(self, sig: int = signal.SIGUSR1, timeout: float = 10) -> None:
        """SIGUSR1 (HAProxy's graceful stop: it closes its listener and finishes what it holds), SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        stop_groups([process], timeout, sig)  # its own session: the group is HAProxy alone


@dataclass
class Pod:
    """A function's pod: the gunicorn group and the queue-proxy in front of it."""

    name: str  # order-1
    function: str  # order, or baseline
    port: int
    queue_proxy: Proxy
    queue_proxy_port: int
    server: Stack | AppServer

    @property
    def pid(self) -> int | None:
        if isinstance(self.server, AppServer):
            return self.server.master_pid
        process = self.server.processes.get(self.function)
        return process.pid if process is not None else None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """A signal to the pod's whole process group, without waiting (the harsh way: it still takes traffic)."""
        if self.pid is not None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM to the pod's process group, as the kubelet stops a container; waits for it to exit (SIGKILL after 15 s)."""
        if isinstance(self.server, AppServer):
            self.server.stop()
        else:
            self.server.stop_function(self.function)


@dataclass
class Topology:
    workdir: Path
    env: dict[str, str]
    redis: RedisServer
    ingress_port: int = field(default_factory=free_port)
    activator_port: int = field(default_factory=free_port)
    pods: dict[str, list[Pod]] = field(default_factory=dict)  # cluster (function) -> pods in rotation or leaving
    ingress: Proxy | None = None
    activator: Proxy | None = None
    gone: list[Pod] = field(default_factory=list)
    _serial: dict[str, int] = field(default_factory=dict)
    proxy_maxconn: int = field(default_factory=raise_fd_limit)

    @property
    def ingress_url(self) -> str:
        return f"http://{INGRESS_ADDRESS}:{self.ingress_port}"

    def front(self, function: str) -> tuple[Proxy, str]:
        """The proxy that balances a function's pods: the activator for auth, the gateway for the others."""
        proxy = self.activator if function == "auth" else self.ingress
        assert proxy is not None, "the topology is not started"
        return proxy, function

    # pods -------------------------------------------------------------------
    def new_pod(self, function: str) -> Pod:
        """A pod started and ready (its gunicorn group and its queue-proxy), not yet in rotation."""
        number = self._serial[function] = self._serial.get(function, 0) + 1
        name, port, qp_port = f"{function}-{number}", free_port(), free_port()
        env = {**self.env, **POD_ENV}
        server: Stack | AppServer
        if function == "baseline":
            # Served exactly as order is (bench/servers.py), on its own port.
            server = baseline("order", env, log_dir=self.workdir / "logs")
            server.name, server.port = name, port
            server.start()
        else:
            server = Stack(
                env=env, ports={function: port}, functions=(function,),
                log_dir=self.workdir / "logs" / name, metrics_dir=self.workdir / "metrics" / name,
            ).start()  # fmt: skip
        concurrency = CONTAINER_CONCURRENCY[function]
        breaker = (
            f'    http-request return status 503 content-type text/plain string "pending request queue full"'
            f" if {{ queue() ge {10 * concurrency} }}"
            if concurrency
            else "    # no containerConcurrency: no breaker"
        )
        queue_proxy = self.proxy(
            f"qp-{name}", "queue-proxy.cfg", port=qp_port, pod=name, pod_port=port, container_concurrency=concurrency,
            timeout_seconds=TIMEOUT_SECONDS[function], breaker=breaker,
        )  # fmt: skip
        return Pod(name, function, port, queue_proxy, qp_port, server)

    def server_line(self, pod: Pod, source: str, maxconn: int) -> str:
        return f"    server {pod.name} 127.0.0.1:{pod.queue_proxy_port} source {source} maxconn {maxconn}"

    def cluster_maxconn(self, function: str, pods: int) -> int:
        """Per-pod connections from the front proxy: the activator's containerConcurrency, or Envoy's 1,024 a cluster shared out."""
        if function == "auth":
            return CONTAINER_CONCURRENCY["auth"]
        return max(1, ENVOY_MAX_CONNECTIONS // max(1, pods))

    def add_to_rotation(self, pod: Pod) -> None:
        """A ready pod joins its cluster at once (HAProxy's runtime API adds the server, as Kourier's EDS update does)."""
        proxy, backend = self.front(pod.function)
        source = ACTIVATOR_SOURCE if pod.function == "auth" else INGRESS_SOURCE
        serving = self.in_rotation(pod.function)
        maxconn = self.cluster_maxconn(pod.function, len(serving) + 1)
        answer = proxy.command(f"add server {backend}/{pod.name} 127.0.0.1:{pod.queue_proxy_port} source {source} maxconn {maxconn}")
        if "New server registered" not in answer:
            raise RuntimeError(f"{proxy.name}: add server {pod.name}: {answer.strip()}")
        proxy.command(f"set server {backend}/{pod.name} state ready")
        self.pods.setdefault(pod.function, []).append(pod)
        self._share_connections(pod.function)

    def in_rotation(self, function: str) -> list[Pod]:
        return [p for p in self.pods.get(function, []) if p not in self.gone]

    def take_out(self, pod: Pod) -> None:
        """Out of rotation: no new request goes to the pod; those it holds finish (HAProxy's `drain` state)."""
        proxy, backend = self.front(pod.function)
        proxy.command(f"set server {backend}/{pod.name} state drain")
        self.gone.append(pod)
        self._share_connections(pod.function)

    def _share_connections(self, function: str) -> None:
        """Envoy's 1,024 connections are the cluster's, not a pod's: share them out over the pods in rotation."""
        proxy, backend = self.front(function)
        serving = self.in_rotation(function)
        for pod in serving:
            proxy.command(f"set maxconn server {backend}/{pod.name} {self.cluster_maxconn(function, len(serving))}")

    def drain_queue_proxy(self, pod: Pod, timeout: float = 30) -> float:
        """queue-proxy's drain: wait until no request came for DRAIN_QUIET_SECONDS and none is in flight; returns the seconds waited.

        The gateway's idle pooled connections to the queue-proxy stay open meanwhile,
        as Envoy's do: a drain counts requests, not connections.
        """
        started = time.monotonic()
        seen, quiet_since = -1, started
        while time.monotonic() - started < timeout:
            total, busy, now = pod.queue_proxy.requests_total(), pod.queue_proxy.in_flight() > 0, time.monotonic()
            if total != seen or busy:
                seen, quiet_since = total, now
            elif now - quiet_since >= DRAIN_QUIET_SECONDS:
                break
            time.sleep(0.05)
        return time.monotonic() - started

    def stop_pod(self, pod: Pod) -> None:
        """The pod and its queue-proxy stopped (the pod first: its queue-proxy would answer for it meanwhile); out of its cluster."""
        if pod not in self.gone:
            self.gone.append(pod)
        pod.terminate()
        pod.queue_proxy.stop()
        proxy, backend = self.front(pod.function)
        proxy.command(f"set server {backend}/{pod.name} state maint")

    # the whole ---------------------------------------------------------------
    def start(self, layout: Mapping[str, int]) -> Topology:
        """``layout``: pods per function, e.g. {"auth": 2, "stock": 2, "order": 2, "baseline": 2}."""
        started = {function: [self.new_pod(function) for _ in range(count)] for function, count in layout.items()}
        self.pods = started
        clusters = []
        for function, pods in started.items():
            if function == "auth":
                continue
            servers = "\n".join(self.server_line(p, INGRESS_SOURCE, self.cluster_maxconn(function, len(pods))) for p in pods)
            clusters.append(render("cluster.cfg", name=function, max_pending=ENVOY_MAX_PENDING, servers=servers))
        if "auth" in started:
            # The gateway's cluster for auth is the activator (target-burst-capacity -1 keeps it in the path).
            activator = f"{ACTIVATOR_ADDRESS}:{self.activator_port}"
            activator_line = f"    server activator {activator} source {INGRESS_SOURCE} maxconn {ENVOY_MAX_CONNECTIONS}"
            clusters.append(render("cluster.cfg", name="auth", max_pending=ENVOY_MAX_PENDING, servers=activator_line))
            auth_servers = "\n".join(self.server_line(p, ACTIVATOR_SOURCE, self.cluster_maxconn("auth", 0)) for p in started["auth"])
            auth_cluster = f"backend auth\n    balance leastconn\n{auth_servers}\n"
            self.activator = self.proxy(
                "activator", "activator.cfg", address=ACTIVATOR_ADDRESS, port=self.activator_port,
                timeout_seconds=TIMEOUT_SECONDS["auth"], cluster="auth", clusters=auth_cluster,
            )  # fmt: skip
        self.ingress = self.proxy("ingress", "ingress.cfg", address=INGRESS_ADDRESS, port=self.ingress_port, clusters="\n".join(clusters))
        return self

    def proxy(self, name: str, template: str, **values: object) -> Proxy:
        """An HAProxy started from one of the templates in rehearsal/haproxy/, its runtime API socket in the workdir."""
        config = render(
            template, maxconn=self.proxy_maxconn, socket=self.workdir / f"{name}.sock", pidfile=self.workdir / f"{name}.pid", **values
        )
        return Proxy(name, config, self.workdir).start()

    def stop(self) -> None:
        for proxy in (self.ingress, self.activator):
            if proxy is not None:
                proxy.stop(signal.SIGTERM, 5)
        for pods in self.pods.values():
            for pod in pods:
                pod.terminate()
                pod.queue_proxy.stop(signal.SIGTERM, 5)


def stack_env(workdir: Path, redis: RedisServer, extra: Mapping[str, str]) -> dict[str, str]:
    """What every pod shares: the one SQLite file, the one Redis, the signing keys (as ops.devstack.local_stack gives its stack)."""
    private, public = ensure_keys(workdir / "keys")
    return {
        "DATABASE_URL": f"sqlite:///{workdir / 'flashsale.db'}",
        "REDIS_URL": redis.url,
        "JWT_PRIVATE_KEY_FILE": str(private),
        "JWT_PUBLIC_KEY_FILE": str(public),
        **extra,
    }


@contextmanager
def running(workdir: Path, layout: Mapping[str, int], extra_env: Mapping[str, str]) -> Iterator[Topology]:
    """A started topology in ``workdir``; everything stopped on exit, whatever happened."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(workdir=workdir).start()
    topology = Topology(workdir, stack_env(workdir, redis, extra_env), redis)
    try:
        yield topology.start(layout)
    finally:
        topology.stop()
        redis.stop()
