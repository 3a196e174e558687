"""The SQLite store off a gevent worker's event loop.

sqlite3 does not cooperate with gevent: a commit's fsync (``synchronous=FULL``)
or a wait for another process's write lock blocks the whole worker, and every
loser queued behind a winner's commit waits for it. Under gevent every call of
the store goes to one native thread instead (one, so the store's single
connection is only ever used from it), and the event loop keeps answering the
crowd from memory and Redis meanwhile. MongoDB needs none of this: pymongo
cooperates with gevent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.blocking import run_blocking


class OffloadedStore:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            work: Callable[[], Any] = lambda: attribute(*args, **kwargs)  # noqa: E731
            return run_blocking(work, pool_name="database", size=1)

        return call
