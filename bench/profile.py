"""py-spy profiles of a function's gunicorn workers while a load runs, and what
they say per request.

Two recorders sample the same process group at once (non-blocking, so the
workers are never paused): one writes the flame graph (SVG), the other the
folded stacks. py-spy leaves idle samples out, so at ``RATE_HZ`` every sample
is 1/RATE_HZ s of a CPU: divided by the requests the load made, the samples
whose stack passes through a step give that step's CPU time per request, for
the baseline and for flashsale alike.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE_HZ = 100


def _named(name: str) -> Callable[[str], bool]:
    return lambda frame: frame.split(" (", 1)[0] == name


def _in_file(part: str) -> Callable[[str], bool]:
    return lambda frame: f"({part}" in frame or f"/{part}" in frame


# Steps of a request, each recognised by a frame its samples pass through.
# Indented names are inside flashsale's handler; they may overlap each other.
STEPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("flashsale before the framework (Router._shortcut)", _named("Router._shortcut")),
    ("  reading an order (token, body, sold-out memo)", _named("read_order")),
    # Flask.__call__ runs the shortcuts too; the framework's own path starts at its wsgi_app.
    ("Flask and functions-framework (Flask.wsgi_app)", _named("Flask.wsgi_app")),
    ("flashsale's handler (Router.dispatch)", _named("Router.dispatch")),
    ("  token verification", _named("TokenVerifier.check")),
    ("  order desk (memo, gate, database)", _named("OrderDesk.place")),
    ("  waiting for a batch's commit (OrderBatcher)", _named("OrderBatcher.place_order")),
    ("  stock cache", _named("StockCache.read")),
    ("  login (bcrypt, token)", _named("Accounts.login")),
    ("  access log line", lambda frame: frame.startswith("line (") and "logs.py" in frame),
    ("  metrics (prometheus_client)", _in_file("prometheus_client/")),
    ("SQLite", _in_file("store/sqlite")),  # sqlite.py and sqlite_placement.py
    ("Redis client", _in_file("redis/")),
    # py-spy counts a writer's timed wait as a sample: the crowd's CPU table has its real CPU ("other threads").
    ("writer threads: log lines, metric files (their waits included)", _named("Ticker._run")),
    ("HTTP parsing (gunicorn)", _named("Parser.__next__")),
    ("sending the response", _named("SocketMixin.sendall")),
)


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    name: str  # e.g. "losers-flashsale"
    svg: Path | None = None
    folded: Path | None = None
    note: str = ""  # why there is no profile, or what went wrong
    requests: int = 0  # requests the profiled load made
    top: list[tuple[str, float]] = field(default_factory=list)  # (frame, share of samples) by own time
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per request: "all" and each step

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "svg": self.svg.name if self.svg else None,
            "folded": self.folded.name if self.folded else None,
            "note": self.note,
            "requests": self.requests,
            "top": [[frame, share] for frame, share in self.top],
            "cpu_ms": self.cpu_ms,
        }


def stacks(folded: str) -> Iterator[tuple[list[str], int]]:
    """(frames root first, samples) for each line of py-spy's folded output."""
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def top_frames(folded: str, limit: int = 12) -> list[tuple[str, float]]:
    """The frames where most samples were taken (the leaf of each stack), with their share of all samples."""
    own: Counter[str] = Counter()
    for frames, count in stacks(folded):
        leaf = frames[-1]
        # A stack with no Python frame below the process is native code (C extensions, the interpreter).
        own["(native code)" if leaf.startswith("process ") else leaf] += count
    total = sum(own.values())
    return [(frame, round(n / total, 3)) for frame, n in own.most_common(limit)] if total else []


def cpu_per_request(folded: str, requests: int, rate_hz: int = RATE_HZ) -> dict[str, float]:
    """CPU milliseconds per request, in all and in each of STEPS."""
    if requests <= 0:
        return {}
    samples: Counter[str] = Counter()
    for frames, count in stacks(folded):
        samples["all"] += count
        for step, matches in STEPS:
            if any(matches(frame) for frame in frames):
                samples[step] += count
    per_sample_ms = 1000 / rate_hz
    return {step: round(samples[step] * per_sample_ms / requests, 3) for step in ("all", *(s for s, _ in STEPS))}


def _record(binary: str, pid: int, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--rate", str(RATE_HZ), "--format", fmt, "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stop(recorder: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """Ctrl-C makes py-spy write what it sampled."""
    if recorder.poll() is None:
        recorder.send_signal(signal.SIGINT)
    try:
        output, _ = recorder.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        recorder.kill()
        output, _ = recorder.communicate()
    return output.decode(errors="replace") if output else ""


@contextmanager
def recording(name: str, pid: int | None, out_dir: Path) -> Iterator[Profile]:
    """Profile ``pid`` (a gunicorn master; its workers too) while the block runs; set ``requests`` inside it."""
    profile = Profile(name)
    binary = py_spy()
    if binary is None or pid is None:
        profile.note = "py-spy is not installed (pip install py-spy)" if binary is None else "no process to profile"
        yield profile
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    svg, folded = out_dir / f"profile-{name}.svg", out_dir / f"profile-{name}.folded.txt"
    recorders = [_record(binary, pid, svg, "flamegraph"), _record(binary, pid, folded, "raw")]
    try:
        yield profile
    finally:
        outputs = [_stop(recorder) for recorder in recorders]
    profile.svg = svg if svg.exists() else None
    profile.folded = folded if folded.exists() else None
    if profile.folded is not None:
        text = profile.folded.read_text()
        profile.top = top_frames(text)
        profile.cpu_ms = cpu_per_request(text, profile.requests)
    if profile.svg is None and profile.folded is None:
        last_lines = [o.strip().splitlines()[-1] for o in outputs if o.strip()]
        profile.note = "py-spy could not attach: " + (" | ".join(last_lines) or "no output")
