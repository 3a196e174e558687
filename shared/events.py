"""The ``order.placed`` CloudEvent, sent to ``K_SINK`` off the request path.

Orders never wait for, or fail because of, the sink: events go into a bounded
queue that one background thread drains; when the queue is full the event is
dropped and counted (the database still has the order, and the consumer's
view is refreshed from it).
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from shared.models import Order, iso

log = logging.getLogger(__name__)

ORDER_PLACED = "dev.flashsale.order.placed"
SOURCE = "/flashsale/order"


def order_placed_event(order: Order, stock_total: int) -> CloudEvent:
    return CloudEvent(
        {
            "type": ORDER_PLACED,
            "source": SOURCE,
            "id": order.order_id,  # a redelivery carries the same id: consumers dedupe on it
            "subject": order.sku,
            "time": iso(order.created_at),
            "datacontenttype": "application/json",
        },
        {
            "order_id": order.order_id,
            "sku": order.sku,
            "quantity": order.quantity,
            "ticket": order.ticket,
            "tickets": list(order.tickets),
            "total": stock_total,
        },
    )


class EventEmitter:
    def __init__(self, sink: str, *, timeout_seconds: float = 2.0, capacity: int = 10_000) -> None:
        self.sink = sink
        self.timeout = timeout_seconds
        self._queue: queue.Queue[CloudEvent] = queue.Queue(maxsize=capacity)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.on_error: Callable[[Exception], None] | None = None
        self.on_emit: list[Callable[[CloudEvent], None]] = []  # on the request's thread, before queueing (trace context)
        self.sent = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.sink)

    def emit(self, event: CloudEvent) -> None:
        if not self.enabled:
            return
        for hook in self.on_emit:
            hook(event)
        self._ensure_worker()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            self._failed(RuntimeError("event queue full"))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued events are delivered (tests, shutdown)."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="flashsale-events", daemon=True)
                self._worker.start()

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._send(event)
                self.sent += 1
            except Exception as exc:  # never let one bad delivery stop the drain
                self._failed(exc)
            finally:
                self._queue.task_done()

    def _send(self, event: CloudEvent) -> None:
        headers, body = to_binary(event)
        request = urllib.request.Request(self.sink, data=body, headers=dict(headers), method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if response.status >= 300:
                raise urllib.error.HTTPError(self.sink, response.status, "sink refused the event", response.headers, None)

    def _failed(self, exc: Exception) -> None:
        log.warning("order.placed not delivered: %s", exc)
        if self.on_error is not None:
            self.on_error(exc)


def event_data(event: Any) -> dict[str, Any]:
    data = event.get_data() if hasattr(event, "get_data") else event.data
    return data if isinstance(data, dict) else {}
