"""One HTTP/1.1 keep-alive connection as an asyncio protocol, its answers parsed by httptools.

The lean transport's unit: one exchange at a time, the request written in one call, the answer
parsed in C as bytes arrive. A whole answer costs one future; a stream one future per wait for
more bytes. The read timeout is one timer per exchange that re-arms itself from the time of the
last bytes, so it means "no byte for N seconds" (as urllib3's does) without a timer per chunk.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

import httptools

#: Buffered, unread body bytes of a stream before the socket stops being read.
HIGH_WATER = 256 * 1024
#: Headers that delimit a body; without either, it ends when the connection closes.
_FRAMING = frozenset(("content-length", "transfer-encoding"))


class BodyBroken(Exception):
    """The answer could not be parsed, decoded, or was cut short after its head."""


class Dropped(ConnectionError):
    """The connection closed before the answer's head arrived."""


class ReadTimedOut(TimeoutError):
    """No byte of the answer arrived within the read timeout."""


def decoder(encoding: str | None) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a ``Content-Encoding`` (gzip, deflate), None for identity."""
    if not encoding:
        return None
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return _Deflate().decode
    if encoding == "identity":
        return None
    raise BodyBroken(f"unsupported Content-Encoding {encoding!r}")


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped, or (wrongly, but commonly) raw."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj()
        self._first = True

    def decode(self, data: bytes) -> bytes:
        if self._first and data:
            self._first = False
            try:
                return self._obj.decompress(data)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._obj.decompress(data)


class Connection(asyncio.Protocol):
    """A keep-alive connection; :meth:`start` one exchange, then await its head and body."""

    _headers: list[tuple[str, str]]
    _chunks: list[bytes]
    _error: BaseException | None
    _waiter: asyncio.Future[None] | None
    _timer: asyncio.TimerHandle | None
    _paused: bool

    def __init__(self, loop: asyncio.AbstractEventLoop, route_key: tuple[str, str, int]) -> None:
        self.loop = loop
        self.route_key = route_key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    # -- one exchange ------------------------------------------------------------------------------
    def start(self, data: bytes, read_timeout: float, *, whole: bool) -> None:
        """Write one request; ``whole``: the caller wants the complete answer, not a stream."""
        assert self.transport is not None
        self._reset()
        self._idle = False
        self._whole = whole
        self._timeout = read_timeout
        self._last = self.loop.time()
        self._timer = self.loop.call_later(read_timeout, self._check_timeout)
        self.transport.write(data)

    async def whole(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """The complete answer: status, headers (names lower-case), the raw (encoded) body."""
        if not self._complete and self._error is None:
            self._waiter = self.loop.create_future()
            await self._waiter
        if self._error is not None:
            raise self._error
        return self._status, self._headers, b"".join(self._chunks)

    async def head(self) -> tuple[int, list[tuple[str, str]]]:
        """The answer's status and headers, once they have arrived."""
        if not self._headed and self._error is None:
            self._waiter = self.loop.create_future()
            await self._waiter
        if self._error is not None and not self._headed:
            raise self._error
        return self._status, self._headers

    async def chunk(self) -> bytes:
        """The body bytes that have arrived (waiting for some), ``b""`` at its end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = self.loop.create_future()
            await self._waiter
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """The last answer was read to its end and the server keeps the connection open."""
        return self._complete and self._keep_alive and not self.closed and self._error is None

    def abort(self) -> None:
        """Close now (an answer left unread must never reach the next request)."""
        self._stop_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._last = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BodyBroken(f"unparseable answer: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._idle or self._complete or self._error is not None:
            self._stop_timer()
            return
        if self._headed and self._eof_delimited and exc is None:
            self.on_message_complete()  # a body without length or chunks ends with the connection
            self._keep_alive = False
            return
        reason = f": {exc}" if exc else ""
        if self._headed:
            self._fail(BodyBroken(f"the connection closed before the body's end{reason}"))
        else:
            self._fail(Dropped(f"the server closed the connection{reason}"))

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in _FRAMING:
            self._framed = True
        self._headers.append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an informational answer: the real one follows
            self._headers = []
            self._framed = False
            self._informational = True
            return
        self._status = status
        self._headed = True
        self._eof_delimited = not (self._framed or status in (204, 304))
        if not self._whole:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        if not self._whole:
            self._buffered += len(body)
            if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._stop_timer()
        self._wake()

    # -- internals ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._idle = True
        self._whole = True
        self._status = 0
        self._headers = []
        self._chunks = []
        self._buffered = 0
        self._paused = False
        self._headed = self._complete = self._informational = self._eof_delimited = self._framed = False
        self._keep_alive = False
        self._error = None
        self._waiter = None
        self._timer = None
        self._timeout = 0.0
        self._last = 0.0

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._stop_timer()
        self._wake()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        self._timer = None
        if self._complete or self._error is not None:
            return
        quiet = self.loop.time() - self._last
        if self._paused or quiet < self._timeout:  # bytes came meanwhile, or the reader is behind
            self._timer = self.loop.call_later(max(self._timeout - quiet, 0.001), self._check_timeout)
            return
        self._fail(ReadTimedOut(f"no answer within {self._timeout:g} s"))
        self.abort()


__all__ = ["HIGH_WATER", "BodyBroken", "Connection", "Dropped", "ReadTimedOut", "decoder"]
