"""Map HTTP answers to JSON bodies or DifyError subclasses.

Dify answers errors as ``{code, message, status}``; gateways in front of it (nginx, Cloudflare)
answer HTML pages. Both must become an error that says what to do, without ever crashing on an
unexpected body and without echoing anything secret. Everything here reads plain
:class:`~airflow_dify.client.transport.Response` values, whichever transport produced them;
transport failures are mapped in :mod:`airflow_dify.client.failures`.
"""

from __future__ import annotations

import email.utils
import functools
import html
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from airflow_dify.client import errors
from airflow_dify.client.errors import DifyError
from airflow_dify.client.transport import Response
from airflow_dify.json_codec import loads

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

    @functools.cached_property
    def where(self) -> str:
        """The call as transport errors name it."""
        return f"{self.endpoint} at {self.base_url}"


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


def clip(text: str, limit: int = 160) -> str:
    """One line of at most ``limit`` characters."""
    text = _SPACE_RE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe_body(status: int, text: str, content_type: str) -> str:
    """A one-line description of a non-JSON body (HTML proxy pages, plain text, nothing)."""
    if not text.strip():
        return f"HTTP {status} with an empty body"
    if "html" in content_type.lower() or "<html" in text[:500].lower() or "<title" in text[:2000].lower():
        match = _TITLE_RE.search(text)
        title = html.unescape(match.group(1)) if match else html.unescape(_TAG_RE.sub(" ", text))
        return f"HTTP {status} from the gateway (HTML page: '{clip(title, 120)}')"
    return f"HTTP {status} (non-JSON body: '{clip(text, 120)}')"


def error_for_status(
    status: int,
    code: str | None,
    message: str,
    ctx: CallContext,
    *,
    retry_after: float | None = None,
    from_dify: bool = True,
    maybe_billed: bool = False,
    workflow_run_id: str | None = None,
) -> DifyError:
    """The exception class and an actionable message for one HTTP error status.

    :param maybe_billed: the run is known to have started (an ``error`` event in a stream).
    """
    kwargs: dict[str, Any] = {"status": status, "code": code, "retry_after": retry_after}
    if maybe_billed:
        kwargs["maybe_billed"] = True
    if workflow_run_id:
        kwargs["workflow_run_id"] = workflow_run_id
    if status == 400:
        if "blocking mode" in message or "only supports streaming" in message:
            message += "; this app mode needs response_mode='streaming'"
        return errors.DifyBadRequestError(message, **kwargs)
    if status == 401:
        return errors.DifyAuthError(_unauthorized_message(message, ctx, from_dify), **kwargs)
    if status == 403:
        hint = (
            " Enable the app's API access in Dify (app > API Access) and check that the app and "
            "workspace are active; a different app's key will not help."
        )
        return errors.DifyForbiddenError(message + hint if from_dify else message, **kwargs)
    if status == 404:
        if ctx.hint_base_url_on_404:
            message += f"; check that the base URL ends with /v1 (got {ctx.base_url})"
        return errors.DifyNotFoundError(message, **kwargs)
    if status == 429:
        if code == "rate_limit_error":
            return errors.DifyQuotaError(
                message + "; this is a plan quota on Dify's side: retrying will not clear it", **kwargs
            )
        kwargs["code"] = code or "too_many_requests"
        return errors.DifyRateLimitError(message, **kwargs)
    if status >= 500:
        if status in _MAYBE_BILLED_5XX:
            message += "; the gateway timed out, Dify may still have run (and billed) the request"
            kwargs["maybe_billed"] = True
        return errors.DifyServerError(message, **kwargs)
    return errors.DifyAPIError(message, retryable=False, **kwargs)


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


def error_from_response(resp: Response, ctx: CallContext) -> DifyError:
    """The error for a non-2xx answer; tolerates any body."""
    status = resp.status
    if 300 <= status < 400:
        return redirect_error(status, resp.headers.get("Location"), ctx)
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    content_type = resp.headers.get("Content-Type", "")
    text = resp.body.decode("utf-8", errors="replace")
    body: Any = None
    if "json" in content_type.lower() or text[:1] in ("{", "["):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    if isinstance(body, dict) and ("code" in body or "message" in body):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = str(body.get("message") or f"HTTP {status}")
        return error_for_status(status, code, clip(message, 500), ctx, retry_after=retry_after)
    return error_for_status(
        status, None, describe_body(status, text, content_type), ctx, retry_after=retry_after, from_dify=False
    )


def redirect_error(status: int, location: str | None, ctx: CallContext) -> DifyError:
    """Redirects are never followed: the key would travel to an address nobody configured."""
    return errors.DifyAPIError(
        f"{ctx.endpoint}: HTTP {status} redirect to {location or '?'}; redirects are not "
        "followed so the API key never travels to another address: set the connection's host "
        "to the final URL (e.g. https:// instead of http://)",
        status=status,
        code="redirect",
        retryable=False,
    )


def json_body(resp: Response, ctx: CallContext) -> dict[str, Any]:
    """The JSON object of a 2xx answer; truncated or non-JSON bodies raise DifyResponseError."""
    try:
        body = loads(resp.body)
    except ValueError as exc:
        text = resp.body.decode("utf-8", errors="replace")
        raise errors.DifyResponseError(
            f"{ctx.endpoint}: HTTP {resp.status} but the body is not valid JSON "
            f"({type(exc).__name__}; {len(text)} characters starting '{clip(text, 60)}'); "
            "a proxy may have cut it, and Dify may have run the request",
            status=resp.status,
        ) from None
    if not isinstance(body, dict):
        raise errors.DifyResponseError(
            f"{ctx.endpoint}: HTTP {resp.status} but the JSON is a {type(body).__name__}, not an object",
            status=resp.status,
        )
    return body
