"""The store every contract test runs against: SQLite (a real file), MongoDB's queries through
mongomock, and a real MongoDB when FLASHSALE_TEST_MONGODB_URI is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import mongomock
import pytest

from shared.store.base import Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SqliteStore

STORES = ["sqlite", "mongomock"] + (["mongodb"] if os.environ.get("FLASHSALE_TEST_MONGODB_URI") else [])


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store
    if request.param == "sqlite":
        made = SqliteStore(str(tmp_path / "contract.db"))
    elif request.param == "mongomock":
        made = MongoStore(mongomock.MongoClient(tz_aware=True)["flashsale"])
    else:
        name = f"flashsale_contract_{uuid.uuid4().hex[:8]}"
        made = MongoStore.from_url(os.environ["FLASHSALE_TEST_MONGODB_URI"], name)
    yield made
    if request.param == "mongodb" and isinstance(made, MongoStore):
        made._client.drop_database(made.db.name)
    made.close()
