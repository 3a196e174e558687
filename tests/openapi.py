"""Checks a response against docs/openapi.yaml: status documented, body valid, problem+json for errors."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC_URI = "urn:flashsale:openapi"


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


@lru_cache(maxsize=1)
def registry() -> Registry[Any]:
    return Registry().with_resources([(SPEC_URI, DRAFT202012.create_resource(spec()))])


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _resolve(pointer: str) -> tuple[str, dict[str, Any]]:
    """Follow $refs from a JSON pointer into the spec; return the final pointer and node."""
    node: Any = spec()
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    while isinstance(node, dict) and "$ref" in node:
        pointer = node["$ref"].removeprefix("#")
        return _resolve(pointer)
    return pointer, node


def check(path: str, method: str, status: int, content_type: str, body: bytes) -> None:
    """Raise AssertionError unless the answer is what the spec documents."""
    operation = f"/paths/{_escape(path)}/{method.lower()}/responses"
    responses = _resolve(operation)[1]
    key = next((k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None)
    assert key is not None, f"{method} {path}: status {status} is not documented"
    pointer, documented = _resolve(f"{operation}/{key}")
    if status >= 400:
        assert content_type.startswith("application/problem+json"), f"{status} answered {content_type}, not problem+json"
    media = documented.get("content", {})
    if not media:
        return
    kind = content_type.split(";")[0].strip()
    assert kind in media, f"{method} {path} {status}: {kind} not documented (have {list(media)})"
    validator = Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}/content/{_escape(kind)}/schema"}, registry=registry())
    errors = sorted(validator.iter_errors(json.loads(body)), key=str)
    assert not errors, f"{method} {path} {status}: {errors[0].message}"
