"""The one table from transport failures to DifyErrors.

What matters for a failed exchange is *when* it failed. Before the request was sent (DNS,
refused, connect timeout, TLS handshake, proxy) Dify never saw it: nothing ran, nothing was
billed, a retry is free. After it was sent (read timeout, reset, a body cut short) Dify may be
running it and billing for it, so the error says ``maybe_billed`` and the retry policy decides.

A failure is classified by its chain of causes, outermost first; wrappers that only say "the
connection broke" (urllib3's ``ProtocolError``) are looked through, so the reason inside them
decides. A transport built on another library adds its own rows in front of :data:`STDLIB_ROWS`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import urllib3.exceptions as u3

from airflow_dify.client.errors import (
    DifyConfigError,
    DifyError,
    DifyResponseError,
    DifyTimeoutError,
    DifyTransportError,
)
from airflow_dify.client.responses import clip


@dataclass(frozen=True)
class Failure:
    """One kind of failure: the error it becomes, and whether the request had been sent.

    ``sent`` is the billing question: a request that left us may have run, so its error is
    ``maybe_billed``; one that never left is safe to retry.
    """

    error: type[DifyError]
    code: str
    template: str
    sent: bool
    retryable: bool | None = None

    def __call__(self, where: str, reason: str) -> DifyError:
        message = self.template.format(where=where, reason=reason)
        return self.error(message, code=self.code, maybe_billed=self.sent, retryable=self.retryable)


Rows = tuple[tuple[tuple[type[BaseException], ...], Failure], ...]

# -- before the request was sent: not billed ------------------------------------------------------
BAD_URL = Failure(DifyConfigError, "config_error", "invalid URL for {where}: {reason}", sent=False)
CANNOT_CONNECT = Failure(
    DifyTransportError, "connection_error", "{where}: cannot connect ({reason})", sent=False
)
PROXY_FAILED = Failure(
    DifyTransportError,
    "connection_error",
    "{where}: cannot connect through the proxy from HTTP(S)_PROXY/ALL_PROXY ({reason}); "
    "check the proxy, or list the host in NO_PROXY",
    sent=False,
)
CONNECT_TIMEOUT = Failure(
    DifyTransportError, "connect_timeout", "{where}: connection timed out ({reason})", sent=False
)
TLS_FAILED = Failure(
    DifyTransportError,
    "tls_error",
    "{where}: TLS error ({reason}); fix the certificate chain or, only for a trusted internal host, "
    "set verify_ssl to false",
    sent=False,
    retryable=False,  # a certificate does not fix itself between attempts
)

# -- after the request was sent: Dify may have run (and billed) it --------------------------------
READ_TIMEOUT = Failure(
    DifyTimeoutError,
    "timeout",
    "{where}: no answer within the read timeout; Dify may still be running (and billing) the "
    "request; for long runs use streaming or raise the timeout",
    sent=True,
)
DROPPED = Failure(
    DifyTransportError,
    "connection_reset",
    "{where}: connection dropped after the request was sent ({reason})",
    sent=True,
)
BODY_BROKEN = Failure(
    DifyResponseError, "malformed_response", "{where}: the response body broke off ({reason})", sent=True
)


#: Failures any socket-based transport can see; the last rows of every table.
STDLIB_ROWS: Rows = (
    ((ssl.SSLError, ssl.CertificateError), TLS_FAILED),
    ((socket.gaierror, ConnectionRefusedError), CANNOT_CONNECT),
    ((TimeoutError,), READ_TIMEOUT),  # urllib3 reports connect timeouts as its own class
    ((http.client.IncompleteRead,), BODY_BROKEN),
    ((ConnectionError, http.client.HTTPException), DROPPED),  # reset, aborted, broken pipe
)

#: urllib3's classes. Order matters where they subclass each other: NewConnectionError is a
#: ConnectTimeoutError, NameResolutionError a NewConnectionError.
URLLIB3_ROWS: Rows = (
    ((u3.LocationValueError,), BAD_URL),
    ((u3.ProxyError,), PROXY_FAILED),
    ((u3.NewConnectionError,), CANNOT_CONNECT),
    ((u3.ConnectTimeoutError,), CONNECT_TIMEOUT),
    ((u3.ReadTimeoutError,), READ_TIMEOUT),
    ((u3.SSLError,), TLS_FAILED),
    ((u3.DecodeError, u3.IncompleteRead, u3.InvalidChunkLength), BODY_BROKEN),
    *STDLIB_ROWS,
)

#: Classes that only wrap the real reason; a chain of nothing but these means "dropped".
WRAPPERS: tuple[type[BaseException], ...] = (u3.ProtocolError,)


def transport_error(exc: BaseException, where: str, rows: Rows = URLLIB3_ROWS) -> DifyError:
    """The DifyError for a failed exchange; ``where`` names the call in the message."""
    reason = clip(str(exc), 300)
    wrapped = False
    for cause in _chain(exc):
        if isinstance(cause, WRAPPERS):
            wrapped = True
            continue
        for classes, build in rows:
            if isinstance(cause, classes):
                return build(where, reason)
    # Nothing we know: a connection that broke mid-exchange may have run; anything else did not.
    return DROPPED(where, reason) if wrapped else CANNOT_CONNECT(where, reason)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes: ``__cause__``, exceptions passed as arguments, then ``__context__``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        inner = next((a for a in cur.args if isinstance(a, BaseException)), None)
        cur = cur.__cause__ or inner or getattr(cur, "original_error", None) or cur.__context__


__all__ = ["STDLIB_ROWS", "URLLIB3_ROWS", "WRAPPERS", "Failure", "transport_error"]
