"""Losers and observability as the median of several alternating pairs: the rule, the order, old results, the report."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import report
from bench.config import Config
from bench.cpu import CpuUse
from bench.measure import Measure
from bench.micro import Rate, StoreRound, median_store_round
from bench.results import PairRound, Results, median_round, p99_median_round
from bench.scenarios import Bench, pair_order
from bench.targets import TARGETS
from tests.bench.test_results import m, sample


def pair_round(number: int, rps: tuple[float, float], p99: tuple[float, float]) -> PairRound:
    """A round with baseline and flashsale req/s and p99 as given; odd rounds ran the baseline first."""
    return PairRound(m(rps=rps[0], p99=p99[0]), m(rps=rps[1], p99=p99[1]), number=number, first=pair_order(number)[0])


def three_rounds() -> list[PairRound]:
    # req/s ratios 0.95, 0.85, 1.05 -> the median is round 1; p99 ratios 1.4, 1.0, 1.1 -> their own median would be 1.1
    return [
        pair_round(1, (1000, 950), (100, 140)),
        pair_round(2, (1000, 850), (100, 100)),
        pair_round(3, (1000, 1050), (100, 110)),
    ]


def test_req_s_and_p99_each_read_their_own_median_round() -> None:
    # Bug caught: the p99 target read from the round picked by req/s (a draw of the p99s, not their median:
    # 1.4 here), or either median taken from the first or the last round.
    results = sample()
    median = results.file_pair_rounds("losers", three_rounds())
    assert median.number == 1 and results.pairs["losers"].rps_ratio == 0.95
    by_p99 = results.p99_pair("losers")
    assert isinstance(by_p99, PairRound) and (by_p99.number, by_p99.p99_ratio) == (3, 1.1)
    verdicts = {t.key: (t.value(results), t.met(results)) for t in TARGETS if t.key.startswith("losers")}
    assert verdicts == {"losers": (0.95, True), "losers-p99": (1.1, True), "losers-stretch": (0.95, False)}
    assert results.figures()["order"]["losers_rps_per_process"] == 475.0  # 950 req/s over 2 workers
    # each row of the headline table is one round's, measured together, and says which
    table = report.headline_table(results)
    assert "median of 3 rounds): req/s (round 1) | 1,000 | 950 | 0.95× |" in table
    assert "median of 3 rounds): p99 (round 3) | 100 ms | 110 ms | 1.10× |" in table


def test_an_even_number_of_rounds_takes_the_lower_middle_one() -> None:
    # Bug caught: an index off by one (the upper middle flatters flashsale), or an average of two rounds' ratios.
    rounds = three_rounds()[:2]  # 0.95 and 0.85
    assert median_round(rounds).number == 2
    assert median_round(rounds[:1]).number == 1
    unmeasured = PairRound(m(rps=None), m(rps=900), number=3)
    assert median_round([*three_rounds()[:2], unmeasured]).number == 2  # a round without a ratio ranks lowest
    with pytest.raises(ValueError):
        median_round([])
    # of two p99 ratios the higher, the less flattering: 1.4 and 1.0 -> round 1
    assert p99_median_round(rounds).number == 1
    unanswered = PairRound(m(rps=900), m(rps=900, p99=None), number=3)
    assert p99_median_round([three_rounds()[1], unanswered]).number == 3  # a round without a p99 counts as the slowest


class FakeSite:
    def __init__(self, name: str) -> None:
        self.name = name
        self.masters: dict[str, int] = {}  # nothing to meter
        self.settings = SimpleNamespace(redis_url="redis://127.0.0.1:1/0")

    def env(self, sku: str, **knobs: object) -> dict[str, str]:
        return {"SITE": self.name, "SKU": sku}


def test_rounds_alternate_which_side_runs_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bug caught: the baseline always first, or a reversed round filing flashsale's run as the baseline's.
    ran: list[str] = []
    rates = {"losers-1-baseline": 1000.0, "losers-1-flashsale": 800.0, "losers-2-baseline": 1000.0}
    rates |= {"losers-2-flashsale": 1000.0, "losers-3-baseline": 1000.0, "losers-3-flashsale": 900.0}

    def run(script: str, env: dict[str, str], label: str, scenario: str, seconds: float | None) -> tuple[Any, Measure]:
        assert label.endswith(env["SITE"])  # each label's run went to its own site
        ran.append(label)
        return None, Measure(label, rps=rates[label], p99_ms=100.0)

    results = Results()
    bench = Bench(Config(pair_rounds=3), results, tmp_path, tmp_path)
    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench, "say", lambda scenario, text: None)
    sites: Any = {"baseline": FakeSite("baseline"), "flashsale": FakeSite("flashsale")}
    median = bench.pair_rounds("losers", "buyers.js", sites, "sold-out", "buyers", 20)
    assert ran == [
        "losers-1-baseline",
        "losers-1-flashsale",
        "losers-2-flashsale",
        "losers-2-baseline",
        "losers-3-baseline",
        "losers-3-flashsale",
    ]
    rounds = results.pair_rounds["losers"]
    assert [r.first for r in rounds] == ["baseline", "flashsale", "baseline"]
    assert all(r.baseline.label.endswith("baseline") and r.real.label.endswith("flashsale") for r in rounds)
    assert median.number == 3 and results.pairs["losers"] is median  # ratios 0.8, 1.0, 0.9
    assert [pair_order(n) for n in (1, 2, 3, 4)] == [("baseline", "flashsale"), ("flashsale", "baseline")] * 2


def test_quick_runs_one_pair_and_the_command_line_sets_the_rounds() -> None:
    # Bug caught: --pair-rounds parsed but never reaching the config.
    from bench.run import configure, parse

    assert configure(parse([])).pair_rounds == 5
    assert configure(parse(["--pair-rounds", "3"])).pair_rounds == 3
    assert configure(parse(["--quick"])).pair_rounds == 1


def old_results_json() -> dict[str, Any]:
    """A results.json from before the rounds: pairs of one run each, no ``pair_rounds`` key."""
    data = sample().to_json()
    del data["pair_rounds"]
    data["pairs"]["observability"] = {"baseline": m(rps=1000, p99=100).to_json(), "real": m(rps=960, p99=104).to_json()}
    return data


def test_an_old_results_json_still_loads_and_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bug caught: from_json requiring the new key, or the report assuming every pair has rounds.
    from bench import run

    results = Results.from_json(old_results_json())
    assert results.pair_rounds == {}
    assert (results.pairs["losers"].rps_ratio, results.pairs["observability"].rps_ratio) == (0.85, 0.96)
    text = report.report_markdown(results, [])
    assert "### Round by round" not in text and "median of 3 rounds" not in text
    assert "| losers flashsale | 8,500 | 850 |" in text
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "DOC", tmp_path / "performance.md")
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(old_results_json()))
    assert run.main(["--render", str(out)]) == 0
    assert "| losers after sell-out (0 VUs): req/s | 1,000 | 850 | 0.85× |" in (out / "report.md").read_text()


def test_rounds_survive_a_round_trip_through_json() -> None:
    # Bug caught: rounds lost on --render, or pairs[name] reloaded as some round other than the median.
    results = sample()
    results.file_pair_rounds("losers", three_rounds())
    again = Results.from_json(json.loads(json.dumps(results.to_json())))
    assert again.to_json() == results.to_json()
    assert again.pairs["losers"] is again.pair_rounds["losers"][0]


def test_the_report_shows_every_round_and_marks_the_median() -> None:
    # Bug caught: a report that shows only the median, hiding the spread behind it.
    results = sample()
    results.meta["config"] = {"losers_vus": 1000}
    rounds = three_rounds()
    # round 1's workers: 10,000 answers each side, 5 s of CPU on the baseline's, 5.5 s on flashsale's
    rounds[0].cpu = {"baseline": CpuUse(workers_s=5.0), "flashsale": CpuUse(workers_s=5.5)}
    rounds[0].baseline.answered = rounds[0].real.answered = 10_000
    results.file_pair_rounds("losers", rounds)
    text = report.report_markdown(results, [])
    rows = report.pair_rounds_table(results).splitlines()
    assert rows[0] == (
        "| pair | round | ran first | baseline req/s | flashsale req/s | req/s ratio | baseline p99 | flashsale p99 | p99 ratio "
        "| baseline CPU/answer | flashsale CPU/answer | CPU ratio | median of |"
    )
    assert rows[2:] == [
        "| losers | 1 | baseline | 1,000 | 950 | 0.95× | 100 ms | 140 ms | 1.40× | 0.500 ms | 0.550 ms | 1.10× | **req/s** |",
        "| losers | 2 | flashsale | 1,000 | 850 | 0.85× | 100 ms | 100 ms | 1.00× | - | - | - |  |",
        "| losers | 3 | baseline | 1,000 | 1,050 | 1.05× | 100 ms | 110 ms | 1.10× | - | - | - | **p99** |",
    ]
    again = Results.from_json(json.loads(json.dumps(results.to_json())))
    assert again.pair_rounds["losers"][0].cpu_ratio == 1.1  # the CPU survives --render
    assert "### Round by round" in text and report.pair_rounds_table(results) in text
    assert "| losers after sell-out (1,000 VUs; median of 3 rounds): req/s (round 1) | 1,000 | 950 | 0.95× |" in text
    assert "| losers flashsale, round 1 of 3 (the median by req/s) |" in text


def store_round(number: int, single: float, batched: float) -> StoreRound:
    return StoreRound(number, Rate(int(single * 5), 5.0, 4), Rate(int(batched * 5), 5.0, 4))


def test_the_store_row_is_its_median_round_and_the_title_shows_every_round() -> None:
    rounds = [store_round(1, 1500, 18_000), store_round(2, 1600, 14_400), store_round(3, 1000, 10_000)]  # 12x, 9x, 10x
    median = median_store_round(rounds)
    assert median.number == 3 and median.ratio == 10.0
    assert median_store_round(rounds[:2]).number == 2  # of two, the lower: never the flattering one
    results = Results(
        micro={
            "database": median.single.to_json(),
            "database_batched": {**median.batched.to_json(), "batch": 64},
            "store_rounds": {"median": median.number, "ratios": [r.ratio for r in rounds]},
        }
    )
    assert results.batching_ratio == 10.0
    assert "(target ≥ 10×; median of 3 rounds: 12.00×, 9.00×, 10.00×) | 1,000 | 10,000 | 10.00× |" in report.headline_table(results)
    assert "store_rounds" not in report.micro_table(results)


def test_an_a_a_observability_run_serves_both_sides_quiet() -> None:
    # Bug caught: --observability-same still turning metrics or the access log on for one side.
    from bench.run import configure, parse
    from bench.sites import observability_envs

    usual = observability_envs(configure(parse([])))
    assert usual["baseline"]["METRICS"] == "false" and usual["baseline"]["LOG_LEVEL"] == "WARNING"
    assert "METRICS" not in usual["flashsale"] and usual["flashsale"]["LOG_LEVEL"] == "INFO"  # metrics on by default
    same = observability_envs(configure(parse(["--observability-same"])))
    assert same["flashsale"] == same["baseline"] == usual["baseline"]
