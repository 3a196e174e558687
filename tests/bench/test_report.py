"""The written report: tables from a run's figures, and the generated block of docs/performance.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import charts, report
from bench.results import Results
from tests.bench.test_results import sample


def test_headline_table_sets_flashsale_beside_its_baseline() -> None:
    table = report.headline_table(sample())
    assert "| losers after sell-out" in table
    assert "| 1,000 | 850 | 0.85× |" in table
    assert "logins/s vs raw bcrypt/s | 8.00 | 7.00 | 0.88× |" in table
    assert "isolation, monolith" in table and "300.00×" in table
    assert "| store, batched vs one order a transaction (target ≥ 10×) | 1,500 | 18,000 | 12.00× |" in table
    assert "| store, through OrderBatcher vs one order a transaction | 1,500 | 6,000 | 4.00× |" in table
    assert "batched" not in report.headline_table(Results())


def test_targets_table_marks_misses() -> None:
    table = report.targets_table(sample())
    assert table.count("**missed**") == 5  # crowd p99, losers req/s, losers p99, the stretch, login
    assert "not measured" in report.targets_table(Results())


def test_a_partial_run_still_renders() -> None:
    text = report.report_markdown(Results(meta={"command": "python -m bench.run --only micro"}), [])
    assert text.startswith("# flashsale benchmark")
    assert "## The crowd" not in text


def test_docs_keep_their_own_text_around_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nmethod, written by hand\n\n{report.DOC_START}\nold table\n{report.DOC_END}\n\nfindings\n")
    report.update_docs(doc, report.docs_block(sample(), "20261125T080000Z"))
    text = doc.read_text()
    assert "method, written by hand" in text and "findings" in text
    assert "old table" not in text
    assert text.count(report.DOC_START) == 1 and "bench/results/20261125T080000Z/" in text


def test_docs_without_markers_get_a_block_appended(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n")
    report.update_docs(doc, report.docs_block(Results(), "x"))
    assert doc.read_text().startswith("# Performance\n") and report.DOC_END in doc.read_text()


def test_write_puts_every_file_in_place(tmp_path: Path) -> None:
    results = sample()
    out, latest = tmp_path / "run", tmp_path / "latest.json"
    drawn = charts.draw(results, out)
    report.write(results, out, drawn, latest=latest, doc=None)
    assert {"results.json", "figures.json", "report.md", "latency.png", "requests-per-second.png", "status-codes.png"} <= {
        p.name for p in out.iterdir()
    }
    assert latest.read_text() == (out / "figures.json").read_text()


def test_profiles_show_cpu_per_request_beside_the_baseline() -> None:
    results = sample()
    results.profiles.append(
        {
            "kind": "losers",
            "function": "order",
            "runs": {
                "baseline": {"svg": "profile-losers-baseline.svg", "cpu_ms": {"all": 0.78, "  token verification": 0.0}, "top": []},
                "flashsale": {"svg": None, "note": "py-spy could not attach: denied", "cpu_ms": {}, "top": [["verify (jwt.py:1)", 0.2]]},
            },
        }
    )
    section = report.profiles_section(results)
    assert "### losers (order workers)" in section
    assert "| ↳ token verification | 0.000 ms | - |" in section
    assert "flashsale: py-spy could not attach: denied" in section
    assert "[baseline flame graph](profile-losers-baseline.svg)" in section


def test_render_rewrites_a_folder_from_its_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import run

    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "DOC", tmp_path / "performance.md")
    out = tmp_path / "20261125T080000Z"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(sample().to_json()))
    assert run.main(["--render", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# flashsale benchmark")
    assert not (tmp_path / "performance.md").exists()  # not the run latest.json came from
    (tmp_path / "latest.json").write_text(json.dumps(sample().figures()))
    run.main(["--render", str(out)])
    assert report.DOC_START in (tmp_path / "performance.md").read_text()
