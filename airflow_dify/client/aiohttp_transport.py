"""The asyncio transport on aiohttp: one session, pooled keep-alive connections, no redirects.

The batch engine runs every call of a run as a coroutine on one event loop, so the transport is
the :class:`~airflow_dify.client.transport.AsyncTransport` twin of the urllib3 one: the same
request and response values, the same proxy and CA-bundle environment, and every failure mapped
through the same table (:mod:`airflow_dify.client.failures`, with aiohttp's classes in front).
The session is opened lazily on the loop of the first request: aiohttp binds it to that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

import aiohttp

from airflow_dify.client.environment import SOCKS_UNSUPPORTED, is_socks, proxy_for, ssl_context
from airflow_dify.client.errors import DifyConfigError
from airflow_dify.client.failures import (
    BAD_URL,
    BODY_BROKEN,
    CANNOT_CONNECT,
    CONNECT_TIMEOUT,
    DROPPED,
    PROXY_FAILED,
    READ_TIMEOUT,
    STDLIB_ROWS,
    TLS_FAILED,
    Rows,
    transport_error,
)
from airflow_dify.client.transport import PoolOptions, Request, Response, Timeout

#: aiohttp's classes. Order matters: the TLS and proxy errors are ClientConnectorErrors, the
#: connector errors ClientOSErrors, and both timeouts are ServerTimeoutErrors (and TimeoutErrors).
AIOHTTP_ROWS: Rows = (
    ((aiohttp.InvalidURL,), BAD_URL),
    ((aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError), PROXY_FAILED),
    ((aiohttp.ClientSSLError,), TLS_FAILED),
    ((aiohttp.ConnectionTimeoutError,), CONNECT_TIMEOUT),
    ((aiohttp.SocketTimeoutError,), READ_TIMEOUT),
    ((aiohttp.ClientPayloadError,), BODY_BROKEN),
    ((aiohttp.ServerDisconnectedError,), DROPPED),
    *STDLIB_ROWS,  # the OS error inside a ClientConnectorError decides (refused, TLS, timeout)
    ((aiohttp.ClientConnectorError,), CANNOT_CONNECT),
    ((aiohttp.ClientOSError, aiohttp.ClientConnectionError), DROPPED),
)
#: What aiohttp raises for a failed exchange (everything else is a bug and propagates).
_FAILURES = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class AiohttpTransport(PoolOptions):
    """An :class:`~airflow_dify.client.transport.AsyncTransport` over one aiohttp session
    (parameters: :class:`~airflow_dify.client.transport.PoolOptions`; ``pool_size`` is aiohttp's
    connector limit)."""

    def __init__(self, *, pool_size: int = 16, verify_ssl: bool = True, keepalive: float = 60.0) -> None:
        super().__init__(pool_size=pool_size, verify_ssl=verify_ssl, keepalive=keepalive)
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}
        self._proxies: dict[str, str | None] = {}

    async def send(self, request: Request) -> Response:
        try:
            raw = await self._open(request)
            try:
                body = await raw.read()
            finally:
                raw.release()
        except _FAILURES as exc:
            raise transport_error(exc, request.label, AIOHTTP_ROWS) from None
        return Response(raw.status, raw.headers, body)

    async def stream(self, request: Request) -> _Stream:
        try:
            raw = await self._open(request)
        except _FAILURES as exc:
            raise transport_error(exc, request.label, AIOHTTP_ROWS) from None
        return _Stream(raw, request.label)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _open(self, request: Request) -> aiohttp.ClientResponse:
        session = self._session or self._start()
        timeout = self._timeouts.get(request.timeout) or self._timeout(request.timeout)
        return await session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            allow_redirects=False,
            timeout=timeout,
            proxy=self._proxy(request.url),
            ssl=ssl_context(self.verify_ssl) if request.url.startswith("https:") else True,
        )

    def _start(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.pool_size, limit_per_host=0, keepalive_timeout=self.keepalive
        )
        # No cookies (each call stands alone), no environment guessing (proxies are looked up as
        # requests does, below), and no headers of aiohttp's own beyond what HTTP needs.
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            trust_env=False,
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    def _proxy(self, url: str) -> str | None:
        cut = url.find("/", url.find("//") + 2)
        origin = url if cut < 0 else url[:cut]
        if origin not in self._proxies:
            try:
                proxy = proxy_for(origin)
            except ValueError as exc:  # a port out of range: the same failure aiohttp would report
                raise aiohttp.InvalidURL(url, str(exc)) from None
            if is_socks(proxy):
                raise DifyConfigError(SOCKS_UNSUPPORTED)
            if len(self._proxies) >= 64:
                self._proxies.clear()
            self._proxies[origin] = proxy
        return self._proxies[origin]

    def _timeout(self, timeout: Timeout) -> aiohttp.ClientTimeout:
        # sock_connect/sock_read match urllib3's (connect, read): waiting for a pooled connection
        # is not a connect timeout, and a stream may take as long as its bytes keep coming.
        value = aiohttp.ClientTimeout(total=None, sock_connect=timeout[0], sock_read=timeout[1])
        if len(self._timeouts) >= 16:
            self._timeouts.clear()
        self._timeouts[timeout] = value
        return value

    def __repr__(self) -> str:
        return f"AiohttpTransport(pool_size={self.pool_size}, verify_ssl={self.verify_ssl})"


class _Stream:
    """An :class:`~airflow_dify.client.transport.AsyncStreamedResponse` over an unread body."""

    __slots__ = ("status", "headers", "_raw", "_label", "_read_to_end")

    def __init__(self, raw: aiohttp.ClientResponse, label: str) -> None:
        self.status = raw.status
        self.headers: Mapping[str, str] = raw.headers
        self._raw = raw
        self._label = label
        self._read_to_end = False

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        content = self._raw.content
        try:
            while True:
                chunk = await content.readany()  # what has arrived: events are handled live
                if not chunk:
                    self._read_to_end = True
                    return
                yield chunk
        except _FAILURES as exc:
            raise transport_error(exc, self._label, AIOHTTP_ROWS) from None

    async def read(self) -> bytes:
        try:
            body = await self._raw.read()
        except _FAILURES as exc:
            raise transport_error(exc, self._label, AIOHTTP_ROWS) from None
        self._read_to_end = True
        return body

    def close(self) -> None:
        # Back to the pool only when we read the body to its end, as urllib3 does: what a caller
        # left unread (an abandoned stream) never reaches the next request on that connection.
        if self._read_to_end:
            self._raw.release()
        else:
            self._raw.close()


__all__ = ["AIOHTTP_ROWS", "AiohttpTransport"]
