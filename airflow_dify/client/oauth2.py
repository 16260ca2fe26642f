"""OAuth2 client credentials (RFC 6749 s4.4) for gateways that front Dify with access tokens.

Tokens are cached process-wide, keyed by (token URL, client, scope, audience, secret digest), so
every thread and every client instance of a batch shares one token and one refresh: a batch of
10 000 rows fetches a token once per lifetime, not once per row or per thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from airflow_dify.client.errors import (
    DifyAuthError,
    DifyConfigError,
    DifyError,
    DifyResponseError,
    DifyTimeoutError,
    DifyTransportError,
)
from airflow_dify.client.responses import describe_body, parse_retry_after
from airflow_dify.client.transport import USER_AGENT, Request, Response, Transport, as_timeout
from airflow_dify.client.urllib3_transport import Urllib3Transport
from airflow_dify.client.urls import TOKEN_URL_EXAMPLE, normalize_url

log = logging.getLogger("airflow_dify.client")

_CacheKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()
    refresh_at: float


_cache: dict[_CacheKey, _Token] = {}
_locks: dict[_CacheKey, threading.Lock] = {}
_registry_lock = threading.Lock()


def _lock_for(key: _CacheKey) -> threading.Lock:
    with _registry_lock:
        return _locks.setdefault(key, threading.Lock())


def clear_token_cache() -> None:
    """Forget every cached token (tests; credential rotation in a long-lived process)."""
    with _registry_lock:
        _cache.clear()


class OAuth2ClientCredentials:
    """Fetches and caches a client-credentials access token, sent as ``Authorization: Bearer``.

    :param token_url: the token endpoint (http/https).
    :param client_id: the OAuth2 client id (not secret; shown in messages).
    :param client_secret: the client secret (never logged or shown).
    :param scope: optional ``scope`` form field.
    :param audience: optional ``audience`` form field (Auth0, Okta and similar gateways).
    :param client_auth: "basic" (HTTP Basic, RFC 6749 s2.3.1) or "body" (form fields).
    :param timeout: token request timeout, seconds or (connect, read).
    :param verify_ssl: verify the token endpoint's TLS certificate (for the transport it builds).
    :param default_expires_in: lifetime assumed when the server omits ``expires_in``.
    :param refresh_margin: refresh this many seconds before expiry; default max(30 s, 10% of the
        lifetime), never more than half of it.
    :param on_token: called with every newly seen token (the Airflow hook masks it in task logs).
    :param transport: sends the token requests; default a small :class:`Urllib3Transport` of its
        own, built on first use and closed by :meth:`close` (a given one is not closed).
    """

    kind = "oauth2"

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        audience: str | None = None,
        client_auth: str = "basic",
        timeout: float | tuple[float, float] = (10.0, 30.0),
        verify_ssl: bool = True,
        default_expires_in: float = 300.0,
        refresh_margin: float | None = None,
        on_token: Callable[[str], None] | None = None,
        transport: Transport | None = None,
    ) -> None:
        token_url = normalize_url(token_url, "token_url", TOKEN_URL_EXAMPLE)
        client_id = (client_id or "").strip()
        client_secret = (client_secret or "").strip()
        if not client_id or not client_secret:
            raise DifyConfigError("OAuth2 needs client_id and client_secret (connection extras)")
        if client_auth not in ("basic", "body"):
            raise DifyConfigError(f"client_auth must be 'basic' or 'body' (got {client_auth!r})")
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope or None
        self.audience = audience or None
        self.client_auth = client_auth
        self.timeout = timeout
        self.verify_ssl = verify_ssl
        self.default_expires_in = float(default_expires_in)
        self.refresh_margin = refresh_margin
        self.on_token = on_token
        self._secret = client_secret
        # The secret digest is part of the key: a wrong secret must not reuse a token obtained
        # with the right one by another instance.
        digest = hashlib.sha256(client_secret.encode()).hexdigest()[:16]
        self._key: _CacheKey = (token_url, client_id, self.scope or "", self.audience or "", digest)
        self._lock = _lock_for(self._key)
        self._transport = transport
        self._owns_transport = transport is None
        self._announced: str | None = None

    # -- DifyAuth protocol -------------------------------------------------------------------
    def header(self) -> str:
        return "Bearer " + self.token()

    def on_unauthorized(self, sent: str | None = None) -> bool:
        """Drop the cached token if it is still the one that was refused; True: resend once."""
        sent_token = sent[7:] if sent and sent[:7].lower() == "bearer " else sent
        with self._lock:
            current = _cache.get(self._key)
            if current is not None and (sent_token is None or current.value == sent_token):
                del _cache[self._key]
        return True

    def secrets(self) -> list[str]:
        current = _cache.get(self._key)
        return [self._secret] + ([current.value] if current else [])

    # -- token cache ---------------------------------------------------------------------------
    def token(self) -> str:
        """A valid access token: cached, or fetched by exactly one thread per cache key."""
        current = _cache.get(self._key)
        if current is None or time.monotonic() >= current.refresh_at:
            current = self._refresh(current)
        if current.value is not self._announced:
            self._announce(current.value)
        return current.value

    def cached_header(self) -> str | None:
        """The header from a cached, announced token not yet due for refresh; None: call
        :meth:`header` (which may fetch). Lets an event loop skip a thread hop per request."""
        current = _cache.get(self._key)
        if current is None or current.value is not self._announced or time.monotonic() >= current.refresh_at:
            return None
        return "Bearer " + current.value

    def seconds_left(self) -> float | None:
        """How long the cached token stays valid (None: none cached); for diagnostics."""
        current = _cache.get(self._key)
        return None if current is None else max(0.0, current.expires_at - time.monotonic())

    def invalidate(self) -> None:
        with self._lock:
            _cache.pop(self._key, None)

    def _refresh(self, seen: _Token | None) -> _Token:
        with self._lock:
            current = _cache.get(self._key)
            now = time.monotonic()
            if current is not None and now < current.refresh_at:
                return current  # another thread refreshed while we waited for the lock
            try:
                fresh = self._fetch()
            except DifyError as err:
                if current is not None and now < current.expires_at:
                    # Refreshing early failed but the old token still works: keep using it.
                    log.warning(
                        "OAuth2 token refresh failed (%s); using the current token until it expires", err
                    )
                    return current
                raise
            self._announce(fresh.value)  # before publishing, so it is masked before anyone logs it
            _cache[self._key] = fresh
            return fresh

    def _announce(self, token: str) -> None:
        self._announced = token
        if self.on_token is not None:
            try:
                self.on_token(token)
            except Exception as exc:  # masking must not break the call; the token stays unlogged
                log.warning("on_token callback failed: %s", type(exc).__name__)

    def _fetch(self) -> _Token:
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        headers = {"Accept": "application/json"}
        if self.client_auth == "basic":
            pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._secret
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["User-Agent"] = USER_AGENT
        where = f"OAuth2 token endpoint {self.token_url} (client '{self.client_id}')"
        request = Request(
            "POST", self.token_url, headers, urlencode(form).encode(), as_timeout(self.timeout), where
        )
        try:
            # The transport never follows redirects: that would re-send the credentials elsewhere.
            resp = self._get_transport().send(request)
        except (DifyTransportError, DifyResponseError) as exc:
            if isinstance(exc, DifyTimeoutError) or exc.code == "connect_timeout":
                raise DifyTransportError(f"{where} did not answer in time", code="token_timeout") from None
            raise DifyTransportError(
                f"cannot reach {where}: {exc.code}",
                code="token_endpoint_unreachable",
                retryable=exc.retryable,
            ) from None
        return self._parse(resp, where)

    def _get_transport(self) -> Transport:
        if self._transport is None:
            # One token request at a time per cache key: two connections are plenty.
            self._transport = Urllib3Transport(pool_size=2, verify_ssl=self.verify_ssl)
        return self._transport

    def _parse(self, resp: Response, where: str) -> _Token:
        status = resp.status
        body: Any
        try:
            body = json.loads(resp.body)
        except ValueError:
            body = None
        if status == 200 and isinstance(body, dict):
            token = body.get("access_token")
            if not isinstance(token, str) or not token:
                raise DifyAuthError(
                    f"{where} answered 200 without an access_token", code="invalid_token_response"
                )
            return self._make_token(token, body.get("expires_in"))
        code = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
        detail = body.get("error_description") if isinstance(body, dict) else None
        detail = self._mask(str(detail))[:200] if detail else ""
        if isinstance(body, dict):
            said = f"{code or 'error'}" + (f": {detail}" if detail else "")
        else:
            text = resp.body.decode("utf-8", errors="replace")
            said = describe_body(status, self._mask(text), resp.headers.get("Content-Type", ""))
        if status == 429 or status >= 500 or status in (301, 302, 303, 307, 308):
            raise DifyTransportError(
                f"{where} failed with HTTP {status} ({said})",
                status=status,
                code=code or "token_endpoint_unavailable",
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                retryable=status == 429 or status >= 500,
            )
        hint = {
            "invalid_client": "check client_id/client_secret and client_auth ('basic' or 'body')",
            "unauthorized_client": "the client is not allowed the client_credentials grant",
            "invalid_scope": "check the scope/audience configured for this client",
            "unsupported_grant_type": "the server does not offer the client_credentials grant",
        }.get(code or "", "check the OAuth2 settings of the connection")
        raise DifyAuthError(f"{where} refused the token request ({said}); {hint}", status=status, code=code)

    def _make_token(self, value: str, expires_in: Any) -> _Token:
        try:
            ttl = float(expires_in) if expires_in is not None else self.default_expires_in
        except (TypeError, ValueError):
            ttl = self.default_expires_in
        if ttl <= 0:
            ttl = self.default_expires_in
        margin = self.refresh_margin if self.refresh_margin is not None else max(30.0, 0.1 * ttl)
        margin = min(margin, 0.5 * ttl)  # a short lifetime must not mean "refresh on every call"
        now = time.monotonic()
        return _Token(value=value, expires_at=now + ttl, refresh_at=now + ttl - margin)

    def _mask(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def close(self) -> None:
        if self._owns_transport and self._transport is not None:
            self._transport.close()

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"scope={self.scope!r}, audience={self.audience!r}, client_secret=***)"
        )

    __str__ = __repr__
