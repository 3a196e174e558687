"""A crowd of buyers pressing Buy over real HTTP, each keeping every answer it got.

Each buyer behaves as a careful real client: one Idempotency-Key for its one
intended order, and on an answer that settles nothing (a 5xx, a reset or
refused connection, a timeout) it tries again with the same key, after
``Retry-After`` when the server gave one. A 201, a 409 or any other 4xx is an
answer: the buyer stops there. Retrying with the same key is what makes it
safe to retry at all, and it is what lets the checks demand that every buyer
ends up knowing the truth.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

RETRIED_STATUSES = frozenset({500, 502, 503, 504})
RETRY_AFTER_CAP = 2.0  # seconds; a test must not wait for a server that asks for a minute


@dataclass(frozen=True)
class Answer:
    """One attempt's outcome: an HTTP answer, or what went wrong on the wire (status 0)."""

    status: int
    code: str  # "confirmed", a problem code, or reset / refused / timeout / closed
    order_id: str | None = None
    ticket: int | None = None
    retry_after: float = 0.0
    seconds: float = 0.0

    @property
    def settled(self) -> bool:
        return self.status != 0 and self.status not in RETRIED_STATUSES

    @property
    def label(self) -> str:
        return self.code if self.status == 0 else f"{self.status} {self.code}"


@dataclass
class Buyer:
    user_id: str
    token: str
    key: str
    answers: list[Answer] = field(default_factory=list)  # every attempt, in order
    finals: list[Answer] = field(default_factory=list)  # the last answer on each connection of the latest press
    waited: float = 0.0  # seconds from pressing Buy to the last final answer of the first press

    @property
    def order_ids(self) -> set[str]:
        return {a.order_id for a in self.answers if a.status == 201 and a.order_id}

    @property
    def confirmed(self) -> bool:
        return any(a.status == 201 for a in self.finals)


def send_order(base_url: str, token: str, sku: str, quantity: int, key: str, timeout: float) -> Answer:
    """POST /orders on a fresh connection; never raises."""
    parts = urlsplit(base_url)
    body = json.dumps({"sku": sku, "quantity": quantity})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": key}
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request("POST", "/orders", body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        status, retry_after = response.status, response.getheader("Retry-After") or "0"
    except TimeoutError:
        return Answer(0, "timeout", seconds=time.perf_counter() - started)
    except ConnectionRefusedError:
        return Answer(0, "refused", seconds=time.perf_counter() - started)
    except http.client.RemoteDisconnected:  # before ConnectionResetError: it is one
        return Answer(0, "closed", seconds=time.perf_counter() - started)
    except (ConnectionResetError, BrokenPipeError):
        return Answer(0, "reset", seconds=time.perf_counter() - started)
    except (http.client.HTTPException, OSError) as exc:
        return Answer(0, type(exc).__name__, seconds=time.perf_counter() - started)
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    try:
        data = json.loads(raw)
    except ValueError:
        return Answer(status, "not-json", seconds=seconds)
    if status == 201:
        return Answer(status, "confirmed", str(data["order_id"]), int(data["ticket"]), seconds=seconds)
    try:
        pause = float(retry_after)
    except ValueError:
        pause = 1.0
    return Answer(status, str(data.get("code", "no-code")), retry_after=pause, seconds=seconds)


class Crowd:
    """Buyers of one sale; tracks progress so a fault can strike at a chosen moment."""

    def __init__(
        self,
        base_url: str,
        sku: str,
        buyers: Iterable[Buyer],
        *,
        quantity: int = 1,
        connections: int = 1,
        timeout: float = 15.0,
        give_up_after: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.sku = sku
        self.buyers = list(buyers)
        self.quantity = quantity
        self.connections = connections
        self.timeout = timeout
        self.give_up_after = give_up_after
        self._lock = threading.Lock()
        self._confirmed: set[str] = set()
        self.in_flight = 0
        self.done = threading.Event()

    @property
    def confirmed(self) -> int:
        """Buyers told 201 so far."""
        with self._lock:
            return len(self._confirmed)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Poll ``condition`` until it holds, the crowd is done, or the deadline passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.done.is_set():
                return condition()
            time.sleep(0.005)
        return False

    def run(self, buyers: list[Buyer] | None = None, *, rate: float | None = None, burst: int = 1, concurrency: int = 48) -> None:
        """Every buyer presses Buy until answered: ``rate`` a second on average, ``burst`` at the same instant (all at once when None)."""
        who = self.buyers if buyers is None else buyers
        self.done.clear()
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="buyer") as pool:
            arrivals = [start + ((i - i % burst) / rate if rate else 0.0) for i in range(len(who))]
            for outcome in [pool.submit(self._arrive, buyer, at) for buyer, at in zip(who, arrivals, strict=True)]:
                outcome.result()
        self.done.set()

    def _arrive(self, buyer: Buyer, at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.press(buyer)

    def press(self, buyer: Buyer) -> None:
        """One press of Buy: ``connections`` identical requests at once, each retried until answered."""
        started = time.perf_counter()
        finals: list[Answer] = [Answer(0, "not-sent")] * self.connections
        if self.connections == 1:
            finals[0] = self._until_answered(buyer)
        else:
            gate = threading.Barrier(self.connections)

            def connection(i: int) -> None:
                gate.wait()
                finals[i] = self._until_answered(buyer)

            threads = [threading.Thread(target=connection, args=(i,)) for i in range(self.connections)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        first_press = not buyer.finals
        buyer.finals = finals
        if first_press:
            buyer.waited = time.perf_counter() - started

    def _until_answered(self, buyer: Buyer) -> Answer:
        deadline = time.monotonic() + self.give_up_after
        while True:
            with self._lock:
                self.in_flight += 1
            answer = send_order(self.base_url, buyer.token, self.sku, self.quantity, buyer.key, self.timeout)
            with self._lock:
                self.in_flight -= 1
                buyer.answers.append(answer)
                if answer.status == 201:
                    self._confirmed.add(buyer.user_id)
            if answer.settled or time.monotonic() >= deadline:
                return answer
            if answer.status == 0:
                pause = random.uniform(0.05, 0.25)
            else:
                pause = min(answer.retry_after or 1.0, RETRY_AFTER_CAP) + random.uniform(0, 0.2)
            time.sleep(pause)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
