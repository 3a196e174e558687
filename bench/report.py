"""The benchmark's written results: report.md, results.json, figures.json,
bench/results/latest.json and the generated part of docs/performance.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import Measure, ratio
from bench.results import Pair, PairRound, Results, median_round, p99_median_round
from bench.targets import TARGETS, Target

DOC_START = "<!-- bench:start -->"
DOC_END = "<!-- bench:end -->"
MISSING = "-"


# formatting --------------------------------------------------------------------
def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,.1f}{unit}" if abs(value) >= 10 else f"{value:,.2f}{unit}"


def count(value: float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def ms(value: float | None) -> str:
    return number(value, " ms")


def times(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}×"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(target: Target, results: Results) -> str:
    met = target.met(results)
    return "not measured" if met is None else ("met" if met else "**missed**")


# the tables ----------------------------------------------------------------------
def targets_table(results: Results) -> str:
    rows = [[t.claim, t.wanted, times(t.value(results)), verdict(t, results)] for t in TARGETS]
    return table(["target", "wanted", "measured", ""], rows)


def _pair_rows(name: str, pair: Pair | None, p99: Pair | None = None) -> list[list[str]]:
    """A pair's req/s row and p99 row; of a pair run in rounds each row is its own median round, named."""
    if pair is None:
        return []
    p99 = p99 or pair
    b, r = pair.baseline, pair.real

    def which(found: Pair) -> str:
        return f" (round {found.number})" if isinstance(found, PairRound) else ""

    return [
        [f"{name}: req/s{which(pair)}", number(b.rps), number(r.rps), times(pair.rps_ratio)],
        [f"{name}: p99{which(p99)}", ms(p99.baseline.p99_ms), ms(p99.real.p99_ms), times(p99.p99_ratio)],
    ]


def headline_table(results: Results) -> str:
    """The table docs/performance.md shows: every scenario, flashsale beside what it is compared with."""
    rows: list[list[str]] = []
    c = results.meta.get("config", {})
    if results.crowd:
        pick = results.crowd_pick
        title = f"crowd ({c.get('buyers', 0):,} buyers, {c.get('stock', 0):,} units; {pick} of {len(results.crowd)})"

        def both(get: Any, higher: bool) -> tuple[float | None, float | None]:
            return (
                results.crowd_value(lambda r: get(r.baseline), higher_is_better=higher),
                results.crowd_value(lambda r: get(r.real), higher_is_better=higher),
            )

        for stat in ("p50_ms", "p95_ms"):
            b, r = both(lambda m, s=stat: getattr(m, s), False)
            rows.append([f"{title}: {stat[:3]}", ms(b), ms(r), times(ratio(r, b))])
        b, r = both(lambda m: m.p99_ms, False)
        rows.append([f"{title}: p99", ms(b), ms(r), times(results.crowd_p99_ratio)])
        # Every buyer counted, a refused or reset connection as slower than any answer (per round below).
        b, r = both(lambda m: m.p99_every_ms, False)
        b_none, r_none = (
            sum(m.p99_every_measured and m.p99_every_ms is None for m in (getattr(x, side) for x in results.crowd))
            for side in ("baseline", "real")
        )
        note = f"no answer at the p99 in {b_none} and {r_none} crowds"
        rows.append([f"{title}: p99 over every buyer ({note})", ms(b), ms(r), "" if b_none or r_none else times(ratio(r, b))])
        b, r = both(lambda m: m.rps, True)
        rows.append([f"{title}: answered/s", number(b), number(r), times(results.crowd_rps_ratio)])
        b, r = both(lambda m: float(m.connection_errors), False)
        rows.append([f"{title}: connection errors", count(b), count(r), ""])
        b, r = (
            results.crowd_value(lambda round_, t=target: round_.cpu_per_answer_ms(t), higher_is_better=False)
            for target in ("baseline", "flashsale")
        )
        if b is not None and r is not None:
            rows.append([f"{title}: the function's CPU per answer", ms(b), ms(r), times(ratio(r, b))])
    rows += _pair_rows(
        f"losers after sell-out ({c.get('losers_vus', 0):,} VUs{_median_of(results, 'losers')})",
        results.pairs.get("losers"),
        results.p99_pair("losers"),
    )
    for name, pair in results.pairs.items():
        if name.startswith("stock-"):
            rows += _pair_rows(f"stock-check ({int(name.removeprefix('stock-')):,} VUs)", pair)
    rows += _pair_rows(
        f"losers, metrics and logs off (first column) vs on{_median_of(results, 'observability')}",
        results.pairs.get("observability"),
        results.p99_pair("observability"),
    )
    if results.login is not None:
        raw = results.bcrypt.get("per_second")
        rows.append(
            [
                f"login (bcrypt cost {results.meta.get('bcrypt_rounds')}): logins/s vs raw bcrypt/s",
                number(raw),
                number(results.login.rps),
                times(results.login_ratio),
            ]
        )
    single = results.micro.get("database", {}).get("per_second")
    for key, label, value in (
        ("database_batched", f"store, batched vs one order a transaction (target ≥ 10×{_store_rounds(results)})", results.batching_ratio),
        ("database_batcher", "store, through OrderBatcher vs one order a transaction", results.batcher_ratio),
    ):
        if key in results.micro:
            rows.append([label, number(single), number(results.micro[key].get("per_second")), times(value)])
    for deployment in ("split", "monolith"):
        alone, storm = results.isolation.get(f"{deployment}-alone"), results.isolation.get(f"{deployment}-storm")
        if alone and storm:
            rows.append(
                [
                    f"isolation, {deployment}: buyers' p95 alone vs in a login storm",
                    ms(alone.p95_ms),
                    ms(storm.p95_ms),
                    times(results.storm_ratio(deployment)),
                ]
            )
    return table(["scenario", "baseline (or reference)", "flashsale", "ratio"], rows)


def _median_of(results: Results, name: str) -> str:
    """How a pair run in rounds became one figure, for its title; nothing for a pair of one run (and an old results.json)."""
    rounds = results.pair_rounds.get(name, [])
    return f"; median of {len(rounds)} rounds" if len(rounds) > 1 else ""


def _store_rounds(results: Results) -> str:
    """The store row's rounds, for its title: the median reported, every round's ratio beside it."""
    ratios = results.micro.get("store_rounds", {}).get("ratios") or []
    return f"; median of {len(ratios)} rounds: " + ", ".join(times(r) for r in ratios) if len(ratios) > 1 else ""


def crowd_table(results: Results) -> str:
    rows = []
    for r in results.crowd:
        for target, m in (("baseline", r.baseline), ("flashsale", r.real)):
            others = sum(n for s, n in m.statuses.items() if s not in {"201", "409", "timeout", "connection"})
            rows.append(
                [
                    str(r.number),
                    target,
                    f"{m.answered:,}",
                    f"{m.statuses.get('201', 0):,}",
                    f"{m.statuses.get('409', 0):,}",
                    f"{m.connection_errors:,}",
                    f"{m.timeouts:,}",
                    f"{others:,}",
                    ms(m.p50_ms),
                    ms(m.p95_ms),
                    ms(m.p99_ms),
                    m.p99_every,
                    number(m.rps),
                    ms(r.start_lag_p99_ms.get(target)),
                    number(r.waited_s.get(target)),
                    number(m.load_average),
                ]
            )
    headers = [
        "round",
        "target",
        "answered",
        "201",
        "409",
        "conn. errors",
        "timeouts",
        "other",
        "p50",
        "p95",
        "p99",
        "p99, every buyer",
        "answered/s",
        "k6 start lag p99",
        "drain wait s",
        "load avg",
    ]
    return table(headers, rows)


def crowd_cpu_table(results: Results) -> str:
    rows = []
    for r in results.crowd:
        for target, m in (("baseline", r.baseline), ("flashsale", r.real)):
            use = r.cpu.get(target)
            if use is None:
                continue
            rows.append(
                [
                    str(r.number),
                    target,
                    number(use.wall_s),
                    number(round(use.machine_s / use.wall_s, 2) if use.wall_s else None),
                    ms(use.per(m.answered, use.workers_s)),
                    ms(use.per(m.answered, use.workers_kernel_s)),
                    ms(use.per(m.answered, use.workers_threads_s)),
                    ms(use.per(m.requests, use.k6_s)),
                    ms(use.per(m.answered, use.redis_s)),
                    number(use.rest_s),
                    count(use.redis_scripts),
                ]
            )
    headers = [
        "round",
        "target",
        "k6 run s",
        "busy cores",
        "function CPU per answer",
        "of which in the kernel",
        "of which on other threads",
        "k6 CPU per request",
        "redis-server CPU per answer",
        "rest CPU s",
        "Redis scripts run",
    ]
    return table(headers, rows)


def crowd_checks(results: Results) -> str:
    lines = []
    for r in results.crowd:
        marks = ", ".join(f"{'✓' if ok else '✗'} {name}" for name, ok in r.checks.items())
        lines.append(f"- round {r.number}: {marks}")
    return "\n".join(lines)


def measure_row(name: str, m: Measure) -> list[str]:
    failed = m.requests - m.answered
    return [
        name,
        f"{m.answered:,}",
        number(m.rps),
        ms(m.p50_ms),
        ms(m.p95_ms),
        ms(m.p99_ms),
        ms(m.max_ms),
        f"{failed:,}",
        number(m.load_average),
    ]


MEASURE_HEADERS = ["run", "answered", "req/s", "p50", "p95", "p99", "max", "no answer", "load avg"]


def sustained_table(results: Results) -> str:
    rows = []
    for name, pair in results.pairs.items():
        rounds = results.pair_rounds.get(name, [])
        which = f", round {pair.number} of {len(rounds)} (the median by req/s)" if len(rounds) > 1 and isinstance(pair, PairRound) else ""
        rows.append(measure_row(f"{name} baseline{which}", pair.baseline))
        rows.append(measure_row(f"{name} flashsale{which}", pair.real))
    if results.login is not None:
        rows.append(measure_row("login flashsale", results.login))
    return table(MEASURE_HEADERS, rows)


def pair_rounds_table(results: Results) -> str:
    """Every round of the pairs run in rounds, so the spread behind each median shows."""
    rows = []
    for name, rounds in results.pair_rounds.items():
        by_rps, by_p99 = median_round(rounds), p99_median_round(rounds)  # what the req/s and p99 rows read
        for r in rounds:
            rows.append(
                [
                    name,
                    str(r.number),
                    r.first,
                    number(r.baseline.rps),
                    number(r.real.rps),
                    times(r.rps_ratio),
                    ms(r.baseline.p99_ms),
                    ms(r.real.p99_ms),
                    times(r.p99_ratio),
                    cpu_ms(r.cpu_per_answer_ms("baseline")),
                    cpu_ms(r.cpu_per_answer_ms("flashsale")),
                    times(r.cpu_ratio),
                    ", ".join(f"**{what}**" for what, median in (("req/s", by_rps), ("p99", by_p99)) if r is median),
                ]
            )
    headers = [
        "pair",
        "round",
        "ran first",
        "baseline req/s",
        "flashsale req/s",
        "req/s ratio",
        "baseline p99",
        "flashsale p99",
        "p99 ratio",
        "baseline CPU/answer",
        "flashsale CPU/answer",
        "CPU ratio",
        "median of",
    ]
    return table(headers, rows)


PAIR_ROUNDS_NOTE = (
    "Losers and observability run as several pairs, the order alternating (odd rounds the baseline first, even rounds "
    "flashsale first). Each of their rows, and each target, reads its own median round: the round whose req/s ratio is the "
    "median for req/s, the round whose p99 ratio is the median for p99 (of an even number of rounds, the less flattering "
    "of the two middle ones), as the crowd's targets read the median of each ratio. For observability "
    "the baseline is flashsale with metrics and logs off. The store row runs in rounds the same way (one order a "
    "transaction, then batched; the next round the other way round), its median ratio reported."
)


def isolation_table(results: Results) -> str:
    rows = [measure_row(f"buyers, {name}", m) for name, m in results.isolation.items()]
    rows += [measure_row(f"storm logins, {name}", m) for name, m in results.storm_logins.items()]
    return table(MEASURE_HEADERS, rows)


def seed_table(results: Results) -> str:
    real, base, ref = (results.seed_matrix.get(k, {}) for k in ("flashsale", "baseline", "reference"))
    rows = []
    for fn in ("auth", "stock", "order"):
        f, b, rf = real.get(fn, {}), base.get(fn, {}), ref.get(fn, {})
        rows.append(
            [
                fn,
                number(f.get("rps")),
                ms(f.get("avg_ms")),
                ms(f.get("p95_ms")),
                number(rf.get("rps")),
                ms(rf.get("avg_ms")),
                number(b.get("rps")),
                ms(b.get("avg_ms")),
            ]
        )
    return table(["function", "req/s", "avg", "p95", "original req/s", "original avg", "baseline req/s", "baseline avg"], rows)


def micro_table(results: Results) -> str:
    rows = []
    labels = {
        "bcrypt": "bcrypt.checkpw",
        "gate": "Gate.admit (Lua, real redis-server)",
        "database": "SqliteStore.place_order (one file)",
        "database_batched": f"SqliteStore.place_orders, {results.micro.get('database_batched', {}).get('batch')} a call (per order)",
        "database_batcher": f"OrderBatcher.place_order, {results.micro.get('database_batcher', {}).get('threads')} threads a process",
    }
    for key, rate in (("bcrypt", results.bcrypt), *results.micro.items()):
        if rate and key in labels:  # store_rounds is the ratios of the store row, shown in the summary
            rows.append(
                [
                    labels.get(key, key),
                    str(rate.get("processes")),
                    f"{rate.get('calls', 0):,}",
                    number(rate.get("per_second")),
                    ms(rate.get("ms_per_call")),
                ]
            )
    return table(["call", "processes", "calls", "per second", "per call"], rows)


def profiles_section(results: Results) -> str:
    if not results.profiles:
        return "No target was missed, or profiling was off: no profile taken."
    parts = [PROFILE_NOTE]
    for entry in results.profiles:
        runs: dict[str, dict[str, Any]] = entry.get("runs", {})
        lines = [f"### {entry.get('kind')} ({entry.get('function')} workers)"]
        links = [f"[{who} flame graph]({run['svg']})" for who, run in runs.items() if run.get("svg")]
        notes = [f"{who}: {run['note']}" for who, run in runs.items() if run.get("note")]
        lines += [" · ".join(links)] if links else []
        lines += notes
        steps = list(next((run["cpu_ms"] for run in runs.values() if run.get("cpu_ms")), {}))
        if steps:
            who = list(runs)
            rows = [[_step(step), *(cpu_ms(runs[w].get("cpu_ms", {}).get(step)) for w in who)] for step in steps]
            lines.append(table(["CPU per request", *who], rows))
        for w, run in runs.items():
            if run.get("top"):
                lines.append(f"Where {w}'s samples landed (own time, the leaf frame of each sample):")
                lines.append(table(["frame", "share"], [[f"`{frame}`", f"{share:.1%}"] for frame, share in run["top"]]))
        parts.append("\n\n".join(lines))
    return "\n\n".join(parts)


def cpu_ms(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f} ms"


def _step(name: str) -> str:
    """Steps inside flashsale's handler are indented in profile.STEPS; a table cell would lose the indent."""
    return f"↳ {name.strip()}" if name.startswith(" ") else name


PROFILE_NOTE = (
    "For each missed target its load ran once more, on the baseline and on flashsale, while py-spy sampled the "
    "function's workers (100 samples a second, idle left out). CPU per request is the samples whose stack passes "
    "through a step, over the requests the load made; indented steps are inside flashsale's handler and may overlap."
)


def machine_line(results: Results) -> str:
    m = results.meta.get("machine", {})
    return (
        f"{results.meta.get('cpus')} CPUs ({m.get('processor') or m.get('platform', '?')}), Linux {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}, {m.get('k6', 'k6 ?')}; somaxconn {m.get('somaxconn', '?')}, "
        f"tcp_max_syn_backlog {m.get('tcp_max_syn_backlog', '?')}; load average {m.get('load_average_start', '?')} at the start, "
        f"{m.get('load_average_end', '?')} at the end"
    )


# the files ------------------------------------------------------------------------
def report_markdown(results: Results, charts: Sequence[str]) -> str:
    meta = results.meta
    sections = [
        f"# flashsale benchmark, {meta.get('measured_at')}",
        f"`{meta.get('command')}` in {number(meta.get('duration_s'))} s on {machine_line(results)}. "
        "Every figure was measured in this run; each ratio is flashsale over what it is compared with, "
        "measured back to back on the same machine.",
        "## Targets",
        targets_table(results),
        "## Results",
        headline_table(results),
    ]
    if results.crowd:
        sections += [
            "## The crowd, round by round",
            "Latency is over the requests that got an answer; a connection the kernel refused or reset "
            "(its accept queue overflowing) is counted apart, as is a timeout.",
            crowd_table(results),
            crowd_checks(results),
        ]
        if any(r.cpu for r in results.crowd):
            sections += [
                "### Where the cores went",
                "CPU time over each crowd's k6 run: the gunicorn group serving the crowd (the order function, or the "
                "baseline served as it is), k6 itself, redis-server, and the rest of the machine's busy time "
                "(the other functions, the kernel's own work, anything else running). Other threads: the workers' threads "
                "beside the one serving requests (the log writer, the database thread); a profiler counts their waits, this "
                "counts their CPU. Redis scripts run: every press that "
                "reached the gate is one (a release or a close is another). Busy cores: the machine's busy "
                "time over the run's wall time, out of "
                f"{results.meta.get('cpus', '?')}.",
                crowd_cpu_table(results),
            ]
    if results.pairs or results.login:
        sections += ["## Sustained load", sustained_table(results)]
    if results.pair_rounds:
        sections += ["### Round by round", PAIR_ROUNDS_NOTE, pair_rounds_table(results)]
    if results.isolation:
        sections += ["## Isolation", isolation_note(results), isolation_table(results)]
    if results.seed_matrix:
        sections += ["## The original's table (seed-matrix)", SEED_NOTE, seed_table(results)]
    if results.bcrypt or results.micro:
        sections += ["## Micro-benchmarks", micro_table(results)]
    sections += [
        "## Per-process figures (`figures.json`)",
        FIGURES_NOTE,
        "```json\n" + json.dumps(results.figures(), indent=2) + "\n```",
        "## Profiles",
        profiles_section(results),
    ]
    if charts:
        sections += ["## Charts", "\n\n".join(f"![{Path(c).stem}]({c})" for c in charts)]
    if results.notes:
        sections += ["## Notes", "\n".join(f"- {n}" for n in results.notes)]
    return "\n\n".join(sections) + "\n"


SEED_NOTE = (
    "Each function in turn with the same users pausing 3 s between requests, as the original's figures imply; "
    "the baseline column shows what the pause alone allows."
)
FIGURES_NOTE = (
    "Per process: divided by the gunicorn workers serving the function. `order.p99_ms` is the crowd's p99; "
    "`stock` is the busier stock-check run; `auth` divides logins by the CPUs auth's workers use."
)


def isolation_note(results: Results) -> str:
    iso = results.meta.get("isolation", {})
    return (
        f"Buyers check out at {iso.get('buy_rate', '?')} buys/s (open loop, every buy a 201 on a fresh sale), alone and then "
        f"while {iso.get('storm_vus', '?')} users log in without pause. Split: {iso.get('split', '?')}. "
        f"Monolith: {iso.get('monolith', '?')}."
    )


def docs_block(results: Results, folder: str) -> str:
    return "\n\n".join(
        [
            DOC_START,
            f"Latest run: {results.meta.get('measured_at')}, `{results.meta.get('command')}`, on {machine_line(results)}. "
            f"Full report and charts in `bench/results/{folder}/` (not committed).",
            "#### Targets",
            targets_table(results),
            "#### Results",
            headline_table(results),
            "#### The original's table (seed-matrix)",
            seed_table(results),
            "#### Per-process figures (`bench/results/latest.json`)",
            "```json\n" + json.dumps(results.figures(), indent=2) + "\n```",
            DOC_END,
        ]
    )


def update_docs(doc: Path, block: str) -> None:
    """Replace the generated block of docs/performance.md, keeping the text around it."""
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{DOC_START}\n{DOC_END}\n"
    if DOC_START not in text or DOC_END not in text:
        text = text.rstrip() + f"\n\n## Latest results\n\n{DOC_START}\n{DOC_END}\n"
    head, _, rest = text.partition(DOC_START)
    _, _, tail = rest.partition(DOC_END)
    doc.write_text(head + block + tail)


def write(results: Results, out: Path, charts: Sequence[str], *, latest: Path | None, doc: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=2))
    figures = json.dumps(results.figures(), indent=2) + "\n"
    (out / "figures.json").write_text(figures)
    (out / "report.md").write_text(report_markdown(results, charts))
    if latest is not None:
        latest.write_text(figures)
    if doc is not None:
        update_docs(doc, docs_block(results, out.name))
