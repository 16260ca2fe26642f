"""Map HTTP answers and transport failures to DifyResult bodies or DifyError subclasses.

Dify answers errors as ``{code, message, status}``; gateways in front of it (nginx, Cloudflare)
answer HTML pages. Both must become an error that says what to do, without ever crashing on an
unexpected body and without echoing anything secret.
"""

from __future__ import annotations

import email.utils
import html
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from airflow_dify.client.errors import (
    DifyAPIError,
    DifyAuthError,
    DifyBadRequestError,
    DifyConfigError,
    DifyError,
    DifyForbiddenError,
    DifyNotFoundError,
    DifyQuotaError,
    DifyRateLimitError,
    DifyResponseError,
    DifyServerError,
    DifyTimeoutError,
    DifyTransportError,
)

_KNOWN_5XX = frozenset({500, 502, 503, 504, 524})
#: The gateway gave up waiting while Dify kept running: the call may have been billed.
_MAYBE_BILLED_5XX = frozenset({504, 524})
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class CallContext:
    """What an error message needs to be actionable: where we called and how we authenticated."""

    base_url: str
    endpoint: str
    auth_kind: str = "api_key"
    #: False for lookups by id (GET /workflows/run/{id}) where a 404 is about the id, not the URL.
    hint_base_url_on_404: bool = True


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _clip(text: str, limit: int = 160) -> str:
    text = _SPACE_RE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe_body(status: int, text: str, content_type: str) -> str:
    """A one-line description of a non-JSON body (HTML proxy pages, plain text, nothing)."""
    if not text.strip():
        return f"HTTP {status} with an empty body"
    if "html" in content_type.lower() or "<html" in text[:500].lower() or "<title" in text[:2000].lower():
        match = _TITLE_RE.search(text)
        title = html.unescape(match.group(1)) if match else html.unescape(_TAG_RE.sub(" ", text))
        return f"HTTP {status} from the gateway (HTML page: '{_clip(title, 120)}')"
    return f"HTTP {status} (non-JSON body: '{_clip(text, 120)}')"


def error_for_status(
    status: int,
    code: str | None,
    message: str,
    ctx: CallContext,
    *,
    retry_after: float | None = None,
    from_dify: bool = True,
) -> DifyError:
    """The exception class and an actionable message for one HTTP error status."""
    kwargs: dict[str, Any] = {"status": status, "code": code, "retry_after": retry_after}
    if status == 400:
        if "blocking mode" in message or "only supports streaming" in message:
            message += "; this app mode needs response_mode='streaming'"
        return DifyBadRequestError(message, **kwargs)
    if status == 401:
        return DifyAuthError(_unauthorized_message(message, ctx, from_dify), **kwargs)
    if status == 403:
        hint = (
            " Enable the app's API access in Dify (app > API Access) and check that the app and "
            "workspace are active; a different app's key will not help."
        )
        return DifyForbiddenError(message + hint if from_dify else message, **kwargs)
    if status == 404:
        if ctx.hint_base_url_on_404:
            message += f"; check that the base URL ends with /v1 (got {ctx.base_url})"
        return DifyNotFoundError(message, **kwargs)
    if status == 429:
        if code == "rate_limit_error":
            return DifyQuotaError(
                message + "; this is a plan quota on Dify's side: retrying will not clear it", **kwargs
            )
        kwargs["code"] = code or "too_many_requests"
        return DifyRateLimitError(message, **kwargs)
    if status >= 500:
        billed = status in _MAYBE_BILLED_5XX
        if billed:
            message += "; the gateway timed out, Dify may still have run (and billed) the request"
        return DifyServerError(message, maybe_billed=billed, **kwargs)
    return DifyAPIError(message, retryable=False, **kwargs)


def _unauthorized_message(message: str, ctx: CallContext, from_dify: bool) -> str:
    said = f"Dify said: '{message}'" if from_dify else message
    if ctx.auth_kind == "oauth2":
        return (
            f"the OAuth2 access token was refused ({said}); check that the token issued for this "
            "client is accepted by the gateway in front of Dify (token_url, scope, audience)"
        )
    return (
        f"the API key was refused ({said}). It must be this app's own API key (app-..., from the "
        "app's API Access page), not a dataset (ds-) or console key; the client always sends it as "
        "'Authorization: Bearer <key>', so store the bare key"
    )


def error_from_response(resp: requests.Response, ctx: CallContext) -> DifyError:
    """Build the error for a non-2xx response; reads the body, tolerates any content."""
    status = resp.status_code
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    content_type = resp.headers.get("Content-Type", "")
    try:
        text = resp.text
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        text = ""
    body: Any = None
    if "json" in content_type.lower() or text[:1] in ("{", "["):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    if isinstance(body, dict) and ("code" in body or "message" in body):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = str(body.get("message") or f"HTTP {status}")
        return error_for_status(status, code, _clip(message, 500), ctx, retry_after=retry_after)
    return error_for_status(
        status, None, describe_body(status, text, content_type), ctx, retry_after=retry_after, from_dify=False
    )


def json_body(resp: requests.Response, ctx: CallContext) -> dict[str, Any]:
    """The JSON object of a 2xx response; truncated or non-JSON bodies raise DifyResponseError."""
    try:
        body = resp.json()
    except (ValueError, requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        try:
            text = resp.text
        except (requests.RequestException, OSError):
            text = ""
        raise DifyResponseError(
            f"{ctx.endpoint}: HTTP {resp.status_code} but the body is not valid JSON "
            f"({type(exc).__name__}; {len(text)} characters starting '{_clip(text, 60)}'); "
            "a proxy may have cut it, and Dify may have run the request",
            status=resp.status_code,
        ) from None
    if not isinstance(body, dict):
        raise DifyResponseError(
            f"{ctx.endpoint}: HTTP {resp.status_code} but the JSON is a {type(body).__name__}, not an object",
            status=resp.status_code,
        )
    return body


def error_from_exception(exc: BaseException, ctx: CallContext) -> DifyError:
    """A requests/urllib3 failure as a DifyError; whether it may have been billed depends on when."""
    where = f"{ctx.endpoint} at {ctx.base_url}"
    reason = _clip(str(exc), 300)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return DifyTransportError(f"{where}: connection timed out ({reason})", code="connect_timeout")
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return DifyTimeoutError(
            f"{where}: no answer within the read timeout; Dify may still be running (and billing) "
            "the request; for long runs use streaming or raise the timeout",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return DifyTransportError(
            f"{where}: TLS error ({reason}); fix the certificate chain or, only for a trusted "
            "internal host, set verify_ssl to false",
            code="tls_error",
            retryable=False,
        )
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return DifyTransportError(f"{where}: too many redirects", code="too_many_redirects", retryable=False)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return DifyConfigError(f"invalid URL for {where}: {reason}")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return DifyResponseError(f"{where}: the response body broke off ({reason})")
    # Refused/DNS failures happen before anything is sent; a reset or a dropped answer after the
    # request went out means Dify may have started the run.
    sent = _after_send(exc)
    what = "connection dropped after the request was sent" if sent else "cannot connect"
    return DifyTransportError(
        f"{where}: {what} ({reason})",
        code="connection_reset" if sent else "connection_error",
        maybe_billed=sent,
    )


def _after_send(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError)):
            return False
        if isinstance(cur, (urllib3.exceptions.ProtocolError, ConnectionResetError, BrokenPipeError)):
            return True
        nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = getattr(cur, "reason", None) or nxt or cur.__cause__ or cur.__context__
    return False
