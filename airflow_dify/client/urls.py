"""The one check of every URL the provider is configured with (Dify base URL, OAuth2 token URL).

Messages name the setting at fault and never echo credentials embedded in a URL.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

from airflow_dify.client.errors import DifyConfigError

log = logging.getLogger("airflow_dify.client")
DIFY_URL_EXAMPLE = "https://api.dify.ai/v1"
TOKEN_URL_EXAMPLE = "https://idp.example.com/oauth2/token"
_warned: set[str] = set()
_warned_lock = threading.Lock()


def normalize_url(value: object, setting: str = "host", example: str = DIFY_URL_EXAMPLE) -> str:
    """``value`` stripped of whitespace and trailing slashes, or DifyConfigError naming ``setting``.

    Refused: empty values, schemes other than http(s), a missing host, user:password@ (the secret
    belongs in its own field), a query or fragment (the client appends paths to this URL).
    """
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise DifyConfigError(f"connection '{setting}' is empty: set it to e.g. {example}")
    text = text.rstrip("/")
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise DifyConfigError(
            f"connection '{setting}' must not contain credentials (user:password@); "
            "put the secret in its own field"
        )
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DifyConfigError(f"connection '{setting}' must be an http(s) URL like {example}, got {text!r}")
    if parts.query or parts.fragment:
        raise DifyConfigError(f"connection '{setting}' must not have a query or fragment (got {text!r})")
    return text


def normalize_base_url(value: object) -> str:
    """The Dify API base URL; warns once per URL when it does not end with ``/v1``.

    A missing ``/v1`` is a warning, not an error: gateways may rewrite paths.
    """
    url = normalize_url(value, "host", DIFY_URL_EXAMPLE)
    if not urlsplit(url).path.endswith("/v1"):
        with _warned_lock:
            first = url not in _warned
            _warned.add(url)
        if first:
            log.warning(
                "Dify base URL %s does not end with /v1; Dify's service API lives under /v1 "
                "(e.g. %s): expect 404 unless a gateway rewrites paths",
                url,
                DIFY_URL_EXAMPLE,
            )
    return url


__all__ = ["DIFY_URL_EXAMPLE", "TOKEN_URL_EXAMPLE", "normalize_base_url", "normalize_url"]
