"""The benchmark's plumbing: how the baseline is served, TIME_WAIT counting, profiles, scheduling."""

from __future__ import annotations

from pathlib import Path

import functions_framework

from bench import servers
from bench.net import timewait_in
from bench.profile import cpu_per_request, top_frames
from bench.run import chunks, configure, parse
from shared.serving import gunicorn_argv
from shared.settings import Settings


def test_the_baseline_is_served_exactly_as_the_function_it_stands_beside() -> None:
    settings = Settings.from_env({})
    for function in ("auth", "stock", "order"):
        real = gunicorn_argv(function, settings, host="127.0.0.1", port=9000)
        baseline = servers.served_like(function, settings, source=servers.BASELINE, target="baseline", name="baseline", port=9000)
        differ = [i for i, (a, b) in enumerate(zip(real, baseline, strict=True)) if a != b]
        assert [real[i - 1] for i in differ[:-1]] == ["--name"]
        assert differ[-1] == len(real) - 1 and "bench/baseline/main.py" in baseline[-1]


def test_a_pinned_server_counts_only_its_cpus() -> None:
    assert servers.cpu_count("0") == 1
    assert servers.cpu_count("0,1") == 2
    assert servers.cpu_count("0-3,6") == 5
    server = servers.baseline("order", {}, cpus="1")
    assert server.workers == 1
    assert server.argv()[:3] == ["taskset", "-c", "1"]


def test_the_baseline_answers_what_the_k6_scripts_check() -> None:
    client = functions_framework.create_app(target="baseline", source=str(servers.BASELINE)).test_client()
    stock = client.get("/stock/iphone-17")
    assert stock.status_code == 200 and stock.get_json()["sku"] == "iphone-17"
    buy = client.post("/orders", json={"sku": "iphone-17"})
    assert buy.status_code == 409 and buy.mimetype == "application/problem+json" and buy.get_json()["code"] == "sold_out"
    assert client.get("/orders").status_code == 200
    assert client.post("/login", json={}).get_json()["token_type"] == "Bearer"
    assert client.get("/readyz").status_code == 200


def test_the_monolith_sends_each_route_to_its_function() -> None:
    client = functions_framework.create_app(target="monolith", source=str(servers.MONOLITH)).test_client()
    # 405s come from each function's own router, before anything needs a database
    assert "POST" in client.get("/login").headers["Allow"]
    assert "GET" in client.post("/stock/x").headers["Allow"]
    assert {"GET", "POST"} <= set(client.delete("/orders").headers["Allow"].split(", "))
    assert client.get("/healthz").status_code == 200


def test_timewait_is_read_from_sockstat() -> None:
    text = "sockets: used 51\nTCP: inuse 27 orphan 0 tw 9995 alloc 27 mem 61\nUDP: inuse 0 mem 0\n"
    assert timewait_in(text) == 9995
    assert timewait_in("TCP6: inuse 3\n") == 0


def test_top_frames_are_the_leaves_of_the_folded_stacks() -> None:
    folded = "process 1;main (a.py:1);verify (jwt.py:9) 30\nprocess 1;main (a.py:1);log (logs.py:2) 10\nbroken line\n"
    assert top_frames(folded) == [("verify (jwt.py:9)", 0.75), ("log (logs.py:2)", 0.25)]


def test_tasks_spread_over_the_crowd_rounds() -> None:
    tasks = [lambda: None for _ in range(5)]
    assert [len(c) for c in chunks(tasks, 3)] == [2, 2, 1]
    assert [len(c) for c in chunks(tasks, 0)] == [5]
    assert chunks([], 2) == [[], []]


def test_quick_keeps_the_vu_levels_and_shortens_the_rest() -> None:
    quick = configure(parse(["--quick", "--bcrypt-rounds", "4"]))
    full = configure(parse(["--crowd-rounds", "5"]))
    assert quick.quick and quick.buyers < full.buyers and quick.duration_s < full.duration_s
    assert quick.stock_vus == full.stock_vus == (200, 1000)
    assert quick.bcrypt_rounds == 4 and full.crowd_rounds == 5
    assert Path(servers.BASELINE).exists() and Path(servers.MONOLITH).exists()


def test_cpu_per_request_counts_each_step_its_stacks_pass_through() -> None:
    folded = "\n".join(
        [
            "process 1;handle (gunicorn/workers/ggevent.py:1);Router.dispatch (http.py:9);TokenVerifier.check (tokens.py:85) 30",
            "process 1;handle (gunicorn/workers/ggevent.py:1);Router.dispatch (http.py:9);line (shared/logs.py:170) 10",
            "process 1;Ticker._run (blocking.py:60) 10",
            "process 1;handle (gunicorn/workers/ggevent.py:1);SocketMixin.sendall (gevent/_socketcommon.py:1) 50",
        ]
    )
    cpu = cpu_per_request(folded, requests=100, rate_hz=100)  # a sample is 10 ms
    assert cpu["all"] == 10.0
    assert cpu["flashsale's handler (Router.dispatch)"] == 4.0
    assert cpu["  token verification"] == 3.0
    assert cpu["  access log line"] == 1.0
    assert cpu["writer threads: log lines, metric files (their waits included)"] == 1.0
    assert cpu["sending the response"] == 5.0
    assert cpu["SQLite"] == 0.0
    assert cpu_per_request(folded, requests=0) == {}
    assert top_frames("process 1;main (a.py:1) 1\nprocess 1 3\n") == [("(native code)", 0.75), ("main (a.py:1)", 0.25)]
