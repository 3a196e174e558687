"""flashsale's gunicorn worker for the gevent functions (auth, stock, order): gunicorn's own, with two changes for a crowd.

A crowd is thousands of connections in the same instant. gunicorn's gevent
worker lost some of them in two ways:

* **It took one connection from the kernel per turn of its loop.** gunicorn sets
  gevent's ``max_accept`` to 1 when it runs several workers, so that one
  worker does not take a burst another could have shared. A turn of a busy
  loop serves hundreds of requests, so the kernel's accept queue (``--backlog``,
  at most ``somaxconn``) filled and the kernel refused or reset the rest. A
  worker here takes up to ``ACCEPT_BURST`` connections a turn (gevent's own
  default, 100): a crowd waits in the workers, which hold up to
  ``WORKER_CONNECTIONS`` each, instead of in a queue the kernel overflows.
* **Its deadline for a request's headers started before the client sent a byte.**
  gunicorn gives a connection its keep-alive timeout (5 s) to send a request's
  headers, from the moment its handler starts: the defence against clients
  that trickle their headers. Taken from the kernel at once, a connection
  whose client has connected but not yet written (a phone on a slow network,
  or a load generator short of CPU) spent that time before its first byte,
  and was closed unanswered, an ``EOF`` for the buyer. Here a new connection
  waits up to ``FIRST_BYTE_TIMEOUT_SECONDS`` for its first byte, and the
  deadline for the headers starts from it. A client that trickles its headers
  is still cut off 5 s after it began; one that never writes is closed after
  ``FIRST_BYTE_TIMEOUT_SECONDS``, holding a greenlet and a socket meanwhile,
  or within a second of the worker being told to stop.

Everything else is gunicorn's ``GeventWorker``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from gevent.server import StreamServer
from gunicorn import util
from gunicorn.workers import ggevent

from shared.settings import get_settings

STOPPING_CHECK_SECONDS = 1.0


class _BurstServer(StreamServer):  # type: ignore[misc]
    """gevent's StreamServer taking up to ACCEPT_BURST connections a turn, whatever gunicorn sets ``max_accept`` to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._burst = get_settings().accept_burst
        super().__init__(*args, **kwargs)

    @property
    def max_accept(self) -> int:
        return self._burst

    @max_accept.setter
    def max_accept(self, _wanted: int) -> None:
        pass  # gunicorn's 1 for several workers; ACCEPT_BURST decides


class Worker(ggevent.GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, taking connections in bursts and starting the header deadline at the first byte."""

    def run(self) -> None:
        ggevent.StreamServer = _BurstServer  # the name gunicorn's run() makes its servers with; in this worker process only
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if not self._first_byte(client):
            util.close(client)
            return
        super().handle(listener, client, addr)

    def _first_byte(self, client: Any) -> bool:
        """Whether ``client`` sent something within FIRST_BYTE_TIMEOUT_SECONDS.

        A peek: gevent's ``recv`` reads at once when a byte is there (almost
        every connection: a client writes its request as it connects), and waits
        on the loop only when none is; nothing is consumed. A worker told to stop
        stops waiting within STOPPING_CHECK_SECONDS: its graceful shutdown waits
        for every connection it holds, and a silent one would otherwise hold it
        up to gunicorn's graceful timeout.
        """
        deadline = time.monotonic() + get_settings().first_byte_timeout_seconds
        while self.alive:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            client.settimeout(min(left, STOPPING_CHECK_SECONDS))  # gunicorn's handle() makes it blocking again
            try:
                client.recv(1, socket.MSG_PEEK)  # b"" at end of stream: gunicorn's handle() sees it and closes
                return True
            except TimeoutError:
                continue
            except OSError:  # gone before its first byte
                return False
        return False
