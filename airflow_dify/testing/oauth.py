"""OAuth2 client-credentials token endpoint (RFC 6749 section 4.4) in front of the fake.

Dify's /v1 has no OAuth; deployments put a gateway in front that swaps a client's access token
for app access. The fake plays that gateway: a token acts for one app.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus

TokenReply = tuple[int, dict[str, str], dict[str, Any]]


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str
    app_id: str
    scope: str | None = None
    audience: str | None = None

    def __repr__(self) -> str:
        return f"OAuthClient(client_id={self.client_id!r}, app_id={self.app_id!r}, scope={self.scope!r})"


class TokenStore:
    """Registered clients and issued tokens; thread-safe."""

    def __init__(self, token_ttl: float | None = 3600, clock: Callable[[], float] = time.monotonic) -> None:
        self.token_ttl = token_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, OAuthClient] = {}
        self._tokens: dict[str, tuple[str, float | None]] = {}  # token -> (app id, expiry)
        self.issued = 0
        self._history: list[str] = []  # every token ever issued, for leak scans in tests

    def add_client(self, client: OAuthClient) -> None:
        with self._lock:
            self._clients[client.client_id] = client

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()

    def reset(self) -> None:
        """Forget tokens and the issue counter; clients stay registered."""
        with self._lock:
            self._tokens.clear()
            self.issued = 0

    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, oldest first, including revoked and expired ones."""
        with self._lock:
            return list(self._history)

    def app_for(self, token: str) -> str | None:
        """The app id a live token acts for; None when unknown, revoked or expired."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return None
            app_id, expiry = entry
            if expiry is not None and self._clock() >= expiry:
                del self._tokens[token]
                return None
            return app_id

    def _authenticate(self, authorization: str | None, form: dict[str, str]) -> OAuthClient | None:
        candidates = [(form.get("client_id"), form.get("client_secret"))]
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic" and value:
            try:
                raw = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = raw.partition(":")
            if not sep:
                return None
            # RFC 6749 2.3.1 form-urlencodes id and secret before Basic encoding; many clients
            # (requests' auth=) do not, so accept both spellings.
            candidates = [(unquote_plus(user), unquote_plus(password)), (user, password)]
        for client_id, secret in candidates:
            if not client_id or secret is None:
                continue
            with self._lock:
                client = self._clients.get(client_id)
            if client is not None and secrets.compare_digest(client.client_secret.encode(), secret.encode()):
                return client
        return None

    def handle(self, authorization: str | None, raw_body: bytes) -> TokenReply:
        """Answer one POST to the token endpoint: (status, extra headers, JSON body)."""
        form = {k: v[0] for k, v in parse_qs(raw_body.decode("utf-8", "replace")).items()}
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        client = self._authenticate(authorization, form)
        if client is None:
            return 401, {"WWW-Authenticate": 'Basic realm="oauth2"', **no_store}, {"error": "invalid_client"}
        grant = form.get("grant_type")
        if grant is None:
            return 400, no_store, {"error": "invalid_request", "error_description": "grant_type is required"}
        if grant != "client_credentials":
            return 400, no_store, {"error": "unsupported_grant_type"}
        scope = form.get("scope")
        if scope and client.scope is not None and not set(scope.split()) <= set(client.scope.split()):
            return 400, no_store, {"error": "invalid_scope"}
        audience = form.get("audience")
        if audience and client.audience is not None and audience != client.audience:
            return 400, no_store, {"error": "invalid_target", "error_description": "unknown audience"}
        token = secrets.token_urlsafe(32)
        ttl = self.token_ttl
        with self._lock:
            self._tokens[token] = (client.app_id, None if ttl is None else self._clock() + ttl)
            self.issued += 1
            self._history.append(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if ttl is not None:
            body["expires_in"] = int(ttl)
        granted = scope or client.scope
        if granted:
            body["scope"] = granted
        return 200, no_store, body
