"""A small flash sale, end to end, on a private local stack: ``make demo``."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ops.devstack import local_stack
from ops.sales import open_sale
from ops.verdict import crowd_checks
from ops.watch import watch
from shared.settings import Settings
from shared.store import open_store

SKU = "iphone-17"


def call(method: str, url: str, body: Any = None, token: str | None = None, key: str | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if key:
        request.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def run_demo(*, buyers: int, stock: int, workdir: Path) -> int:
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"flashsale demo: {buyers} buyers, {stock} units of {SKU}\n")
    env = {"BCRYPT_ROUNDS": "8", "LOGIN_RATE_PER_ADDRESS": "0", "REGISTER_RATE_PER_ADDRESS": "0", "LOG_LEVEL": "WARNING", "WORKERS": "2"}
    with local_stack(workdir, extra_env=env) as (stack, _redis):
        print("1. stack up: " + ", ".join(f"{f} {stack.url(f)}" for f in stack.functions))
        settings = Settings.from_env({"DATABASE_URL": stack.env["DATABASE_URL"], "REDIS_URL": stack.env["REDIS_URL"]})
        store = open_store(settings)
        open_sale(settings, SKU, stock, store=store)
        print(f"2. sale created: {stock} units, 1 per buyer")

        # Not minted: the demo's buyers sign up and log in through auth, as real ones would.
        def sign_up(i: int) -> str:
            creds = {"email": f"buyer{i}@demo.flashsale.dev", "password": f"demo-password-{i}"}
            status, _ = call("POST", stack.url("auth") + "/register", creds)
            assert status == 201, f"register answered {status}"
            status, session = call("POST", stack.url("auth") + "/login", creds)
            assert status == 200, f"login answered {status}"
            return str(session["access_token"])

        with ThreadPoolExecutor(16) as pool:
            tokens = list(pool.map(sign_up, range(buyers)))
        print(f"3. {buyers} buyers registered and logged in through auth (bcrypt cost 8 for the demo)")

        start = threading.Barrier(buyers)
        answers: list[tuple[int, dict[str, Any], float]] = [(0, {}, 0.0)] * buyers

        def press_buy(i: int) -> None:
            start.wait()
            began = time.perf_counter()
            status, body = call("POST", stack.url("order") + "/orders", {"sku": SKU}, tokens[i], key=f"demo-{i}")
            answers[i] = (status, body, time.perf_counter() - began)

        threads = [threading.Thread(target=press_buy, args=(i,)) for i in range(buyers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"4. all {buyers} pressed Buy at the same moment")

        again: Counter[Any] = Counter()
        for i in range(buyers):
            status, body = call("POST", stack.url("order") + "/orders", {"sku": SKU}, tokens[i])
            again[body.get("code", status)] += 1
        _, level = call("GET", stack.url("stock") + f"/stock/{SKU}")
        stats = store.sale_stats(SKU)
        print("\n5. what the operator sees (flashsale sale watch --once):")
        watch(store, stack.url("order"), SKU, once=True)

    outcomes = Counter(body.get("code", "confirmed") if status in (201, 409) else f"HTTP {status}" for status, body, _ in answers)
    winners = [body for status, body, _ in answers if status == 201]
    tickets = sorted(int(body["ticket"]) for body in winners)
    loser_ms = sorted(seconds * 1000 for status, _, seconds in answers if status == 409)
    other = sum(n for k, n in outcomes.items() if str(k).startswith("HTTP"))
    checks = {
        **crowd_checks(stats, buyers=buyers, confirmed=len(winners), other_answers=other),
        f"the 201s' tickets are 1..{len(tickets)}, each once": tickets == list(range(1, len(tickets) + 1)),
        "every loser answered 409 sold_out": outcomes.get("sold_out", 0) == buyers - len(winners),
        "a second press never buys again": "confirmed" not in again,
        "stock-check says sold out": bool(level.get("sold_out")) is (buyers >= stock),
        "database invariants hold": stats.invariants_hold,
    }
    print("\nverdict")
    print(f"  201 confirmed      {len(winners)}")
    for code, count in sorted(outcomes.items(), key=lambda kv: str(kv[0])):
        if code != "confirmed":
            print(f"  409 {code:<15}{count}" if not str(code).startswith("HTTP") else f"  {code:<19}{count}")
    if loser_ms:
        print(f"  losers answered in  p50 {loser_ms[len(loser_ms) // 2]:.0f} ms, max {loser_ms[-1]:.0f} ms")
    print(f"  second press       {dict(again)}")
    print(f"  stock-check        {level}")
    print(f"  database           {stats.to_public()}")
    print()
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    passed = all(checks.values())
    print(f"\n{'the sale was fair' if passed else 'SOMETHING IS WRONG'}: {stats.sold} of {stock} sold to {stats.buyers} buyers")
    return 0 if passed else 1
