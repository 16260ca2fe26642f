"""An asyncio HTTP/1.1 server (uvloop when installed) that only moves bytes, like
:mod:`.http_server`: it parses a request, asks a ``respond(request) -> reply`` callable, and
performs the reply (see :mod:`.exchange`), on one event loop in one thread.

A reply due at once is answered inside ``data_received``, with no task: that is the path that
lets one core serve thousands of calls a second. A delayed reply or a stream gets a task whose
waits are loop timers, so 1,024 slow calls cost 1,024 timers, not 1,024 threads. Everything else
matches the threaded server: keep-alive with TCP_NODELAY and one send per answer, SSE streams
that close the connection, RST on request, stdlib-style 400/501 pages, idle keep-alives dropped
after 300 s, and a ``stop()`` that wakes delayed replies and cuts idle keep-alives. One client
connection is :class:`.asyncio_connection.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable

from airflow_dify.testing.asyncio_connection import Connection
from airflow_dify.testing.exchange import Reply, Request

Respond = Callable[[Request], Reply]
THREAD_NAME = "FakeDify"  # the loop thread: the bench reads its CPU by this name
IDLE_TIMEOUT = 300.0  # seconds an idle keep-alive connection stays open, as the threaded server
_SWEEP_EVERY = 30.0
_STOP_GRACE = 5.0  # seconds stop() lets woken replies finish before cutting connections


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (measured faster), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class AsyncioHTTPServer:
    """Serves ``respond`` on ``address`` from an event loop in its own thread.

    :param address: (host, port); port 0 picks a free one. Bound at construction, so
        :attr:`port` is known before :meth:`start`.
    :param respond: the request handler, called on the loop's thread; it must not block.
    :param loop_factory: makes the event loop (default: uvloop when installed).
    """

    def __init__(
        self,
        address: tuple[str, int],
        respond: Respond,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_loop,
    ) -> None:
        self.respond = respond
        self._loop_factory = loop_factory
        self._sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(address)
            self._sock.listen(1024)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._port = int(self._sock.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self.stopping = False
        self.accepted = 0
        """TCP connections accepted so far."""
        self.open: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._sleepers: set[asyncio.Future[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    # -- lifecycle (caller's thread) ---------------------------------------------------------------
    def start(self) -> None:
        """Serve from a daemon thread; returns once the server accepts connections."""
        if self._thread is not None:
            return
        ready = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failed), name=THREAD_NAME, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failed:
            raise failed[0]

    def stop(self) -> None:
        """Stop accepting, wake delayed replies (they answer at once, as in the threaded server),
        then cut open connections and close the socket."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            self._sock.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            done = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                done.result(timeout=_STOP_GRACE + 5)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._thread = None

    def _run(self, ready: threading.Event, failed: list[BaseException]) -> None:
        loop = self._loop = self._loop_factory()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                loop.create_server(lambda: Connection(self), sock=self._sock, backlog=1024)
            )
            loop.call_later(_SWEEP_EVERY, self._sweep)
        except BaseException as err:  # reported to start()
            failed.append(err)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._sock.close()

    async def _shutdown(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for sleeper in list(self._sleepers):
            if not sleeper.done():
                sleeper.set_result(None)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=_STOP_GRACE)
        for task in list(self.tasks):  # still running after the grace: cut
            task.cancel()
        for conn in list(self.open):
            conn.cut()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    # -- on the loop ---------------------------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        """A reply's delay on a loop timer; returns early once stopping (stop() never waits for
        slow fake calls)."""
        if seconds <= 0 or self.stopping:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        self._sleepers.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._sleepers.discard(waiter)

    def _sweep(self) -> None:
        """Drop keep-alive connections idle for longer than IDLE_TIMEOUT."""
        if self.stopping or self._loop is None:
            return
        cutoff = time.monotonic() - IDLE_TIMEOUT
        for conn in list(self.open):
            if not conn.busy and conn.last_active < cutoff:
                conn.cut()
        self._loop.call_later(_SWEEP_EVERY, self._sweep)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
