from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import FIELDS, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for spec in FIELDS.values():
        default = "" if spec.default == "" else f"`{spec.default}`"
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(rows)


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("sqlite:///")
    assert not settings.uses_mongodb
    assert settings.bcrypt_rounds == 12


def test_values_are_parsed_and_checked() -> None:
    settings = Settings.from_env({"BCRYPT_ROUNDS": "10", "STOCK_CACHE_TTL_SECONDS": "0.5", "ACCESS_LOG": "yes",
                                  "DATABASE_URL": "mongodb://db:27017"})  # fmt: skip
    assert (settings.bcrypt_rounds, settings.stock_cache_ttl_seconds, settings.access_log) == (10, 0.5, True)
    assert settings.uses_mongodb


@pytest.mark.parametrize(
    "env",
    [{"BCRYPT_ROUNDS": "3"}, {"BCRYPT_ROUNDS": "ten"}, {"LOG_FORMAT": "xml"}, {"ACCESS_LOG": "maybe"}, {"MAX_BODY_BYTES": "10"}],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="BCRYPT_ROUNDS|LOG_FORMAT|ACCESS_LOG|MAX_BODY_BYTES"):
        Settings.from_env(env)


def test_every_field_has_an_environment_variable() -> None:
    assert {f for f in Settings.__dataclass_fields__} == set(FIELDS)
    assert len(Settings.env_names()) == len(FIELDS)


def test_readme_configuration_table_matches_the_settings() -> None:
    text = README.read_text()
    found = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S)
    assert found, "README lost its settings table markers"
    assert found.group(1) == settings_table(), "README's table is stale: run `python -m tests.unit.test_settings` to regenerate"


def test_nothing_else_reads_the_environment() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(p.relative_to(root))
        for folder in ("shared", "ops", "functions")
        for p in (root / folder).rglob("*.py")
        if p.name != "settings.py" and re.search(r"os\.environ|os\.getenv", p.read_text())
    ]
    # These two only pass the environment (PATH, PYTHONPATH) on to the processes they start.
    assert set(offenders) <= {"shared/serving.py", "ops/devstack.py"}, offenders


if __name__ == "__main__":
    text = README.read_text()
    text = re.sub(
        r"(<!-- settings-table:start -->\n).*?(\n<!-- settings-table:end -->)", lambda m: m.group(1) + settings_table() + m.group(2), text,
        flags=re.S,
    )  # fmt: skip
    README.write_text(text)
