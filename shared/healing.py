"""Healing: a sold-out gate that the database contradicts is rebuilt, with nobody typing a command.

The gate counts a unit when it admits a buyer, before the database writes the
order. A worker killed between the two (SIGKILL, a pod OOM-killed) leaves a
count that no order will ever back: the gate's ``remaining`` is lower than the
units the database still has, and once it reaches 0 every buyer hears
``sold_out`` while units are left. ``flashsale reconcile`` repairs that by
hand: ``Store.reconcile`` (units no order holds go back, per-buyer counts are
corrected), then the gate rebuilt from the database and the cached stock level
dropped: :func:`reconcile_sale`. A :class:`Healer` runs that same function on a
schedule; the one difference is who waits: the healer gives way to a rebuild
another process has under way, the operator's command rebuilds regardless.

One pass, at most one per HEAL_INTERVAL_SECONDS for the whole deployment (a
lease in Redis; the loop runs in every stock and events worker, so it lives as
long as any of them does, and never in order or auth, whose requests it must
not slow):

1. every gate in Redis that admits nobody (``remaining`` 0) is set against the
   database: a sale it calls sold out while the database has units available,
   or units taken from stock that no confirmed order holds (a crash between
   MongoDB's steps), is a suspect;
2. HEAL_GRACE_SECONDS later each suspect is looked at again: if the gate is the
   same (same epoch, still sold out) and no order landed meanwhile (the
   database unchanged), nothing is in flight: what the gate counts beyond the
   database is stranded;
3. those sales are reconciled and their gates rebuilt, under a new epoch (a
   late release of a stranded admission cannot add stock twice).

Order workers answer ``sold_out`` from their memo for SOLD_OUT_MEMO_SECONDS,
then ask the gate again, which admits. Rebuilding early is never wrong, only
wasteful: the database decides every sale, so an order that was still in flight
after all lands, and one buyer more reaches the database and hears ``sold_out``
from it. The grace spares the database that work.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import FlashsaleError
from shared.gate import Gate, gate_key
from shared.models import ReconcileReport
from shared.redisconn import RedisDown
from shared.settings import Settings
from shared.stock import StockCache
from shared.store.base import Store

if TYPE_CHECKING:
    from shared.context import Context

log = logging.getLogger("flashsale.healing")

LEASE_KEY = "fs:heal:lease"
HEALERS = frozenset({"stock", "events"})  # the functions whose workers run the loop
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Look:
    """A sold-out gate the database contradicts, as seen once."""

    sku: str
    epoch: str  # the gate's
    available: int  # units the database offers
    orphaned: int  # units taken from stock that no confirmed order holds (0 unless read)


@dataclass(frozen=True)
class Healed:
    sku: str
    available: int  # units on sale again (the database's count, which the gate now offers)
    released_tickets: int  # orphaned units Store.reconcile gave back
    corrected_buyers: int
    epoch: str  # the rebuilt gate's


@dataclass(frozen=True)
class Reconciled:
    report: ReconcileReport  # what Store.reconcile gave back and corrected
    epoch: str | None  # the rebuilt gate's; None: not rebuilt (see refresh_gate)


def refresh_gate(store: Store, gate: Gate, stock: StockCache, sku: str, *, give_way: bool) -> str | None:
    """Make Redis follow the database for one sale: its gate rebuilt, its cached stock level dropped.

    ``give_way``: leave the gate to a rebuild another process has under way (the
    healer, whose next pass looks again); otherwise rebuild regardless (an
    operator's command, which must end with the gate matching the database).
    Returns the new epoch; None if the gate was not rebuilt: Redis did not
    answer, or another process was rebuilding it and ``give_way`` was set.
    """
    try:
        epoch = gate.try_rebuild(store, sku) if give_way else gate.rebuild(store, sku)
    except RedisDown:
        return None
    if epoch is not None:
        stock.forget(sku)
    return epoch


def reconcile_sale(store: Store, gate: Gate, stock: StockCache, sku: str, *, grace_seconds: float, give_way: bool) -> Reconciled:
    """``flashsale reconcile`` and the healer, one sale: units no order holds go back and per-buyer counts are
    corrected in the database (orders younger than ``grace_seconds`` may still land), then Redis follows it."""
    report = store.reconcile(sku, grace_seconds=grace_seconds)
    return Reconciled(report, refresh_gate(store, gate, stock, sku, give_way=give_way))


class Healer:
    """Finds sold-out gates the database contradicts and rebuilds them (one process's state: what it already checked)."""

    def __init__(
        self,
        store: Store,
        gate: Gate,
        stock: StockCache,
        *,
        grace_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
        on_heal: Callable[[Healed], None] | None = None,
    ) -> None:
        self.store = store
        self.gate = gate
        self.stock = stock
        self.grace = grace_seconds
        self.sleep = sleep
        self.on_heal = on_heal
        # sku -> epoch of a gate whose sale the database showed entirely sold (no orphans): while the
        # database offers nothing, that stays true, so only the cheap stock level is read for it again.
        self._complete: dict[str, str] = {}

    def run_pass(self) -> list[Healed]:
        """Look, wait the grace, look again, heal what did not change. Raises RedisDown or a StoreError."""
        first = [look for sku, epoch in self.sold_out_gates().items() if (look := self.look(sku, epoch)) is not None]
        if not first:
            return []
        self.sleep(self.grace)
        healed: list[Healed] = []
        for before in first:
            if self._sold_out_epoch(before.sku) != before.epoch:
                continue  # rebuilt or reopened meanwhile
            if self.look(before.sku, before.epoch) != before:
                continue  # an order landed, or units came back: something moves; the next pass looks again
            done = self.heal(before)
            if done is not None:
                healed.append(done)
        return healed

    def sold_out_gates(self) -> dict[str, str]:
        """sku -> epoch of every gate in Redis that admits nobody now."""
        prefix, suffix = gate_key("\0").split("\0")
        keys = self.gate.redis.call(lambda client: list(client.scan_iter(match=gate_key("*"), count=1000)))
        found: dict[str, str] = {}
        for key in keys:
            text = key.decode() if isinstance(key, bytes) else str(key)
            if not (text.startswith(prefix) and text.endswith(suffix)):
                continue
            sku = text[len(prefix) : len(text) - len(suffix)]
            epoch = self._sold_out_epoch(sku)
            if epoch is not None:
                found[sku] = epoch
        return found

    def _sold_out_epoch(self, sku: str) -> str | None:
        state = self.gate.state(sku)
        remaining, epoch = state.get("remaining", ""), state.get("epoch", "")
        try:
            return epoch if epoch and int(remaining) <= 0 else None
        except ValueError:
            return None

    def look(self, sku: str, epoch: str) -> Look | None:
        """The sale if the database has units that the sold-out gate (``epoch``) does not offer; None if they agree."""
        level = self.store.stock_level(sku)
        if level is None:
            return None  # a gate left over from a sale that is gone: nothing to sell
        if level.available > 0:
            self._complete.pop(sku, None)
            return Look(sku, epoch, level.available, 0)
        if self._complete.get(sku) == epoch:
            return None
        stats = self.store.sale_stats(sku)
        if stats.orphaned > 0:
            return Look(sku, epoch, 0, stats.orphaned)
        if len(self._complete) >= MAX_REMEMBERED:
            self._complete.clear()
        self._complete[sku] = epoch
        return None

    def heal(self, look: Look) -> Healed | None:
        """``flashsale reconcile``'s steps for one sale; None if another process is rebuilding its gate right now
        or Redis did not answer."""
        done = reconcile_sale(self.store, self.gate, self.stock, look.sku, grace_seconds=self.grace, give_way=True)
        if done.epoch is None:
            return None  # the next pass looks again
        self._complete.pop(look.sku, None)
        report = done.report
        healed = Healed(look.sku, report.stats.available, len(report.released_tickets), report.corrected_buyers, done.epoch)
        log.warning(
            "rebuilt the sold-out gate of %s: the database still had %d units (admissions whose orders never landed)",
            look.sku,
            healed.available,
            extra={
                "sku": look.sku,
                "available": healed.available,
                "released_tickets": healed.released_tickets,
                "corrected_buyers": healed.corrected_buyers,
                "epoch": done.epoch,
            },
        )
        if self.on_heal is not None:
            self.on_heal(healed)
        return healed


def lease_ms(settings: Settings) -> int:
    """How long a pass keeps the others from starting one: a little under an interval, so a worker's next turn finds it free.

    Two passes at once (one outlasting its lease) are harmless: the second
    finds the gate already rebuilt (another epoch, not sold out) and leaves it.
    """
    return max(1, int(750 * settings.heal_interval_seconds))


def heal_once(ctx: Context) -> list[Healed] | None:
    """One pass if this process wins the lease; None if another holds it or Redis is down (then no gate admits anyone)."""
    try:
        won = ctx.redis.call(lambda client: client.set(LEASE_KEY, os.getpid(), nx=True, px=lease_ms(ctx.settings)))
    except RedisDown:
        return None
    if not won:
        return None
    return ctx.healer.run_pass()


def start(function: str, settings: Settings) -> threading.Thread | None:
    """The loop, in this worker, if ``function`` is one that runs it and healing is on (a daemon thread, or greenlet under gevent)."""
    if function not in HEALERS or settings.heal_interval_seconds <= 0:
        return None
    thread = threading.Thread(target=_loop, args=(settings.heal_interval_seconds,), name="flashsale-healing", daemon=True)
    thread.start()
    return thread


def _loop(interval: float) -> None:
    from shared.context import context

    while True:
        # Workers start together; the jitter spreads their turns, the lease keeps one pass per interval.
        time.sleep(interval * random.uniform(0.8, 1.0))
        try:
            heal_once(context())
        except (RedisDown, FlashsaleError) as exc:
            log.warning("healing pass skipped: %s", exc)
        except Exception:
            log.exception("healing pass failed")
