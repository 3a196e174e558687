"""``flashsale sale watch``: a sale as it happens, in a terminal.

Each frame puts two sources side by side: the database (sold, stock, buyers and
whether the invariants hold: the truth) and the order function's ``/metrics``
(orders per second by outcome and the p99 of ``/orders``: how the crowd is
being answered). Rates and p99 cover the time since the previous frame; the
first frame, and ``--once``, show totals since the function started.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shared.errors import FlashsaleError
from shared.models import SaleStats
from shared.store.base import Store

OUTCOMES = ("confirmed", "sold_out", "limit_reached", "sale_not_started", "idempotent_replay", "unavailable")
ORDERS = "flashsale_orders_total"
DURATION_BUCKET = "flashsale_http_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One read of a ``/metrics`` page."""

    samples: tuple[Sample, ...]
    at: float = field(default_factory=time.monotonic)

    @classmethod
    def parse(cls, text: str, at: float | None = None) -> Scrape:
        samples = tuple(
            Sample(s.name, dict(s.labels), float(s.value)) for family in text_string_to_metric_families(text) for s in family.samples
        )
        return cls(samples, time.monotonic() if at is None else at)

    def matching(self, name: str, **labels: str) -> Iterable[Sample]:
        return (s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of ``name`` that carries ``labels``."""
        return sum(s.value for s in self.matching(name, **labels))

    def buckets(self, name: str, **labels: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts by upper bound, summed over the matching series."""
        counts: dict[float, float] = {}
        for s in self.matching(name, **labels):
            bound = float(s.labels["le"])
            counts[bound] = counts.get(bound, 0.0) + s.value
        return counts


def fetch(url: str, timeout: float = 2.0) -> Scrape:
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as response:
        return Scrape.parse(response.read().decode("utf-8"))


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear within the bucket the rank falls in."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # past the highest finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Frame:
    sku: str
    stats: SaleStats | None
    stats_error: str | None
    outcomes: dict[str, float]  # totals since the order function started
    rates: dict[str, float] | None  # per second since the previous frame
    p99: float | None
    p99_window: str
    metrics_error: str | None


class Watcher:
    """Builds frames; remembers the previous scrape to turn totals into rates."""

    def __init__(self, store: Store, order_url: str, sku: str) -> None:
        self.store = store
        self.order_url = order_url
        self.sku = sku
        self.previous: Scrape | None = None

    def frame(self) -> Frame:
        stats, stats_error = None, None
        try:
            stats = self.store.sale_stats(self.sku)
        except FlashsaleError as exc:
            stats_error = exc.detail
        try:
            scrape = fetch(self.order_url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return Frame(self.sku, stats, stats_error, {}, None, None, "", f"{self.order_url}/metrics: {exc}")
        outcomes = {o: scrape.total(ORDERS, sku=self.sku, outcome=o) for o in OUTCOMES}
        latency = {"function": "order", "route": "/orders"}
        rates, p99, window = None, quantile(0.99, scrape.buckets(DURATION_BUCKET, **latency)), "since start"
        before = self.previous
        if before is not None and scrape.at > before.at:
            seconds = scrape.at - before.at
            # max(0, ...): a restarted function starts its counters again from zero.
            rates = {o: max(0.0, outcomes[o] - before.total(ORDERS, sku=self.sku, outcome=o)) / seconds for o in OUTCOMES}
            now_buckets, old_buckets = scrape.buckets(DURATION_BUCKET, **latency), before.buckets(DURATION_BUCKET, **latency)
            recent = {le: max(0.0, n - old_buckets.get(le, 0.0)) for le, n in now_buckets.items()}
            if quantile(0.99, recent) is not None:
                p99, window = quantile(0.99, recent), f"last {seconds:.0f} s"
        self.previous = scrape
        return Frame(self.sku, stats, stats_error, outcomes, rates, p99, window, None)


def bar(done: int, total: int, width: int = 40) -> Text:
    """Drawn with characters, not only colour, so a log file or a dumb terminal shows it too."""
    filled = width if total <= 0 else round(width * min(done, total) / total)
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), "dim"))


def render(frame: Frame) -> RenderableType:
    parts: list[RenderableType] = []
    stats = frame.stats
    if stats is None:
        parts.append(Text(f"database: {frame.stats_error}", style="red"))
    else:
        sold = Table.grid(padding=(0, 1))
        sold.add_row(
            Text("sold", style="bold"),
            bar(stats.sold, stats.total),
            Text(f"{stats.sold} / {stats.total}"),
        )
        sold.add_row(Text("buyers", style="bold"), Text(str(stats.buyers)), Text(f"orders {stats.orders}, available {stats.available}"))
        parts.append(sold)
    if frame.metrics_error:
        parts.append(Text(f"metrics: {frame.metrics_error}", style="yellow"))
    else:
        table = Table(title="orders by outcome", title_justify="left", expand=False)
        table.add_column("outcome")
        table.add_column("total", justify="right")
        table.add_column("per second", justify="right")
        for outcome in OUTCOMES:
            rate = "-" if frame.rates is None else f"{frame.rates[outcome]:,.1f}"
            table.add_row(outcome, f"{frame.outcomes.get(outcome, 0):,.0f}", rate)
        parts.append(table)
        latency = "no requests yet" if frame.p99 is None else f"{frame.p99 * 1000:,.1f} ms ({frame.p99_window})"
        parts.append(Text.assemble(("p99 /orders ", "bold"), latency))
    if stats is not None:
        if stats.invariants_hold:
            parts.append(Text("invariants hold (database)", style="green"))
        else:
            parts.append(Text("INVARIANTS BROKEN: " + "; ".join(stats.violations()), style="bold red"))
    return Panel(Group(*parts), title=f"flashsale · {frame.sku}", title_align="left")


def watch(store: Store, order_url: str, sku: str, *, once: bool = False, interval: float = 1.0, console: Console | None = None) -> int:
    """Show frames until Ctrl-C (or one with ``once``). Exit 3 if the invariants are broken, like ``sale status``."""
    console = console or Console()
    watcher = Watcher(store, order_url, sku)
    frame = watcher.frame()
    if once:
        console.print(render(frame))
    else:
        try:
            with Live(render(frame), console=console, refresh_per_second=4) as live:
                while True:
                    time.sleep(interval)
                    frame = watcher.frame()
                    live.update(render(frame))
        except KeyboardInterrupt:
            pass
    return 3 if frame.stats is not None and not frame.stats.invariants_hold else 0
