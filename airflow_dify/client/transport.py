"""The transport boundary: a request value in, a response value (or a stream) out.

Everything above it (auth, retries, status mapping, SSE parsing) works on these plain values, so
a transport can be swapped without touching that code: the urllib3 one for the hook, the Test
button and ``doctor``; the lean HTTP/1.1 one (an :class:`AsyncTransport`, aiohttp behind a proxy)
for the asyncio batch engine; a stub in tests. A transport never follows redirects and reports
every failure as the :class:`~airflow_dify.client.errors.DifyError` the table in
:mod:`airflow_dify.client.failures` gives for it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from airflow_dify import __version__

#: Seconds to wait for the TCP/TLS connection, then between bytes of the answer.
Timeout = tuple[float, float]
USER_AGENT = f"airflow-provider-dify/{__version__}"


def as_timeout(value: float | tuple[float, float]) -> Timeout:
    """``(connect, read)`` from a number of seconds or a pair."""
    if isinstance(value, tuple):
        return (float(value[0]), float(value[1]))
    return (float(value), float(value))


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, complete: the transport adds no headers of its own.

    :param url: absolute URL.
    :param label: what the request is for, as error messages name it
        (e.g. ``"chat-messages at https://api.dify.ai/v1"``); never a secret.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    timeout: Timeout
    label: str


@dataclass(frozen=True, slots=True)
class Response:
    """A complete answer. ``headers`` is case-insensitive; ``body`` is already decoded (gzip)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class StreamedResponse(Protocol):
    """An answer whose body is read as it arrives; always ``close()`` it."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""

    def iter_bytes(self) -> Iterator[bytes]:
        """Body bytes as soon as they arrive (not in fixed-size blocks)."""

    def read(self) -> bytes:
        """The rest of the body (error answers, a gateway that answered without streaming)."""

    def close(self) -> None:
        """Give the connection back (kept alive only when the body was read to its end)."""


class Transport(Protocol):
    """Sends requests over pooled keep-alive connections; thread-safe."""

    def send(self, request: Request) -> Response:
        """One exchange, body preloaded; 3xx answers are returned, not followed."""

    def stream(self, request: Request) -> StreamedResponse:
        """One exchange whose body is read through the returned stream."""

    def close(self) -> None:
        """Close every pooled connection."""


class PoolOptions:
    """The settings every pooled asyncio transport takes, normalised once.

    :param pool_size: connections open at once; set it to the batch concurrency, so a call waits
        for the pool only when more are running than it allows.
    :param verify_ssl: verify TLS certificates against ``REQUESTS_CA_BUNDLE`` /
        ``CURL_CA_BUNDLE``, else certifi's bundle (as the urllib3 transport does).
    :param keepalive: seconds an idle connection is kept for the next request.
    """

    def __init__(self, *, pool_size: int = 16, verify_ssl: bool = True, keepalive: float = 60.0) -> None:
        self.pool_size = max(1, int(pool_size))
        self.verify_ssl = bool(verify_ssl)
        self.keepalive = float(keepalive)


class AsyncStreamedResponse(Protocol):
    """:class:`StreamedResponse` on an event loop: the body is awaited; always ``close()`` it."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""

    def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        """Body bytes as soon as they arrive (not in fixed-size blocks)."""

    async def read(self) -> bytes:
        """The rest of the body."""

    def close(self) -> None:
        """Give the connection back (kept alive only when the body was read to its end)."""


class AsyncTransport(Protocol):
    """:class:`Transport` for coroutines on one event loop; the same values and failure table."""

    async def send(self, request: Request) -> Response:
        """One exchange, body preloaded; 3xx answers are returned, not followed."""

    async def stream(self, request: Request) -> AsyncStreamedResponse:
        """One exchange whose body is read through the returned stream."""

    async def close(self) -> None:
        """Close every pooled connection (on the loop that used them)."""


__all__ = [
    "USER_AGENT",
    "AsyncStreamedResponse",
    "AsyncTransport",
    "PoolOptions",
    "Request",
    "Response",
    "StreamedResponse",
    "Timeout",
    "Transport",
    "as_timeout",
]
