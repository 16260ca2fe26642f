"""One client connection of :class:`~airflow_dify.testing.asyncio_server.AsyncioHTTPServer`:
parse each request, ask the server's ``respond``, perform the reply (at once, after a delay on a
loop timer, or as an SSE stream), in order; keep-alive, 100 Continue, chunked bodies, RST on
request, stdlib-style 400/501 pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_dify.testing import wire
from airflow_dify.testing.exchange import Reply, Request, Response, Stream

if TYPE_CHECKING:
    from airflow_dify.testing.asyncio_server import AsyncioHTTPServer

log = logging.getLogger("airflow_dify.testing")
MAX_HEAD = 65_536  # bytes of request line + headers; http.server refuses lines over 64 KiB
_RST = struct.pack("ii", 1, 0)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, head_only: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.head_only = status, message, head_only


class Connection(asyncio.Protocol):
    """One client connection: parse each request, perform its reply, in order."""

    def __init__(self, server: AsyncioHTTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # a task is performing a reply; later requests wait in buf
        self.close_after = False
        self.lost = False
        self.eof = False  # the client sent FIN: answer what it asked, then close
        self.continued = False  # 100 Continue sent for the request in buf
        self.last_active = time.monotonic()

    # -- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms to every keep-alive request.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.accepted += 1
        self.server.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.open.discard(self)
        if exc is not None:
            log.debug("connection ended: %s", exc)

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self._serve_buffered()
        elif len(self.buf) > 1 << 20 and self.transport is not None:
            self.transport.pause_reading()  # a client piling up requests behind a slow one

    def eof_received(self) -> bool | None:
        self.eof = True
        if not self.busy:
            self._close()
        return True  # keep the transport open for a reply in progress

    # -- requests --------------------------------------------------------------------------------
    def _serve_buffered(self) -> None:
        while not (self.busy or self.close_after or self.lost) and self.buf:
            try:
                request = self._parse()
            except _BadRequest as err:
                self._refuse(err)
                return
            if request is None:
                return
            self.last_active = request.received
            self._dispatch(request)
        if self.eof and not self.busy:
            self._close()

    def _parse(self) -> Request | None:
        """The next whole request in ``buf`` (consumed), or None while it is incomplete."""
        buf = self.buf
        while buf.startswith(b"\r\n"):  # stray CRLF between requests (RFC 9112 2.2)
            buf = self.buf = buf[2:]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise _BadRequest(431, "Request Header Fields Too Large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        words = lines[0].split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            raise _BadRequest(400, f"Bad request syntax ({lines[0]!r})")
        method, target, version = words
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _BadRequest(400, "Bad header line")
            name = name.strip().lower()
            if name not in headers:  # the first occurrence wins, as with the message's get()
                headers[name] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _chunked(buf, start)
            if parsed is None:
                self._continue(headers, version)
                return None
            body, start = parsed
        else:
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                raise _BadRequest(400, "Bad Content-Length") from None
            if length > 0:
                if len(buf) < start + length:
                    self._continue(headers, version)
                    return None
                body, start = buf[start : start + length], start + length
            else:
                body = b""
        self.buf, self.continued = buf[start:], False
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive"):
            self.close_after = True
        if method not in wire.METHODS:
            raise _BadRequest(501, f"Unsupported method ({method!r})", head_only=method == "HEAD")
        if "?" not in target and "#" not in target and target[:1] == "/":
            path, query = target, ""
        else:
            parts = urlsplit(target)
            path, query = parts.path, parts.query
        return Request(method, path, headers, body, time.monotonic(), query)

    def _continue(self, headers: dict[str, str], version: str) -> None:
        """``Expect: 100-continue`` (HTTP/1.1): invite the body, as http.server does."""
        if (
            not self.continued
            and version != "HTTP/1.0"
            and headers.get("expect", "").lower() == "100-continue"
        ):
            self.continued = True
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _dispatch(self, request: Request) -> None:
        try:
            reply = self.server.respond(request)
        except Exception:
            # The threaded server drops the connection when the handler raises; so does this one.
            log.exception("FakeDify handler failed on %s %s", request.method, request.path)
            self.cut()
            return
        send = reply.send
        if reply.delay <= 0 and type(send) is Response:
            try:
                self._answer(reply, send)
            finally:
                reply.close()
            return
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._perform(reply, request.received))
        self.server.tasks.add(task)
        task.add_done_callback(self._performed)

    async def _perform(self, reply: Reply, received: float) -> None:
        try:
            if reply.delay > 0:  # counted from arrival: parsing and dispatch are part of it
                await self.server.sleep(reply.delay - (time.monotonic() - received))
            send = reply.send
            if isinstance(send, Response):
                self._answer(reply, send)
            elif isinstance(send, Stream):
                await self._stream(reply, send)
            else:  # Reset
                self._reset(reply)
        finally:
            reply.close()

    def _performed(self, task: asyncio.Task[None]) -> None:
        self.server.tasks.discard(task)
        self.busy = False
        self.last_active = time.monotonic()
        if not task.cancelled() and task.exception() is not None:
            log.error("FakeDify failed to send a reply", exc_info=task.exception())
            self.cut()
            return
        if self.close_after:
            self._close()
            return
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()
            self._serve_buffered()

    # -- replies ---------------------------------------------------------------------------------
    def _answer(self, reply: Reply, response: Response) -> None:
        """Headers and body in one send: no Nagle stall even without TCP_NODELAY."""
        headers, self.close_after = response.sent_headers(self.close_after)
        data = wire.head(response.status, headers) + response.body
        reply.commit()
        self._write(data)
        if self.close_after and not self.busy:
            self._close()

    async def _stream(self, reply: Reply, stream: Stream) -> None:
        """Frames due at once share a send; the end of the stream is the end of the connection.
        A client that hung up ends the stream at the next send, as a failed write does."""
        self.close_after = True
        pending = wire.head(stream.status, {**stream.headers, "Connection": "close"})
        last = len(stream.frames) - 1
        for i, frame in enumerate(stream.frames):
            if frame.delay > 0:
                if pending:
                    if self.lost:
                        return
                    self._write(pending)
                    pending = b""
                await self.server.sleep(frame.delay)
            if i == last:
                if self.lost:
                    return
                reply.commit()
            pending += frame.data
        if last < 0:
            reply.commit()
        self._write(pending)

    def _reset(self, reply: Reply) -> None:
        """Abort with RST (SO_LINGER 0) and no response, like a crashed proxy."""
        self.close_after = True
        reply.commit()
        self.cut(rst=True)

    def _refuse(self, err: _BadRequest) -> None:
        """A request the handler never sees: the stdlib error page, then close."""
        self.close_after = True
        self._write(wire.error_page(err.status, err.message, body=not err.head_only))
        self._close()

    # -- transport -------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def _close(self) -> None:
        """Close after the buffered bytes are sent (FIN)."""
        if self.transport is not None:
            self.transport.close()

    def cut(self, rst: bool = False) -> None:
        """Close now; with ``rst``, reset the connection instead of a FIN."""
        transport = self.transport
        if transport is None:
            return
        if rst:
            sock: Any = transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
            transport.abort()
        else:
            transport.close()


def _chunked(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """(the decoded body, the offset after it) of a chunked body at ``start``; None if incomplete."""
    parts: list[bytes] = []
    at = start
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        try:
            size = int(buf[at:eol].split(b";", 1)[0], 16)
        except ValueError:
            raise _BadRequest(400, "Bad chunk size") from None
        at = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", at - 2)  # no trailers: the CRLF right after the 0 line
            if end < 0:
                return None
            return b"".join(parts), end + 4
        if len(buf) < at + size + 2:
            return None
        parts.append(buf[at : at + size])
        at += size + 2


__all__ = ["MAX_HEAD", "Connection"]
