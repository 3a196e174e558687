"""shared.serving as gunicorn's config module: its hooks, and a clean metrics directory per process group."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.config import Config

from shared import serving
from shared.settings import Settings


def test_the_config_module_sets_only_its_hooks() -> None:
    settings = set(Config().settings)
    taken = {name for name in vars(serving) if name in settings}
    assert taken == {"post_worker_init", "child_exit", "on_exit"}, taken


def test_gunicorn_loads_the_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn parses the argv shared.serving gives it, as it would at start, and takes the module's hooks."""
    monkeypatch.setattr(sys, "argv", serving.gunicorn_argv("order", Settings.from_env({})))
    app = WSGIApplication()  # parses sys.argv and loads --config, as `gunicorn` does before it forks
    assert app.cfg.post_worker_init is serving.post_worker_init
    assert app.cfg.child_exit is serving.child_exit
    assert app.cfg.on_exit is serving.on_exit
    assert app.cfg.worker_class_str == "shared.gevent_worker.Worker"
    assert app.cfg.workers == serving.worker_plan("order", Settings.from_env({})).workers


def test_a_given_metrics_dir_is_emptied_of_old_counts(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "histogram_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    chosen = serving.metrics_dir("order", Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}))
    assert chosen == tmp_path and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_without_one_each_group_gets_a_fresh_directory_removed_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    first = serving.metrics_dir("order", Settings.from_env({}))
    second = serving.metrics_dir("order", Settings.from_env({}))
    assert first != second and not any(first.iterdir())
    for directory in (first, second):
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        serving.on_exit(server=None)
        assert not directory.exists()


def test_on_exit_leaves_a_chosen_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    serving.on_exit(server=None)
    assert tmp_path.exists()
