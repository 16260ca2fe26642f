"""App API key handling: clean up what users paste, refuse what cannot work, never show the key.

Users paste keys with trailing newlines, surrounding quotes, or a ``Bearer `` prefix copied from a
cURL example; Dify answers all of those with a bare 401. We normalise them here so the one place
that builds the ``Authorization`` header always sends exactly ``Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from typing import Protocol

from airflow_dify.client.errors import DifyConfigError

log = logging.getLogger("airflow_dify.client")

_APP_KEY_RE = re.compile(r"^app-[A-Za-z0-9]{24}$")
_BEARER_RE = re.compile(r"^bearer\s+", re.IGNORECASE)
# Straight and typographic quotes (keys are often copied from rendered docs or JSON).
_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019"}
_MIN_KEY_LEN = 8

_warned_lock = threading.Lock()
_warned: set[str] = set()


def preview(secret: str) -> str:
    """At most the first 4 characters (fewer for short values) so messages can point at a key."""
    shown = secret[: min(4, len(secret) // 2)]
    return f"'{shown}\u2026'"


def _strip_once(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and _QUOTE_PAIRS.get(value[0]) == value[-1]:
        value = value[1:-1].strip()
    if value.lower() == "bearer":  # the prefix alone: nothing left of a key
        return ""
    return _BEARER_RE.sub("", value, count=1).strip()


def clean_api_key(raw: str | None) -> str:
    """The key without what users paste around it; ``""`` when nothing is left. Never raises.

    Strips surrounding whitespace/newlines, quotes and a leading ``Bearer `` (any case). Kept apart
    from :func:`validate_api_key` so connection parsing can normalise a key it will not use (e.g.
    under ``auth_type: oauth2``) without failing on it.
    """
    key = str(raw or "")
    for _ in range(4):  # "Bearer 'app-x'", "'Bearer app-x'": a few passes reach a fixed point
        cleaned = _strip_once(key)
        if cleaned == key:
            break
        key = cleaned
    return key


def validate_api_key(key: str | None) -> str:
    """Return ``key`` (already cleaned) if it can work, or raise DifyConfigError without the secret.

    A key with whitespace or control/non-ASCII characters inside, or shorter than any real key,
    would only earn a bare 401 from Dify; an unusual but plausible format only warns (once).
    """
    if not key:
        raise DifyConfigError("no API key: set the connection's password to the app key")
    shown = preview(key)
    if any(ch.isspace() for ch in key):
        raise DifyConfigError(
            f"API key {shown} contains whitespace inside it; paste the key exactly as Dify shows it"
        )
    bad = next((i for i, ch in enumerate(key) if not 33 <= ord(ch) <= 126), None)
    if bad is not None:
        raise DifyConfigError(
            f"API key {shown} contains a control or non-ASCII character at position {bad + 1}; "
            "paste the key exactly as Dify shows it"
        )
    if len(key) < _MIN_KEY_LEN:
        raise DifyConfigError(
            f"API key {shown} is too short ({len(key)} characters); "
            "a Dify app key is 'app-' followed by 24 letters and digits"
        )
    if not _APP_KEY_RE.match(key):
        _warn_once(key, shown)
    return key


def normalize_api_key(raw: str | None) -> str:
    """Return the bare app key from a pasted value: :func:`clean_api_key` then :func:`validate_api_key`."""
    key = clean_api_key(raw)
    if not key and raw is not None and str(raw).strip():
        raise DifyConfigError("no API key: the value holds only 'Bearer' or quotes; paste the app key itself")
    return validate_api_key(key)


def _warn_once(key: str, shown: str) -> None:
    digest = hashlib.sha256(key.encode()).hexdigest()
    with _warned_lock:
        if digest in _warned:
            return
        _warned.add(digest)
    if key.startswith("ds-"):
        log.warning(
            "API key %s is a knowledge-base (dataset) key: Dify refuses those on app endpoints "
            "(chat-messages, completion-messages, workflows/run); use the app's key (app-...)",
            shown,
        )
    else:
        log.warning(
            "API key %s does not look like a Dify app key ('app-' + 24 letters/digits); "
            "using it anyway (self-hosted forks may differ)",
            shown,
        )


class DifyAuth(Protocol):
    """What the client needs from an auth strategy."""

    #: "api_key" or "oauth2": chooses the wording of 401 messages.
    kind: str

    def header(self) -> str:
        """The full ``Authorization`` header value for the next request."""

    def on_unauthorized(self, sent: str | None = None) -> bool:
        """A 401 answered a request sent with header ``sent``; True when a resend may succeed."""

    def secrets(self) -> list[str]:
        """Values that must never appear in logs or messages (masked by the client)."""


class ApiKeyAuth:
    """Static app key sent as ``Authorization: Bearer <key>``.

    :param key: the app API key; normalised with :func:`normalize_api_key`.
    """

    kind = "api_key"
    __slots__ = ("_key", "_header")

    def __init__(self, key: str | None) -> None:
        self._key = normalize_api_key(key)
        self._header = "Bearer " + self._key

    def header(self) -> str:
        return self._header

    def on_unauthorized(self, sent: str | None = None) -> bool:
        return False  # a static key cannot be refreshed: the 401 is final

    def secrets(self) -> list[str]:
        return [self._key]

    @property
    def preview(self) -> str:
        return preview(self._key)

    def __repr__(self) -> str:
        return f"ApiKeyAuth(key={self.preview})"

    __str__ = __repr__
