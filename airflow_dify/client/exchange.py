"""One authenticated exchange with Dify: request, one OAuth2 refresh on 401, error mapping.

Kept apart from the endpoint methods so the hot path (headers, send, status check) is easy to
see and to keep lean. :class:`ExchangeRules` holds everything that is not I/O (request building,
when to resend after a 401, error mapping, masking); :class:`Exchange` (sync) and
:class:`AsyncExchange` (asyncio) are the same short flow, one with ``await``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from airflow_dify.client.auth import ApiKeyAuth, DifyAuth
from airflow_dify.client.errors import DifyError, E
from airflow_dify.client.responses import CallContext, error_from_response
from airflow_dify.client.transport import (
    AsyncStreamedResponse,
    AsyncTransport,
    Request,
    Response,
    StreamedResponse,
    Timeout,
    Transport,
    as_timeout,
)
from airflow_dify.json_codec import encoder

#: ``json.dumps(body, allow_nan=False)``: a NaN in a row is refused, never sent as invalid JSON.
_json_body = encoder(allow_nan=False)
_REFRESHED = " (still refused after refreshing the OAuth2 token once)"


class _Answer(Protocol):
    @property
    def status(self) -> int: ...


A = TypeVar("A", bound=_Answer)
T = TypeVar("T")
#: A JSON object, or bytes already encoded (a multipart upload: its Content-Type comes in the headers).
Body = dict[str, Any] | bytes | None
Headers = dict[str, str] | None


def mask(err: E, secrets: list[str]) -> E:
    """``err``, or a copy whose message has every secret a server echoed back replaced by ***."""
    message = err.message
    for secret in secrets:
        if secret and secret in message:
            message = message.replace(secret, "***")
    return err if message == err.message else err.evolve(message=message)


def read_all(resp: StreamedResponse) -> Response:
    """A streamed answer as a complete one (error bodies, gateways that answered blocking)."""
    try:
        return Response(resp.status, resp.headers, resp.read())
    finally:
        resp.close()


async def aread_all(resp: AsyncStreamedResponse) -> Response:
    """:func:`read_all` for a stream on the event loop."""
    try:
        return Response(resp.status, resp.headers, await resp.read())
    finally:
        resp.close()


def _complete(resp: Response) -> Response:
    return resp


async def _acomplete(resp: Response) -> Response:
    return resp


class ExchangeRules:
    """What one exchange decides without I/O: the request, the 401 resend, the masked error.

    :param base_url: the normalised API base URL; paths are appended to it.
    :param timeout: seconds, or (connect, read).
    """

    def __init__(
        self,
        base_url: str,
        auth: DifyAuth,
        *,
        timeout: float | tuple[float, float],
        user_agent: str,
    ) -> None:
        self.base_url = base_url
        self.auth = auth
        self.timeout: Timeout = as_timeout(timeout)
        self._headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }

    def request(
        self,
        method: str,
        path: str,
        ctx: CallContext,
        auth_header: str,
        body: Body = None,
        headers: Headers = None,
    ) -> Request:
        """The request value for one attempt (pure: no I/O)."""
        hdrs = {**self._headers, "Authorization": auth_header}
        if headers:
            hdrs.update(headers)
        data = None
        if isinstance(body, bytes):
            data = body
        elif body is not None:
            data = _json_body(body).encode()
            hdrs["Content-Type"] = "application/json"
        return Request(method, self.base_url + path, hdrs, data, self.timeout, ctx.where)

    def resend(self, status: int, sent: str) -> bool:
        """A refused OAuth2 token is refreshed and the request re-sent once: not a retry, since
        nothing ran; a static key cannot be refreshed and its 401 is final."""
        return status == 401 and self.auth.on_unauthorized(sent)

    def failure(self, resp: Response, ctx: CallContext, *, refreshed: bool = False) -> DifyError:
        """The masked error for a non-2xx answer."""
        err = error_from_response(resp, ctx)
        if refreshed and resp.status == 401:
            err = err.evolve(message=err.message + _REFRESHED)
        return mask(err, self.auth.secrets())

    def masked(self, err: DifyError) -> DifyError | None:
        """``err`` with secrets masked out, or None when it holds none (re-raise it as it is)."""
        out = mask(err, self.auth.secrets())
        return None if out is err else out


class Exchange(ExchangeRules):
    """Sends one authenticated request and returns a 2xx answer, or raises the masked DifyError.

    :param transport: sends the requests (never follows redirects).
    """

    def __init__(self, transport: Transport, base_url: str, auth: DifyAuth, **kw: Any) -> None:
        super().__init__(base_url, auth, **kw)
        self.transport = transport

    def send(
        self, method: str, path: str, ctx: CallContext, *, body: Body = None, headers: Headers = None
    ) -> Response:
        """One attempt with the body preloaded."""
        return self._exchange(self.transport.send, _complete, method, path, ctx, body, headers)

    def stream(
        self, method: str, path: str, ctx: CallContext, *, body: Body = None, headers: Headers = None
    ) -> StreamedResponse:
        """One attempt whose 2xx body the caller reads (and closes)."""
        return self._exchange(self.transport.stream, read_all, method, path, ctx, body, headers)

    def _exchange(
        self,
        open_: Callable[[Request], A],
        complete: Callable[[A], Response],
        method: str,
        path: str,
        ctx: CallContext,
        body: Body,
        headers: Headers,
    ) -> A:
        sent = self._guarded(self.auth.header)
        resp = self._guarded(open_, self.request(method, path, ctx, sent, body, headers))
        refreshed = False
        if self.resend(resp.status, sent):
            complete(resp)  # read and release the refused answer's connection
            sent = self._guarded(self.auth.header)
            resp = self._guarded(open_, self.request(method, path, ctx, sent, body, headers))
            refreshed = True
        if resp.status >= 300:
            raise self.failure(complete(resp), ctx, refreshed=refreshed)
        return resp

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, with any secret masked out of the DifyError it raises."""
        try:
            return fn(*args)
        except DifyError as err:
            masked = self.masked(err)
            if masked is None:
                raise
        raise masked  # outside the handler, so the unmasked error is not kept as its context


class AsyncExchange(ExchangeRules):
    """:class:`Exchange` on an event loop: the same flow and rules, awaited.

    An OAuth2 token fetch is a sync HTTP call: it runs in a worker thread when the cached token
    is missing or due for refresh (rare), never on the loop.
    """

    def __init__(self, transport: AsyncTransport, base_url: str, auth: DifyAuth, **kw: Any) -> None:
        super().__init__(base_url, auth, **kw)
        self.transport = transport
        cached = getattr(auth, "cached_header", None)
        self._cached_header: Callable[[], str | None] | None = cached if callable(cached) else None
        #: An API key's header never changes: no coroutine per call to fetch it.
        self._static_header = auth.header() if isinstance(auth, ApiKeyAuth) else None

    async def send(
        self, method: str, path: str, ctx: CallContext, *, body: Body = None, headers: Headers = None
    ) -> Response:
        return await self._exchange(self.transport.send, _acomplete, method, path, ctx, body, headers)

    async def stream(
        self, method: str, path: str, ctx: CallContext, *, body: Body = None, headers: Headers = None
    ) -> AsyncStreamedResponse:
        return await self._exchange(self.transport.stream, aread_all, method, path, ctx, body, headers)

    async def _exchange(
        self,
        open_: Callable[[Request], Awaitable[A]],
        complete: Callable[[A], Awaitable[Response]],
        method: str,
        path: str,
        ctx: CallContext,
        body: Body,
        headers: Headers,
    ) -> A:
        sent = self._static_header
        if sent is None:
            sent = await self._guarded(self._header())
        masked: DifyError | None = None
        try:  # _guarded, inlined on the hot path: one coroutine less per call
            resp = await open_(self.request(method, path, ctx, sent, body, headers))
        except DifyError as err:
            masked = self.masked(err)
            if masked is None:
                raise
        if masked is not None:
            raise masked  # outside the handler, so the unmasked error is not kept as its context
        refreshed = False
        if self.resend(resp.status, sent):
            await complete(resp)
            sent = await self._guarded(self._header())
            resp = await self._guarded(open_(self.request(method, path, ctx, sent, body, headers)))
            refreshed = True
        if resp.status >= 300:
            raise self.failure(await complete(resp), ctx, refreshed=refreshed)
        return resp

    async def _header(self) -> str:
        if isinstance(self.auth, ApiKeyAuth):
            return self.auth.header()
        header = self._cached_header() if self._cached_header is not None else None
        return header if header is not None else await asyncio.to_thread(self.auth.header)

    async def _guarded(self, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except DifyError as err:
            masked = self.masked(err)
            if masked is None:
                raise
        raise masked


__all__ = ["AsyncExchange", "Exchange", "ExchangeRules", "aread_all", "mask", "read_all"]
