"""The access log's sampler: routine answers one line in N with the count they stand for; the rest always."""

from __future__ import annotations

from shared.http import AccessSampler


def lines(sampler: AccessSampler, answers: list[tuple[str, str, int, float]]) -> list[int]:
    return [sampler.stands_for(*answer) for answer in answers]


def test_refusals_are_sampled_and_every_refusal_is_accounted_for() -> None:
    sampler = AccessSampler(every=3, slow_seconds=1.0)
    counts = lines(sampler, [("POST", "/orders", 409, 0.001)] * 10)
    assert counts == [1, 0, 0, 3, 0, 0, 3, 0, 0, 3]
    assert sum(counts) == 10


def test_reads_are_sampled_per_route_and_status() -> None:
    sampler = AccessSampler(every=2, slow_seconds=1.0)
    assert lines(sampler, [("GET", "/stock/<sku>", 200, 0.001)] * 3) == [1, 0, 2]
    assert lines(sampler, [("POST", "/orders", 409, 0.001)] * 3) == [1, 0, 2]


def test_errors_orders_and_slow_answers_are_always_logged() -> None:
    sampler = AccessSampler(every=1000, slow_seconds=0.5)
    answers = [("POST", "/orders", 201, 0.001), ("POST", "/orders", 503, 0.001), ("GET", "/stock/<sku>", 404, 0.001)] * 3
    assert lines(sampler, answers) == [1] * 9
    sampler.stands_for("POST", "/orders", 409, 0.001)
    assert sampler.stands_for("POST", "/orders", 409, 0.7) == 1  # slow: logged, whatever the sample


def test_every_one_logs_every_answer() -> None:
    assert lines(AccessSampler(every=1), [("POST", "/orders", 409, 0.001)] * 4) == [1, 1, 1, 1]
