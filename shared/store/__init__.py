"""The store behind one interface: SQLite embedded, MongoDB in production."""

from __future__ import annotations

from shared.settings import Settings
from shared.store.base import Store


def open_store(settings: Settings) -> Store:
    if settings.uses_mongodb:
        from shared.store.mongo import MongoStore

        return MongoStore.from_url(settings.database_url, settings.mongodb_database)
    if settings.database_url.startswith("sqlite:///"):
        from shared.store.sqlite import SqliteStore

        return SqliteStore.from_url(settings.database_url)
    raise ValueError("DATABASE_URL must start with sqlite:///, mongodb:// or mongodb+srv://")


__all__ = ["Store", "open_store"]
