"""The access log's sampler: routine answers one line in N with the count they stand for; the rest always."""

from __future__ import annotations

from shared.http import AccessSampler


def lines(sampler: AccessSampler, answers: list[tuple[str, str, int, float]], code: str | None = "sold_out") -> list[int]:
    return [
        sampler.stands_for(method, route, status, code if status >= 400 else None, elapsed) for method, route, status, elapsed in answers
    ]


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
    answers = [("POST", "/orders", 201, 0.001), ("POST", "/orders", 503, 0.001), ("GET", "/stock/<sku>", 500, 0.001)] * 3
    assert lines(sampler, answers, code="unavailable") == [1] * 9
    sampler.stands_for("POST", "/orders", 409, "sold_out", 0.001)
    assert sampler.stands_for("POST", "/orders", 409, "sold_out", 0.7) == 1  # slow: logged, whatever the sample


def test_every_one_logs_every_answer() -> None:
    assert lines(AccessSampler(every=1), [("POST", "/orders", 409, 0.001)] * 4) == [1, 1, 1, 1]


def test_a_line_stands_only_for_answers_of_its_own_code() -> None:
    # Bug caught: one "409 x100" line standing for sold_out, limit_reached and sale_not_started answers alike.
    sampler = AccessSampler(every=3, slow_seconds=1.0)
    codes = ["sold_out", "limit_reached", "sale_not_started"] * 4
    counts = [sampler.stands_for("POST", "/orders", 409, code, 0.001) for code in codes]
    by_code = {code: [n for c, n in zip(codes, counts, strict=True) if c == code] for code in set(codes)}
    assert by_code == {code: [1, 0, 0, 3] for code in codes}


def test_refusals_before_any_work_are_sampled_like_sold_out() -> None:
    # Bug caught: a stranger's made-up skus (404), tokens (401) and login floods (429) writing one line each.
    sampler = AccessSampler(every=100, slow_seconds=1.0)
    for method, route, status, code in [
        ("GET", "/stock/<sku>", 404, "unknown_sku"),
        ("GET", "other", 404, "not_found"),
        ("POST", "/orders", 401, "unauthorized"),
        ("POST", "/login", 429, "rate_limited"),
        ("POST", "/orders", 400, "invalid_request"),
    ]:
        counts = [sampler.stands_for(method, route, status, code, 0.001) for _ in range(201)]
        assert [n for n in counts if n] == [1, 100, 100], (status, code)
