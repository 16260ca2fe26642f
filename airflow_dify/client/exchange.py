"""One authenticated exchange with Dify: request, one OAuth2 refresh on 401, error mapping.

Kept apart from the endpoint methods so the hot path (headers, send, status check) is easy to
see and to keep lean. It touches the transport only through ``send``/``stream`` and reads only
plain response values, so an asyncio client can mirror this short flow with ``await`` and reuse
the request building, error mapping and masking as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from airflow_dify.client.auth import DifyAuth
from airflow_dify.client.errors import DifyError, E
from airflow_dify.client.responses import CallContext, error_from_response
from airflow_dify.client.transport import Request, Response, StreamedResponse, Timeout, Transport, as_timeout

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


def _complete(resp: Response) -> Response:
    return resp


class Exchange:
    """Sends one authenticated request and returns a 2xx answer, or raises the masked DifyError.

    :param transport: sends the requests (never follows redirects).
    :param base_url: the normalised API base URL; paths are appended to it.
    :param timeout: seconds, or (connect, read).
    """

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        auth: DifyAuth,
        *,
        timeout: float | tuple[float, float],
        user_agent: str,
    ) -> None:
        self.transport = transport
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
            data = json.dumps(body, allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        return Request(method, self.base_url + path, hdrs, data, self.timeout, ctx.where)

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

    def failure(self, resp: Response, ctx: CallContext, *, refreshed: bool = False) -> DifyError:
        """The masked error for a non-2xx answer."""
        err = error_from_response(resp, ctx)
        if refreshed and resp.status == 401:
            err = err.evolve(message=err.message + _REFRESHED)
        return mask(err, self.auth.secrets())

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
        # A refused OAuth2 token is refreshed and the request re-sent once: not a retry, since
        # nothing ran; a static key cannot be refreshed and its 401 is final.
        sent = self._guarded(self.auth.header)
        resp = self._guarded(open_, self.request(method, path, ctx, sent, body, headers))
        refreshed = False
        if resp.status == 401 and self.auth.on_unauthorized(sent):
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
            masked = mask(err, self.auth.secrets())
            if masked is err:
                raise
        raise masked  # outside the handler, so the unmasked error is not kept as its context


__all__ = ["Exchange", "mask", "read_all"]
