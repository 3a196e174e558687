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
* **A worker told to stop dropped what it had taken.** Scale-down, a rollout or
  a worker restart sends SIGTERM; gunicorn's loop went on accepting for up to
  a second, and a connection taken meanwhile was closed unanswered (a reset
  for the buyer). Here the worker stops accepting as soon as the signal is
  handled, takes the connections the kernel has already queued for it, and
  closes its copy of the listening socket: the kernel hands new connections
  to the other workers, or, when the whole pod stops, refuses them at once
  instead of queueing them for nobody and resetting them at the exit. Every
  connection it took is served: its request is read (a byte already there is
  seen at once; one still on its way gets up to ``STOPPING_CHECK_SECONDS``)
  and answered with ``Connection: close``, as gunicorn answers every request
  of a stopping worker.

Everything else is gunicorn's ``GeventWorker``.
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.server import StreamServer
from gevent.socket import wait_read
from gunicorn import util
from gunicorn.workers import ggevent

from shared.settings import get_settings

STOPPING_CHECK_SECONDS = 1.0


class _BurstServer(StreamServer):  # type: ignore[misc]
    """gevent's StreamServer taking up to ACCEPT_BURST connections a turn, whatever gunicorn sets ``max_accept`` to."""

    def __init__(self, *args: Any, started: Callable[[_BurstServer], None] | None = None, **kwargs: Any) -> None:
        self._burst = get_settings().accept_burst
        super().__init__(*args, **kwargs)
        if started is not None:
            started(self)

    @property
    def max_accept(self) -> int:
        return self._burst

    @max_accept.setter
    def max_accept(self, _wanted: int) -> None:
        pass  # gunicorn's 1 for several workers; ACCEPT_BURST decides


class _NamedListener:
    """A listening socket as gunicorn's handler uses it, its name read once.

    gunicorn asks the listener for its name at every connection; a worker that
    is stopping has closed its copy of the socket (``Worker._stop_accepting``)
    while it still serves what it took, and the real socket would answer EBADF.
    """

    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self._name = listener.getsockname()

    def getsockname(self) -> Any:
        return self._name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)


class Worker(ggevent.GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, taking connections in bursts and starting the header deadline at the first byte."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._servers: list[_BurstServer] = []
        self._named: dict[Any, _NamedListener] = {}  # each listening socket -> what gunicorn's handler is given for it

    def run(self) -> None:
        # The name gunicorn's run() makes its servers with; in this worker process only.
        ggevent.StreamServer = functools.partial(_BurstServer, started=self._servers.append)
        self._named = {listener: _NamedListener(listener) for listener in self.sockets}
        super().run()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop taking connections now, not at the run loop's next turn (up to a second later).

        gunicorn closes the servers only when its loop wakes; meanwhile this
        worker would take connections the other workers could serve. A
        greenlet does it: a signal handler must not touch the loop's watchers
        from whatever greenlet it interrupted (gunicorn's handle_quit does the same).
        """
        super().handle_exit(sig, frame)
        gevent.spawn(self._stop_accepting)

    def _stop_accepting(self) -> None:
        """Take what the kernel has already queued for us, then close our copy of the listening socket.

        Stopping the watcher alone left the socket open until the worker
        exited: the kernel went on completing connections into its queue,
        which nobody accepted, and reset them all at the exit (a pod stopped
        while it still had traffic: 70 presses without an answer in the
        rehearsal). Closed, the socket refuses new connections at once once
        no process holds it (the master closes its copy before it signals
        its workers), and a proxy can send them elsewhere; while another
        worker holds it, that worker takes them.
        """
        for server in self._servers:
            if server.closed:
                continue  # run() got there first
            server.stop_accepting()
            try:
                while (accepted := server.do_read()) is not None:  # None: the queue is empty
                    server.do_handle(*accepted)  # served, and answered with Connection: close
            except OSError:
                pass  # the socket is already closed
            server.close()  # run() closes it again later: a second close does nothing

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if not self._first_byte(client):
            util.close(client)
            return
        super().handle(self._named.get(listener, listener), client, addr)

    def _first_byte(self, client: Any) -> bool:
        """Whether ``client`` sent something within FIRST_BYTE_TIMEOUT_SECONDS.

        A peek: gevent's ``recv`` reads at once when a byte is there (almost
        every connection: a client writes its request as it connects), and waits
        on the loop only when none is; nothing is consumed. A worker told to stop
        stops waiting within STOPPING_CHECK_SECONDS: its graceful shutdown waits
        for every connection it holds, and a silent one would otherwise hold it
        up to gunicorn's graceful timeout. A stopping worker still looks: a
        connection it took has a client waiting for an answer, and its request
        is usually there already.
        """
        deadline = time.monotonic() + get_settings().first_byte_timeout_seconds
        while True:
            if not self.alive:
                deadline = min(deadline, time.monotonic() + STOPPING_CHECK_SECONDS)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(left, STOPPING_CHECK_SECONDS)
            try:
                if isinstance(client, ssl.SSLSocket):
                    # TLS (--certfile): an SSLSocket takes no recv flags, and before gunicorn's handshake
                    # nothing can be read through it. The first byte is the client's hello, on the socket.
                    wait_read(client.fileno(), wait, TimeoutError)
                else:
                    client.settimeout(wait)  # gunicorn's handle() makes it blocking again
                    client.recv(1, socket.MSG_PEEK)  # b"" at end of stream: gunicorn's handle() sees it and closes
                return True
            except TimeoutError:
                continue
            except OSError:  # gone before its first byte
                return False
