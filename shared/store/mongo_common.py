"""What the MongoDB store's modules share: the document type, and the wrapper that makes a MongoDB failure a StoreError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo.errors import PyMongoError

from shared.errors import StoreError

Doc = dict[str, Any]


@contextmanager
def _unavailable() -> Iterator[None]:
    """A MongoDB failure inside the block as StoreError: the request was fine, the database was not (503)."""
    try:
        yield
    except PyMongoError as exc:
        raise StoreError(str(exc)) from exc
