"""A threaded stdlib HTTP/1.1 server that only moves bytes: it parses a request, asks a
``respond(request) -> reply`` callable, and performs the reply (see :mod:`.exchange`).

Keep-alive with TCP_NODELAY and one send per answer, SSE streams that close the connection,
RST on request, and a ``stop()`` that wakes delayed replies and cuts idle keep-alives.
FakeDify's default is the asyncio server (:mod:`.asyncio_server`, same behaviour, ~2x the
requests per CPU second and no thread per connection); this one stays selectable
(``FakeDify(server="threaded")``) as the reference the asyncio one is tested against.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from airflow_dify.testing import wire
from airflow_dify.testing.exchange import Reply, Request, Response, Stream

log = logging.getLogger("airflow_dify.testing")
Respond = Callable[[Request], Reply]


class ThreadedHTTPServer(ThreadingHTTPServer):
    """Serves ``respond`` on ``address``; remembers open connections so :meth:`stop` can cut them.

    :param address: (host, port); port 0 picks a free one.
    :param respond: the request handler, called on the connection's thread.
    """

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], respond: Respond) -> None:
        self.respond = respond
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._accepted = 0
        self._thread: threading.Thread | None = None
        super().__init__(address, _Connection)

    def start(self) -> None:
        """Serve from a daemon thread (``serve_forever``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="FakeDify", daemon=True
            )
            self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def accepted(self) -> int:
        """TCP connections accepted so far."""
        return self._accepted

    def track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._open.add(sock)
                self._accepted += 1
            else:
                self._open.discard(sock)

    def wait(self, seconds: float) -> None:
        """A reply's delay; returns early once stopping, so stop() never waits for slow fake calls."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def stop(self) -> None:
        """Stop accepting, wake delayed replies, cut open keep-alive connections, close the socket."""
        self._stopping.set()
        self.shutdown()
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Connection(BaseHTTPRequestHandler):
    """One client connection: parse each request, perform its reply."""

    protocol_version = "HTTP/1.1"
    server_version = wire.SERVER
    sys_version = ""
    timeout = 300  # idle keep-alive connections are dropped after this
    server: ThreadedHTTPServer

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError) as err:
            # Clients hang up mid-stream (timeouts, tests); that is normal for a fake server.
            log.debug("connection ended: %s", err)
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        received = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        # First occurrence wins, as with the message's own get().
        headers = {name.lower(): value for name, value in reversed(self.headers.items())}
        target = urlsplit(self.path)
        reply = self.server.respond(Request(self.command, target.path, headers, body, received, target.query))
        try:
            self.server.wait(reply.delay)
            send = reply.send
            if isinstance(send, Response):
                self._answer(reply, send)
            elif isinstance(send, Stream):
                self._stream(reply, send)
            else:  # Reset
                self._reset(reply)
        finally:
            reply.close()

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        self.log_request(status)
        return wire.head(status, headers)

    def _answer(self, reply: Reply, response: Response) -> None:
        """Headers and body in one send: no Nagle stall even without TCP_NODELAY."""
        headers, self.close_connection = response.sent_headers(bool(self.close_connection))
        data = self._head(response.status, headers) + response.body
        reply.commit()
        self.wfile.write(data)

    def _stream(self, reply: Reply, stream: Stream) -> None:
        """Frames due at once share a send; the end of the stream is the end of the connection."""
        self.close_connection = True
        pending = self._head(stream.status, {**stream.headers, "Connection": "close"})
        last = len(stream.frames) - 1
        for i, frame in enumerate(stream.frames):
            if frame.delay > 0:
                if pending:
                    self.wfile.write(pending)
                    pending = b""
                self.server.wait(frame.delay)
            if i == last:
                reply.commit()
            pending += frame.data
        if last < 0:
            reply.commit()
        self.wfile.write(pending)

    def _reset(self, reply: Reply) -> None:
        """Abort with RST (SO_LINGER 0) and no response, like a crashed proxy."""
        self.close_connection = True
        self.log_request("RST")
        reply.commit()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
