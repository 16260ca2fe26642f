"""The values between FakeDify's request handler and a server: a request in, a reply out.

The handler decides everything (status, bytes, delays) and never touches a socket or sleeps; a
server moves bytes and performs the delays. Performing a reply, for any server (threads or asyncio):

1. wait ``reply.delay`` (wake early on stop);
2. a :class:`Response`: call ``reply.commit()``, then send head and body;
   a :class:`Stream`: send the head, then each frame after its delay, calling ``reply.commit()``
   just before the last one; then close the connection;
   a :class:`Reset`: call ``reply.commit()``, then abort the connection with RST;
3. call ``reply.close()`` however that ended (client gone, server stopping).

``commit`` and ``close`` are where the handler's timing-sensitive state changes happen (the
request record, the concurrency slot), so a server needs no knowledge of them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request. ``headers`` names are lower case; ``received`` is a monotonic time."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    received: float = field(default_factory=time.monotonic)
    #: The query string, without ``?`` (GET /conversations?user=...).
    query: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def params(self) -> dict[str, str]:
        """Query parameters, the last value of each name."""
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.query, keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer. The server adds Content-Length, Date, Server and (``close``) Connection."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False

    def sent_headers(self, closing: bool) -> tuple[dict[str, str], bool]:
        """(headers to send, whether the connection closes after) on a connection already
        ``closing`` or not: both servers answer with these."""
        closing = closing or self.close
        headers = {**self.headers, "Content-Length": str(len(self.body))}
        if closing:
            headers["Connection"] = "close"
        return headers, closing


@dataclass(frozen=True, slots=True)
class Frame:
    """Bytes of a stream, sent ``delay`` seconds after the previous frame (or the head)."""

    delay: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed answer without Content-Length: its end is the end of the connection."""

    status: int
    frames: tuple[Frame, ...]
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Reset:
    """No answer at all: the connection is aborted with RST, like a crashed proxy."""


class Settlement(Protocol):
    """What the handler does at the moments only the server sees (see the module docstring)."""

    def commit(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send for one request, after ``delay`` seconds (latency, stalls)."""

    send: Response | Stream | Reset
    delay: float = 0.0
    settlement: Settlement | None = None

    def commit(self) -> None:
        """Just before the last bytes (or the reset) go out."""
        if self.settlement is not None:
            self.settlement.commit()

    def close(self) -> None:
        """The exchange is over, whether the bytes went out or not; safe after :meth:`commit`."""
        if self.settlement is not None:
            self.settlement.close()
