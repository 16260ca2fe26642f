"""``doctor``: check a ``dify`` connection end to end and say, per line, what is wrong and the fix.

Airflow-free: it takes the connection's host, password and extra (the CLI in
:mod:`airflow_dify.__main__` resolves them from Airflow, an environment variable or a URI). Every
check but ``--probe`` is free: URL and key shape, settings, the OAuth2 token fetch, GET /info,
GET /parameters, TLS, the rate-limit backend and the budget. ``probe=True`` spends one minimal call.
Secrets are never printed: keys show at most their first 4 characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_dify.batch.preflight import form_of
from airflow_dify.client import DifyClient, DifyError, OAuth2ClientCredentials
from airflow_dify.client.auth import clean_api_key, preview, validate_api_key
from airflow_dify.client.models import MODE_FAMILY
from airflow_dify.clients import client_for, pool_for
from airflow_dify.errors import AirflowDifyError
from airflow_dify.settings import ConnectionSettings, parse_settings

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, the verdict, what was seen, and the fix."""

    name: str
    verdict: str
    detail: str
    fix: str = ""


def _url(host: Any) -> Check:
    name = "URL shape"
    url = (host or "").strip() if isinstance(host, str) else ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(name, FAIL, f"{url!r} is not an http(s) URL", "set host to e.g. https://api.dify.ai/v1")
    if not parts.path.rstrip("/").endswith("/v1"):
        return Check(name, WARN, f"{url} does not end with /v1", "Dify's service API lives under /v1: add it")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        return Check(name, WARN, f"{url}: the key travels unencrypted", "use https:// for a remote Dify")
    return Check(name, OK, url)


def _key(password: Any) -> Check:
    name = "API key shape"
    raw = password if isinstance(password, str) else ""
    key = clean_api_key(raw)
    try:
        validate_api_key(key)
    except DifyError as err:
        return Check(
            name, FAIL, err.message, "paste the app's key exactly as Dify shows it (app > API Access)"
        )
    notes = []
    if raw.strip().lower().startswith(("bearer", "'bearer", '"bearer')):
        notes.append("a pasted 'Bearer ' prefix (removed before use)")
    if raw != raw.strip():
        notes.append("whitespace around it (removed)")
    if raw.strip()[:1] in ("'", '"', "`"):
        notes.append("quotes around it (removed)")
    if key.startswith("ds-"):
        return Check(name, FAIL, f"{preview(key)} is a knowledge-base key", "use the app's key (app-...)")
    if not key.startswith("app-"):
        notes.append("no 'app-' prefix (self-hosted forks may differ)")
    if notes:
        return Check(name, WARN, f"{preview(key)}: " + "; ".join(notes), "store the bare key: app-...")
    return Check(name, OK, f"{preview(key)} (app key)")


def _token(settings: ConnectionSettings, client: DifyClient) -> Check:
    name = "OAuth2 token"
    auth = client.auth
    if not isinstance(auth, OAuth2ClientCredentials):
        return Check(name, SKIP, "auth_type api_key")
    started = time.perf_counter()
    try:
        auth.token()
    except DifyError as err:
        return Check(name, FAIL, err.message, "check token_url, client_id/client_secret, scope and audience")
    ms = (time.perf_counter() - started) * 1000
    left = auth.seconds_left()
    life = f", valid for {left:,.0f} s" if left is not None else ""
    return Check(name, OK, f"issued by {settings.token_url} in {ms:,.0f} ms{life}")


def _info(settings: ConnectionSettings, client: DifyClient) -> tuple[Check, bool]:
    name = "GET /info"
    try:
        info = client.info()
    except DifyError as err:
        fixes = {
            401: "use this app's own API key (or an OAuth2 client the gateway accepts)",
            403: "enable the app's API access in Dify (app > API Access)",
            404: "the host must be the API base URL ending with /v1",
        }
        fix = fixes.get(err.status or 0, "check that Dify is up and reachable from here")
        if err.code == "tls_error":
            fix = "fix the certificate chain (or, for a trusted internal host only, verify_ssl: false)"
        return Check(name, FAIL, err.summary()[:300], fix), False
    if settings.app_mode and MODE_FAMILY.get(info.mode) != MODE_FAMILY[settings.app_mode]:
        detail = (
            f"app {info.name!r} is a {info.mode!r} app, the connection says app_mode {settings.app_mode!r}"
        )
        return Check(name, FAIL, detail, "fix app_mode (or leave it empty), or use that app's key"), False
    return Check(name, OK, f"app {info.name!r}, mode {info.mode}"), True


def _parameters(client: DifyClient) -> tuple[Check, dict[str, tuple[str, bool]]]:
    name = "GET /parameters"
    try:
        form = form_of(client.parameters())
    except DifyError as err:
        return Check(name, FAIL, err.summary()[:300], "check the app is published"), {}
    listed = ", ".join(f"{v}{' (required)' if req else ''} [{t}]" for v, (t, req) in form.items()) or "none"
    return Check(name, OK, f"inputs: {listed}"), form


def _tls(settings: ConnectionSettings, reached: bool) -> Check:
    name = "TLS"
    if urlsplit(settings.base_url).scheme != "https":
        return Check(name, SKIP, "plain http")
    if not settings.verify_ssl:
        return Check(
            name, WARN, "verify_ssl is off: the server is not authenticated", "turn verify_ssl back on"
        )
    if reached:
        return Check(name, OK, "certificate verified")
    return Check(name, SKIP, "not reached (see GET /info)")


def _backend(settings: ConnectionSettings) -> Check:
    name = "rate-limit backend"
    backend = settings.rate_limit_backend
    shown = backend.split("://", 1)[0] if "://" in backend else backend  # a Redis URL may hold a password
    try:
        pool = pool_for(settings)
        try:
            pool.acquire(timeout=5.0).settle(0)
        finally:
            pool.close()
    except AirflowDifyError as err:
        return Check(name, FAIL, str(err)[:300], "start the backend or fix rate_limit_backend")
    return Check(name, OK, f"{shown}: a permit was granted and returned")


def _budget(settings: ConnectionSettings) -> Check:
    name = "budget"
    s = settings
    limits = {"max_concurrency": s.max_concurrency, "requests_per_minute": s.requests_per_minute}
    limits["tokens_per_minute"] = s.tokens_per_minute
    set_ = {k: v for k, v in limits.items() if v}
    if not set_:
        return Check(
            name,
            WARN,
            "no limits: every task runs 8 calls at once with no rate cap",
            "set max_concurrency under the app's concurrency cap and requests_per_minute ~5% under its quota",
        )
    return Check(name, OK, ", ".join(f"{k}={v:g}" for k, v in set_.items()))


def _probe(settings: ConnectionSettings, client: DifyClient, form: dict[str, tuple[str, bool]]) -> Check:
    name = "probe call"
    mode = settings.app_mode or client.info().mode
    inputs = {v: "ping" for v, (t, req) in form.items() if req and t not in ("file", "file-list")}
    try:
        result = client.call(mode, query="ping", inputs=inputs, user="airflow-dify-doctor")
    except DifyError as err:
        return Check(name, FAIL, err.summary()[:300], "see the message; GET /info and /parameters passed")
    usage = result.usage
    price = f", {usage.total_price} {usage.currency}" if usage.total_price is not None else ""
    return Check(name, OK, f"answered in {result.latency_ms} ms, {usage.total_tokens} tokens{price}")


def diagnose(host: Any, password: Any, extra: Any, *, probe: bool = False) -> Iterator[Check]:
    """Every check, in order; later ones are skipped when an earlier one makes them pointless."""
    yield _url(host)
    try:
        settings = parse_settings(host, password, extra)
    except DifyError as err:
        yield Check("settings", FAIL, err.message, "fix the connection field it names")
        return
    unknown = f"; unknown extras ignored: {list(settings.unknown_extras)}" if settings.unknown_extras else ""
    yield Check("settings", WARN if unknown else OK, f"auth {settings.auth_type}{unknown}")
    if settings.auth_type == "api_key":
        yield (key_check := _key(password))
        if key_check.verdict == FAIL:
            return
    try:
        client = client_for(settings, max_attempts=1)
    except DifyError as err:
        yield Check("client", FAIL, err.message, "fix the connection field it names")
        return
    try:
        token = _token(settings, client)
        yield token
        reached = False
        if token.verdict != FAIL:
            info, reached = _info(settings, client)
            yield info
        form: dict[str, tuple[str, bool]] = {}
        if reached:
            params, form = _parameters(client)
            yield params
        yield _tls(settings, reached)
        yield _backend(settings)
        yield _budget(settings)
        if probe:
            yield _probe(settings, client, form) if reached else Check("probe call", SKIP, "Dify not reached")
    finally:
        client.close()


def render(checks: list[Check], title: str, write: Callable[[str], None] = print) -> int:
    """Print the checklist; the exit status: 1 when a check failed, else 0."""
    write(title)
    width = max(len(c.name) for c in checks)
    for c in checks:
        write(f"[{c.verdict:>4}] {c.name:<{width}}  {c.detail}")
        if c.fix and c.verdict in (FAIL, WARN):
            write(f"{'':>7}{'':<{width}}  fix: {c.fix}")
    failed = sum(c.verdict == FAIL for c in checks)
    warned = sum(c.verdict == WARN for c in checks)
    write(f"Result: {failed} failed, {warned} warning(s), {len(checks) - failed - warned} fine.")
    return 1 if failed else 0


__all__ = ["FAIL", "OK", "SKIP", "WARN", "Check", "diagnose", "render"]
