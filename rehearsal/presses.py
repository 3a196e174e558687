"""k6 presses through the ingress (rehearsal/k6/presses.js), each one classified."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.run import k6_binary

SCRIPT = Path(__file__).resolve().parent / "k6" / "presses.js"
BUYER_ADDRESSES = "127.1.0.1-127.1.39.254"  # 10,000 addresses and more: per-address limits see as many clients
ANSWERED_CLASSES = ("200", "201", "401", "409", "429", "503_retry_after")


@dataclass
class Presses:
    """What one k6 run of presses saw."""

    label: str
    exit_code: int
    classes: dict[str, int] = field(default_factory=dict)  # 201, 409, 429, 503_retry_after, 503_proxy, other, no_answer, ...
    wrong: int = 0  # answers whose body did not match their status
    answered_ms: dict[str, float | None] = field(default_factory=dict)  # med, p95, p99, max, count
    answered_at_ms: dict[str, float | None] = field(default_factory=dict)  # from the common start: max = the last answer
    pods: dict[str, dict[str, int]] = field(default_factory=dict)
    output: str = ""

    @property
    def presses(self) -> int:
        return sum(self.classes.values())

    @property
    def no_answer(self) -> int:
        return self.classes.get("no_answer", 0)

    @property
    def answered(self) -> int:
        return self.presses - self.no_answer

    def count(self, kind: str) -> int:
        return self.classes.get(kind, 0)

    @property
    def p99_ms(self) -> float | None:
        return self.answered_ms.get("p99")

    @property
    def answers_per_second(self) -> float | None:
        """Answers over the time from the common start to the last answer (one-shot crowds)."""
        last = self.answered_at_ms.get("max")
        return self.answered / (last / 1000) if last else None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "output"} | {"answers_per_second": self.answers_per_second}


def run(
    label: str,
    env: Mapping[str, str],
    out_dir: Path,
    *,
    local_ips: str = BUYER_ADDRESSES,
    timeout: float = 600,
) -> Presses:
    """One k6 run of presses.js with ``env`` (ACTION, BUYERS, RATE, INGRESS_URL, TOKENS_FILE, ...)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_file = out_dir / f"{label}.json"
    summary_file.unlink(missing_ok=True)
    completed = subprocess.run(
        [k6_binary(), "run", "--quiet", "--no-color", "--local-ips", local_ips, str(SCRIPT)],
        env={**os.environ, **env, "SUMMARY_FILE": str(summary_file)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = completed.stdout + completed.stderr
    (out_dir / f"{label}.log").write_text(output)
    data = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return Presses(
        label,
        completed.returncode,
        classes=data.get("classes", {}),
        wrong=data.get("wrong", 0),
        answered_ms=data.get("answered_ms", {}),
        answered_at_ms=data.get("answered_at_ms", {}),
        pods=data.get("pods", {}),
        output=output,
    )


class Background:
    """A k6 run in a thread: the crowd goes on while a scenario does something to the topology."""

    def __init__(self, label: str, env: Mapping[str, str], out_dir: Path, *, local_ips: str = BUYER_ADDRESSES) -> None:
        self.result: Presses | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(label, env, out_dir, local_ips), name=f"k6-{label}", daemon=True)

    def _run(self, label: str, env: Mapping[str, str], out_dir: Path, local_ips: str) -> None:
        try:
            self.result = run(label, env, out_dir, local_ips=local_ips)
        except BaseException as exc:  # handed to the caller in join()
            self.error = exc

    def start(self) -> Background:
        self._thread.start()
        return self

    def join(self, timeout: float = 600) -> Presses:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise TimeoutError("k6 did not finish")
        return self.result


def pods_env(pods: Sequence[str]) -> dict[str, str]:
    return {"PODS": ",".join(pods)}
