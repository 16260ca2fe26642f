"""HTTP/1.1 plumbing for FakeDify: keep-alive, one-send responses, SSE streams, socket resets."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_dify.testing import api
from airflow_dify.testing.faults import TOKEN_PATH

if TYPE_CHECKING:
    from airflow_dify.testing.server import FakeDify

log = logging.getLogger("airflow_dify.testing")
_EXTRA_REASONS = {524: "A Timeout Occurred"}


class FakeDifyHTTPServer(ThreadingHTTPServer):
    """Threaded server that remembers its open connections so ``stop()`` can cut idle keep-alives."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeDify) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self.accepted = 0
        super().__init__(address, FakeDifyHandler)

    def track(self, sock: socket.socket, add: bool) -> None:
        with self.fake._lock:
            if add:
                self._open.add(sock)
                self.accepted += 1
            else:
                self._open.discard(sock)

    def close_connections(self) -> None:
        with self.fake._lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FakeDifyHandler(BaseHTTPRequestHandler):
    """Parses a request, hands it to :mod:`api`, and writes answers in a single send."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeDify/0.1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are dropped after this
    server: FakeDifyHTTPServer

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
        fake = self.server.fake
        started = time.monotonic()
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        self._ex = None
        self._sent = False
        if path == TOKEN_PATH:
            api.serve_token(fake, self, raw)
            return
        v1 = path.startswith("/v1/")
        self._ex = ex = api.Exchange(self.command, path[3:] if v1 else path, started)
        try:
            if v1:
                api.serve_v1(fake, self, ex, raw)
            else:
                api.not_found(self, ex)
        except (ConnectionError, TimeoutError):
            raise
        except Exception:
            # A bug in the fake must look like a server error, not hang the client.
            log.exception("FakeDify failed on %s %s", self.command, path)
            if not self._sent:
                ex.status = 500
                ex.response = {"code": "internal_server_error", "message": "FakeDify bug", "status": 500}
                self.close_connection = True
                self.send_json(500, ex.response)
        finally:
            self._commit()

    def _commit(self) -> None:
        """Record the exchange once, just before its last bytes go out, so a client that has its
        answer always finds the request in ``fake.requests``."""
        ex, self._ex = self._ex, None
        if ex is not None:
            self.server.fake._record(ex, time.monotonic())

    # -- writing ---------------------------------------------------------------------------------
    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = self.responses.get(status, (_EXTRA_REASONS.get(status, ""),))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.log_request(status)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        """Headers and body in one write: no Nagle stall even without TCP_NODELAY."""
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        if self.close_connection:
            all_headers["Connection"] = "close"
        data = self._head(status, all_headers) + body
        self._sent = True
        self._commit()
        self.wfile.write(data)

    def send_json(self, status: int, body: Any, headers: dict | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def start_stream(self) -> None:
        # No Content-Length: the end of the stream is the end of the connection.
        self.close_connection = True
        self._sent = True
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "Connection": "close",
            "X-Accel-Buffering": "no",
        }
        self.wfile.write(self._head(200, headers))

    def write_raw(self, data: bytes) -> None:
        self.wfile.write(data)

    def end_stream(self, last: bytes = b"") -> None:
        """Write the final frame (after recording the exchange)."""
        self._commit()
        if last:
            self.wfile.write(last)

    def reset_connection(self) -> None:
        """Abort with RST (SO_LINGER 0) and no response, like a crashed proxy."""
        self.close_connection = True
        self._sent = True
        self.log_request("RST")
        self._commit()
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
