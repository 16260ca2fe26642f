"""The transport on urllib3: pooled keep-alive connections, no redirects, no retries.

Bulk runs make millions of calls, so the blocking path is kept short: the connection pool for an
origin is looked up once and then used directly with the request path, which skips URL parsing
and pool-key hashing on every call. Proxied origins go through urllib3's ProxyManager, which
knows the absolute-form and CONNECT rules; proxies are rare and add a hop anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

import urllib3
from urllib3.util import make_headers, parse_url

from airflow_dify.client.environment import proxy_for, ssl_context
from airflow_dify.client.failures import transport_error
from airflow_dify.client.transport import Request, Response, Timeout

#: What urllib3 raises for a failed exchange (everything else is a bug and propagates).
_FAILURES = (urllib3.exceptions.HTTPError, OSError)


class Urllib3Transport:
    """A :class:`~airflow_dify.client.transport.Transport` over urllib3 connection pools.

    :param pool_size: keep-alive connections kept per origin; busier moments open extra
        connections that are closed after use (the pool never blocks a caller).
    :param verify_ssl: verify TLS certificates against ``REQUESTS_CA_BUNDLE`` /
        ``CURL_CA_BUNDLE``, else certifi's bundle.
    :param num_pools: origins kept (a client needs its base URL and perhaps a token URL).
    """

    def __init__(self, *, pool_size: int = 16, verify_ssl: bool = True, num_pools: int = 16) -> None:
        self.pool_size = max(1, int(pool_size))
        self.verify_ssl = bool(verify_ssl)
        self._pool_kw: dict[str, Any] = {"num_pools": num_pools, "maxsize": self.pool_size, "block": False}
        self._direct = urllib3.PoolManager(retries=False, **self._pool_kw)
        self._proxied: dict[tuple[str, str], urllib3.PoolManager] = {}
        self._routes: dict[str, _Route] = {}
        self._timeouts: dict[Timeout, urllib3.Timeout] = {}
        self._lock = threading.Lock()
        # Never cache more routes than the manager keeps pools: a cached pool must not be evicted.
        self._max_routes = num_pools

    def send(self, request: Request) -> Response:
        try:
            raw = self._open(request, preload=True)
        except _FAILURES as exc:
            raise transport_error(exc, request.label) from None
        return Response(raw.status, raw.headers, raw.data)

    def stream(self, request: Request) -> _Stream:
        try:
            raw = self._open(request, preload=False)
        except _FAILURES as exc:
            raise transport_error(exc, request.label) from None
        return _Stream(raw, request.label)

    def close(self) -> None:
        with self._lock:
            self._routes.clear()
            managers = [self._direct, *self._proxied.values()]
            self._proxied.clear()
        for manager in managers:
            manager.clear()

    def _open(self, request: Request, *, preload: bool) -> urllib3.BaseHTTPResponse:
        url = request.url
        cut = url.find("/", url.find("//") + 2)
        origin, target = (url, "/") if cut < 0 else (url[:cut], url[cut:])
        route = self._routes.get(origin) or self._route(origin)
        timeout = self._timeouts.get(request.timeout) or self._timeout(request.timeout)
        return route.opener.urlopen(
            request.method,
            target if route.direct else url,
            body=request.body,
            headers=request.headers,
            redirect=False,
            retries=False,
            timeout=timeout,
            preload_content=preload,
            decode_content=True,
            assert_same_host=False,
        )

    def _route(self, origin: str) -> _Route:
        """How to reach ``origin``: its own pool, or the proxy the environment names for it."""
        with self._lock:
            route = self._routes.get(origin)
            if route is not None:
                return route
            parts = parse_url(origin)
            scheme = parts.scheme or "http"
            tls = self._tls_kw() if scheme == "https" else {}
            proxy = proxy_for(origin)
            if proxy is None:
                pool = self._direct.connection_from_host(parts.host, parts.port, scheme, pool_kwargs=tls)
                route = _Route(pool, direct=True)
            else:  # the manager adds proxy headers and picks absolute-form or CONNECT per scheme
                route = _Route(self._proxy_manager(proxy, scheme, tls), direct=False)
            if len(self._routes) >= self._max_routes:
                self._routes.clear()
            self._routes[origin] = route
            return route

    def _proxy_manager(self, proxy: str, scheme: str, tls: dict[str, Any]) -> urllib3.PoolManager:
        manager = self._proxied.get((proxy, scheme))
        if manager is None:
            parsed = parse_url(proxy)
            # Credentials in the proxy URL become a header, as requests does (percent-decoded).
            headers = make_headers(proxy_basic_auth=unquote(parsed.auth)) if parsed.auth else None
            if (parsed.scheme or "").startswith("socks"):
                manager = _socks_manager(proxy, **self._pool_kw, **tls)
            else:
                manager = urllib3.ProxyManager(
                    proxy, proxy_headers=headers, retries=False, **self._pool_kw, **tls
                )
            self._proxied[(proxy, scheme)] = manager
        return manager

    def _tls_kw(self) -> dict[str, Any]:
        return {
            "ssl_context": ssl_context(self.verify_ssl),
            "cert_reqs": "CERT_REQUIRED" if self.verify_ssl else "CERT_NONE",
        }

    def _timeout(self, timeout: Timeout) -> urllib3.Timeout:
        value = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        with self._lock:
            if len(self._timeouts) >= self._max_routes:
                self._timeouts.clear()
            self._timeouts[timeout] = value
        return value

    def __repr__(self) -> str:
        return f"Urllib3Transport(pool_size={self.pool_size}, verify_ssl={self.verify_ssl})"


class _Route:
    """A cached way to one origin: a pool used with paths, or a proxy manager used with URLs."""

    __slots__ = ("opener", "direct")

    def __init__(self, opener: Any, *, direct: bool) -> None:
        self.opener = opener
        self.direct = direct


class _Stream:
    """A :class:`~airflow_dify.client.transport.StreamedResponse` over an unread urllib3 body."""

    __slots__ = ("status", "headers", "_raw", "_label")

    def __init__(self, raw: urllib3.BaseHTTPResponse, label: str) -> None:
        self.status = raw.status
        self.headers: Mapping[str, str] = raw.headers
        self._raw = raw
        self._label = label

    def iter_bytes(self) -> Iterator[bytes]:
        # read1 returns what has arrived (up to the limit), so events are handled live.
        read1 = self._raw.read1
        try:
            while True:
                chunk = read1(65536)
                if not chunk:
                    return
                yield chunk
        except _FAILURES as exc:
            raise transport_error(exc, self._label) from None

    def read(self) -> bytes:
        try:
            return self._raw.read()
        except _FAILURES as exc:
            raise transport_error(exc, self._label) from None

    def close(self) -> None:
        raw = self._raw
        if not raw.closed:  # unread bytes left: the connection cannot serve another request
            raw.close()
        raw.release_conn()


def _socks_manager(proxy: str, **kwargs: Any) -> urllib3.PoolManager:
    try:
        from urllib3.contrib.socks import SOCKSProxyManager
    except ImportError:  # PySocks is optional, as it is for requests
        from airflow_dify.client.errors import DifyConfigError

        raise DifyConfigError(
            "a SOCKS proxy is configured (ALL_PROXY/HTTPS_PROXY) but PySocks is not installed: "
            "pip install 'urllib3[socks]'"
        ) from None
    return SOCKSProxyManager(proxy, retries=False, **kwargs)


__all__ = ["Urllib3Transport"]
