"""One strict JSON decoder for what a client sends: request bodies (shared/http.py) and token segments (shared/tokens.py).

A key named twice in one object is refused, at any depth: parsers disagree on
which value wins (Python's json takes the last, others the first), so a
gateway or WAF reading one would see another request than the one acted on.
``NaN`` and ``Infinity`` are refused too: they are not JSON.
"""

from __future__ import annotations

import json
from typing import Any


class RepeatedKey(ValueError):
    """An object names a key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise RepeatedKey("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
