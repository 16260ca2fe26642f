"""The lean asyncio transport: HTTP/1.1 on asyncio protocols, one keep-alive pool, no redirects.

The batch engine's hot path is one small JSON POST per row; aiohttp spent ~27 % of a row's CPU
on it (py-spy, bench scenario b), most of it in machinery a Dify call never uses. This transport
writes each request in one call and parses the answer with httptools (llhttp, in C): the same
:class:`~airflow_dify.client.transport.AsyncTransport` values, the same proxy and CA-bundle
environment, every failure mapped through :mod:`airflow_dify.client.failures`.

What it does not do it hands on rather than half-does: a URL the environment routes through a
proxy goes to :class:`~airflow_dify.client.aiohttp_transport.AiohttpTransport` (HTTP(S) proxies,
CONNECT tunnels), built on first use. A request is never re-sent here: a kept-alive connection the
server closed as the request left is ``connection_reset`` (maybe billed), and the retry policy
decides, as for every other transport.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from airflow_dify.client.environment import SOCKS_UNSUPPORTED, is_socks, proxy_for, ssl_context
from airflow_dify.client.errors import DifyConfigError
from airflow_dify.client.failures import (
    BAD_URL,
    BODY_BROKEN,
    CANNOT_CONNECT,
    CONNECT_TIMEOUT,
    DROPPED,
    READ_TIMEOUT,
    TLS_FAILED,
    Rows,
    transport_error,
)
from airflow_dify.client.http1_connection import BodyBroken, Connection, Dropped, ReadTimedOut, decoder
from airflow_dify.client.transport import AsyncStreamedResponse, PoolOptions, Request, Response

if TYPE_CHECKING:
    from airflow_dify.client.aiohttp_transport import AiohttpTransport

#: Failures while connecting: nothing was sent, whatever the OS says.
CONNECT_ROWS: Rows = (
    ((ssl.SSLError, ssl.CertificateError), TLS_FAILED),
    ((TimeoutError,), CONNECT_TIMEOUT),
    ((OSError,), CANNOT_CONNECT),
)
#: Failures once the request was written: Dify may be running it.
EXCHANGE_ROWS: Rows = (
    ((ReadTimedOut,), READ_TIMEOUT),
    ((BodyBroken,), BODY_BROKEN),
    ((Dropped, OSError), DROPPED),
)
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


class Headers(dict[str, str]):
    """Answer headers, names case-insensitive (stored lower-case; repeats joined with ", ")."""

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    @classmethod
    def of(cls, pairs: list[tuple[str, str]]) -> Headers:
        out = cls()
        for name, value in pairs:
            out[name] = f"{out[name]}, {value}" if dict.__contains__(out, name) else value
        return out


@dataclass(frozen=True, slots=True)
class _Route:
    """Where an origin's requests go: host, port, TLS, and the ``Host`` header."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: ssl.SSLContext | None
    host_header: str


class Http1Transport(PoolOptions):
    """An :class:`~airflow_dify.client.transport.AsyncTransport` over pooled HTTP/1.1 connections
    (parameters: :class:`~airflow_dify.client.transport.PoolOptions`)."""

    def __init__(self, *, pool_size: int = 16, verify_ssl: bool = True, keepalive: float = 60.0) -> None:
        super().__init__(pool_size=pool_size, verify_ssl=verify_ssl, keepalive=keepalive)
        self._routes: dict[str, _Route | None] = {}
        self._targets: dict[str, tuple[_Route | None, str]] = {}
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._proxied: AiohttpTransport | None = None

    async def send(self, request: Request) -> Response:
        conn = await self._begin(request, whole=True)
        if conn is None:
            return await self._via_proxy().send(request)
        reuse = False
        try:
            status, pairs, raw = await conn.whole()
            headers = Headers.of(pairs)
            decode = decoder(headers.get("content-encoding"))
            body = decode(raw) if decode is not None and raw else raw
            reuse = conn.reusable
        except (BodyBroken, OSError) as exc:
            raise transport_error(exc, request.label, EXCHANGE_ROWS) from None
        except zlib.error as exc:  # a body that does not decode
            raise transport_error(BodyBroken(str(exc)), request.label, EXCHANGE_ROWS) from None
        finally:
            self._release(conn, reuse)
        return Response(status, headers, body)

    async def stream(self, request: Request) -> AsyncStreamedResponse:
        conn = await self._begin(request, whole=False)
        if conn is None:
            return await self._via_proxy().stream(request)
        try:
            status, pairs = await conn.head()
            headers = Headers.of(pairs)
            return _Stream(
                self, conn, status, headers, decoder(headers.get("content-encoding")), request.label
            )
        except BaseException as exc:
            self._release(conn, False)
            if isinstance(exc, (BodyBroken, OSError)):
                raise transport_error(exc, request.label, EXCHANGE_ROWS) from None
            raise

    async def _begin(self, request: Request, *, whole: bool) -> Connection | None:
        """A pooled connection with ``request`` written on it; None: the URL goes via a proxy."""
        route, target = self._route(request.url, request.label)
        if route is None:
            return None
        data = self._encode(request, route, target)
        conn = await self._acquire(route, request)
        conn.start(data, request.timeout[1], whole=whole)
        return conn

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._open -= sum(len(conns) for conns in self._idle.values())
        self._idle.clear()
        proxied, self._proxied = self._proxied, None
        if proxied is not None:
            await proxied.close()

    def __repr__(self) -> str:
        return f"Http1Transport(pool_size={self.pool_size}, verify_ssl={self.verify_ssl})"

    # -- the pool ----------------------------------------------------------------------------------
    async def _acquire(self, route: _Route, request: Request) -> Connection:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(route.key)
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to have been closed
                if not conn.closed and loop.time() - conn.idle_since < self.keepalive:
                    return conn
                conn.abort()
                self._open -= 1
            if self._open >= self.pool_size and not self._close_other_idle(route.key):
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._wake_one()  # woken, then cancelled: the freed slot goes to the next
                    else:
                        waiter.cancel()
                    raise
                continue
            self._open += 1
            try:
                return await self._connect(loop, route, request)
            except BaseException:
                self._open -= 1
                self._wake_one()
                raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, route: _Route, request: Request) -> Connection:
        conn = Connection(loop, route.key)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    route.host,
                    route.port,
                    ssl=route.tls,
                    server_hostname=route.host if route.tls is not None else None,
                ),
                request.timeout[0],
            )
        except (OSError, TimeoutError) as exc:
            raise transport_error(exc, request.label, CONNECT_ROWS) from None
        return conn

    def _release(self, conn: Connection, reuse: bool) -> None:
        if reuse and conn.reusable and conn.transport is not None:
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(conn.route_key, []).append(conn)
        else:
            conn.abort()
            self._open -= 1
        self._wake_one()

    def _close_other_idle(self, key: tuple[str, str, int]) -> bool:
        """Make room at the limit by closing an idle connection to another origin."""
        for other, conns in self._idle.items():
            if other != key and conns:
                conns.pop(0).abort()
                self._open -= 1
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- requests ----------------------------------------------------------------------------------
    def _route(self, url: str, label: str) -> tuple[_Route | None, str]:
        known = self._targets.get(url)  # a batch sends every row to the same URL
        if known is not None:
            return known
        start = url.find("//") + 2
        cut = url.find("/", start)
        origin, target = (url, "/") if cut < 0 else (url[:cut], url[cut:])
        hash_at = target.find("#")
        if hash_at >= 0:
            target = target[:hash_at]
        if origin not in self._routes:
            if len(self._routes) >= 64:
                self._routes.clear()
            self._routes[origin] = self._new_route(origin, label)
        if len(self._targets) >= 256:  # per-run URLs (workflow run look-ups) must not pile up
            self._targets.clear()
        found = self._targets[url] = (self._routes[origin], target)
        return found

    def _new_route(self, origin: str, label: str) -> _Route | None:
        try:
            parts = urlsplit(origin)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
            proxy = proxy_for(origin)
        except ValueError as exc:
            raise BAD_URL(label, str(exc)) from None
        if scheme not in ("http", "https") or not host:
            raise BAD_URL(label, f"{origin!r} is not an http(s) URL")
        if proxy is not None:
            if is_socks(proxy):
                raise DifyConfigError(SOCKS_UNSUPPORTED)
            return None
        default = 443 if scheme == "https" else 80
        port = port or default
        tls = ssl_context(self.verify_ssl) if scheme == "https" else None
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        return _Route((scheme, host, port), host, port, tls, host_header)

    @staticmethod
    def _encode(request: Request, route: _Route, target: str) -> bytes:
        lines = "".join([f"{name}: {value}\r\n" for name, value in request.headers.items()])
        if lines.count("\n") != len(request.headers) or lines.count("\r") != len(request.headers):
            raise DifyConfigError(f"{request.label}: a request header holds a line break (CR or LF)")
        body = request.body
        if body is not None or request.method in _BODY_METHODS:
            lines += f"Content-Length: {len(body or b'')}\r\n"
        head = f"{request.method} {target} HTTP/1.1\r\nHost: {route.host_header}\r\n{lines}\r\n"
        try:
            data = head.encode("latin-1")
        except UnicodeEncodeError:
            raise DifyConfigError(
                f"{request.label}: a request header or the URL path is not Latin-1"
            ) from None
        return data + body if body else data

    def _via_proxy(self) -> AiohttpTransport:
        if self._proxied is None:
            from airflow_dify.client.aiohttp_transport import AiohttpTransport  # ~10 MB: only if used

            self._proxied = AiohttpTransport(
                pool_size=self.pool_size, verify_ssl=self.verify_ssl, keepalive=self.keepalive
            )
        return self._proxied


class _Stream:
    """An :class:`~airflow_dify.client.transport.AsyncStreamedResponse` on one pooled connection."""

    __slots__ = ("status", "headers", "_owner", "_conn", "_decode", "_label", "_done", "_closed")

    def __init__(
        self,
        owner: Http1Transport,
        conn: Connection,
        status: int,
        headers: Headers,
        decode: Callable[[bytes], bytes] | None,
        label: str,
    ) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers
        self._owner, self._conn, self._decode, self._label = owner, conn, decode, label
        self._done = self._closed = False

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        while True:
            chunk = await self._next()
            if not chunk:
                return
            yield chunk

    async def read(self) -> bytes:
        parts = []
        while chunk := await self._next():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        # Back to the pool only when the body was read to its end, as urllib3 does: what a caller
        # left unread (an abandoned stream) never reaches the next request on that connection.
        if not self._closed:
            self._closed = True
            self._owner._release(self._conn, self._done)

    async def _next(self) -> bytes:
        if self._done:
            return b""
        try:
            while True:
                raw = await self._conn.chunk()
                if not raw:
                    self._done = True
                    return b""
                data = self._decode(raw) if self._decode is not None else raw
                if data:
                    return data
        except (BodyBroken, OSError) as exc:
            raise transport_error(exc, self._label, EXCHANGE_ROWS) from None
        except zlib.error as exc:
            raise transport_error(BodyBroken(str(exc)), self._label, EXCHANGE_ROWS) from None


__all__ = ["CONNECT_ROWS", "EXCHANGE_ROWS", "Headers", "Http1Transport"]
