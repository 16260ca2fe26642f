"""One HTTP attempt against Dify: session, auth header, one OAuth2 refresh on 401, error mapping.

Kept apart from the endpoint methods so the hot path (header, send, status check) is easy to see
and to keep lean: one pooled Session per client, no per-call allocation beyond the request.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3
from requests.adapters import HTTPAdapter

from airflow_dify.client.auth import DifyAuth
from airflow_dify.client.errors import DifyAPIError, DifyConfigError, DifyError
from airflow_dify.client.responses import CallContext, error_from_exception, error_from_response

log = logging.getLogger("airflow_dify.client")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def validate_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; refuses what cannot work, warns about a missing /v1."""
    url = (base_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DifyConfigError(
            f"the Dify base URL must be http(s)://host[:port]/v1 (got {url!r}); e.g. https://api.dify.ai/v1"
        )
    if parts.username or parts.password:
        raise DifyConfigError(
            "the Dify base URL must not contain credentials; put the app key in the password"
        )
    if parts.query or parts.fragment:
        raise DifyConfigError(f"the Dify base URL must not have a query or fragment (got {url!r})")
    if not parts.path.endswith("/v1"):
        with _warned_lock:
            first = url not in _warned
            _warned.add(url)
        if first:
            log.warning(
                "Dify base URL %s does not end with /v1; Dify's service API lives under /v1 "
                "(e.g. https://api.dify.ai/v1): expect 404 unless a gateway rewrites paths",
                url,
            )
    return url


def mask(err: DifyError, secrets: list[str]) -> DifyError:
    """Remove any secret a server may have echoed back from the message (cheap: error path only)."""
    message = err.message
    for secret in secrets:
        if secret and secret in message:
            message = message.replace(secret, "***")
    if message is not err.message:
        err.message = message
        err.args = (err.summary(),)
    return err


class Transport:
    """Sends one request with auth and returns a 2xx response, or raises the mapped DifyError."""

    def __init__(
        self,
        base_url: str,
        auth: DifyAuth,
        *,
        timeout: float | tuple[float, float],
        verify_ssl: bool,
        pool_size: int,
        user_agent: str,
    ) -> None:
        self.base_url = validate_base_url(base_url)
        self.auth = auth
        self.timeout = timeout
        session = requests.Session()
        # max_retries=0: retries are ours (tenacity), with pool permits and billing awareness.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = verify_ssl
        session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        self.session = session
        self._adapter = adapter
        self._path_prefix = urlsplit(self.base_url).path
        self._fast_headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._u3_timeout = urllib3.Timeout(connect=connect, read=read)
        self._fast_pool: Any = None
        self._fast_checked = False
        self._fast_lock = threading.Lock()

    def send(
        self,
        method: str,
        path: str,
        ctx: CallContext,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One attempt; an OAuth2 401 refreshes the token and re-sends once (not a retry)."""
        sent = self._auth_header()
        resp = self._request(method, path, ctx, body, headers, stream, sent)
        if resp.status_code == 401 and self.auth.on_unauthorized(sent):
            resp.close()
            sent = self._auth_header()
            resp = self._request(method, path, ctx, body, headers, stream, sent)
            if resp.status_code == 401:
                err = error_from_response(resp, ctx)
                resp.close()
                err.message = f"{err.message} (still refused after refreshing the OAuth2 token once)"
                err.args = (err.summary(),)
                raise mask(err, self.auth.secrets())
        if resp.status_code >= 300:
            try:
                err = error_from_response(resp, ctx)
            finally:
                resp.close()
            raise mask(err, self.auth.secrets())
        return resp

    def _auth_header(self) -> str:
        try:
            return self.auth.header()
        except DifyError as err:
            raise mask(err, self.auth.secrets()) from None

    def _request(
        self,
        method: str,
        path: str,
        ctx: CallContext,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None,
        stream: bool,
        auth_header: str,
    ) -> requests.Response | FastResponse:
        pool = None if stream else self._fast()
        if pool is not None:
            return self._request_fast(pool, method, path, ctx, body, headers, auth_header)
        try:
            resp = self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                auth=_Bearer(auth_header),
                timeout=self.timeout,
                stream=stream,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise mask(error_from_exception(exc, ctx), self.auth.secrets()) from None
        _refuse_redirect(resp, ctx)
        return resp

    def _fast(self) -> Any:
        """The Session adapter's own urllib3 pool for the base URL, unless a proxy applies.

        Blocking calls go straight to it: requests' per-call work (prepare, hooks, cookies,
        environment lookups) costs more CPU than the HTTP exchange itself at bulk rates. Same
        connections, same TLS settings (the adapter builds the pool), no redirects either way.
        """
        if self._fast_checked:
            return self._fast_pool
        with self._fast_lock:
            if not self._fast_checked:
                proxied = self.session.proxies or (
                    self.session.trust_env and requests.utils.get_environ_proxies(self.base_url)
                )
                if not proxied:
                    probe = requests.Request("POST", self.base_url).prepare()
                    self._fast_pool = self._adapter.get_connection_with_tls_context(
                        probe, self.session.verify
                    )
                self._fast_checked = True
        return self._fast_pool

    def _request_fast(
        self,
        pool: Any,
        method: str,
        path: str,
        ctx: CallContext,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None,
        auth_header: str,
    ) -> FastResponse:
        hdrs = {**self._fast_headers, "Authorization": auth_header}
        if headers:
            hdrs.update(headers)
        data = None
        if body is not None:
            data = json.dumps(body, allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            raw = pool.urlopen(
                method,
                self._path_prefix + path,
                body=data,
                headers=hdrs,
                redirect=False,
                retries=False,
                timeout=self._u3_timeout,
                preload_content=True,
                assert_same_host=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise mask(error_from_exception(_as_requests_error(exc), ctx), self.auth.secrets()) from None
        resp = FastResponse(raw)
        _refuse_redirect(resp, ctx)
        return resp

    def close(self) -> None:
        self.session.close()


class FastResponse:
    """The few ``requests.Response`` members the client reads, over a preloaded urllib3 response."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self.status_code = raw.status
        self.headers = raw.headers
        self.content = raw.data or b""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        return None


def _refuse_redirect(resp: Any, ctx: CallContext) -> None:
    """Never follow a redirect: the key would travel to an address nobody configured."""
    if 300 <= resp.status_code < 400:
        location = resp.headers.get("Location") or "?"
        resp.close()
        raise DifyAPIError(
            f"{ctx.endpoint}: HTTP {resp.status_code} redirect to {location}; redirects are not "
            "followed so the API key never travels to another address: set the connection's host "
            "to the final URL (e.g. https:// instead of http://)",
            status=resp.status_code,
            code="redirect",
            retryable=False,
        )


def _as_requests_error(exc: BaseException) -> BaseException:
    """urllib3 failures as the requests exceptions error_from_exception already maps."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return requests.exceptions.ConnectTimeout(exc)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(exc)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return requests.exceptions.ContentDecodingError(exc)
    return requests.exceptions.ConnectionError(exc)


class _Bearer(requests.auth.AuthBase):
    """Sets our header per request. Passing ``auth=`` also stops requests from applying a
    ~/.netrc entry over it, and requests drops the header when a redirect leaves the host."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self.value
        return r
