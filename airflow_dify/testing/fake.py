"""FakeDify: a real HTTP server on 127.0.0.1 that behaves like Dify's /v1 service API.

The object users hold: the state (:mod:`.state`), served by :func:`.handler.handle` behind an
asyncio HTTP server (:mod:`.asyncio_server`, the default) or the threaded one (:mod:`.http_server`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast, overload

from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.asyncio_server import AsyncioHTTPServer
from airflow_dify.testing.exchange import Reply, Request
from airflow_dify.testing.faults import TOKEN_PATH, FaultPlan
from airflow_dify.testing.handler import handle
from airflow_dify.testing.http_server import ThreadedHTTPServer
from airflow_dify.testing.limits import Limits
from airflow_dify.testing.oauth import OAuthClient, TokenStore
from airflow_dify.testing.state import Bill, FakeState, Feedback, Latency, RequestRecord
from airflow_dify.testing.uploads import Upload

log = logging.getLogger("airflow_dify.testing")
#: The HTTP servers FakeDify can run behind; both perform the handler's replies the same way.
SERVERS: dict[str, type[AsyncioHTTPServer] | type[ThreadedHTTPServer]] = {
    "asyncio": AsyncioHTTPServer,
    "threaded": ThreadedHTTPServer,
}
#: Picks the default server for a whole test run, e.g. to run the suite on the threaded one.
SERVER_ENV = "AIRFLOW_DIFY_FAKE_SERVER"

T = TypeVar("T")


class _Setting(Generic[T]):
    """A FakeDify attribute that is a setting of one part of its state (limits, tokens, ...)."""

    def __init__(self, part: Callable[[FakeState], object], doc: str) -> None:
        self._part = part
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, fake: None, owner: type) -> _Setting[T]: ...

    @overload
    def __get__(self, fake: FakeDify, owner: type) -> T: ...

    def __get__(self, fake: FakeDify | None, owner: type) -> T | _Setting[T]:
        if fake is None:
            return self
        return cast(T, getattr(self._part(fake._state), self._name))

    def __set__(self, fake: FakeDify, value: T) -> None:
        setattr(self._part(fake._state), self._name, value)


class FakeDify:
    """A Dify look-alike for tests, demos and benchmarks.

    :param apps: the apps to serve; default one per mode (chat, completion, workflow, advanced-chat,
        agent-chat).
    :param host: bind address (keep 127.0.0.1).
    :param port: 0 picks a free port.
    :param latency: seconds each generation call takes; a float or ``callable(request_body) -> float``.
    :param max_active_requests: per-app in-flight cap (0 = unlimited); over it -> 429 too_many_requests.
    :param requests_per_minute: per-app admissions in any sliding 60 s (0 = unlimited); over it -> 429.
    :param token_ttl: OAuth2 access-token lifetime in seconds; None = tokens never expire.
    :param max_records: newest request records kept in :attr:`requests`, and entries in
        :attr:`billing` (None = all).
    :param server: ``"asyncio"`` (default; one event loop thread, uvloop when installed) or
        ``"threaded"`` (a thread per connection); default ``$AIRFLOW_DIFY_FAKE_SERVER`` if set.
    """

    def __init__(
        self,
        apps: Iterable[FakeApp] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: Latency = 0.0,
        max_active_requests: int = 0,
        requests_per_minute: int = 0,
        token_ttl: float | None = 3600,
        max_records: int | None = None,
        server: str | None = None,
    ) -> None:
        server = server or os.environ.get(SERVER_ENV) or "asyncio"
        if server not in SERVERS:
            raise ValueError(f"server must be one of {sorted(SERVERS)}, got {server!r}")
        limits = Limits(max_active_requests, requests_per_minute)
        self._state = FakeState(apps, latency, limits, TokenStore(token_ttl), max_records)
        self.host, self._port = host, port
        self.server = server
        self._httpd: AsyncioHTTPServer | ThreadedHTTPServer | None = None

    # Settings, read and assigned live on the part of the state that applies them.
    latency = _Setting[Latency](lambda state: state, "seconds per generation call, or a callable")
    max_active_requests = _Setting[int](lambda state: state.limits, "per-app in-flight cap (0 = none)")
    requests_per_minute = _Setting[int](lambda state: state.limits, "per-app admissions per minute")
    token_ttl = _Setting[float | None](lambda state: state.tokens, "OAuth2 token lifetime (None = forever)")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeDify:
        if self._httpd is not None:
            return self
        self._httpd = SERVERS[self.server]((self.host, self._port), self._respond)
        self._httpd.start()
        log.debug("FakeDify listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; sleeping requests wake up and open keep-alive connections are cut."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stop()

    def _respond(self, request: Request) -> Reply:
        return handle(request, self._state)

    def __enter__(self) -> FakeDify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._httpd is not None else "stopped"
        return f"FakeDify({state}, apps={[a.mode for a in self.apps]})"

    # -- addresses and apps ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeDify is not started")
        return self._httpd.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The Dify API base URL, with ``/v1``."""
        return f"{self.base_url}/v1"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}{TOKEN_PATH}"

    @property
    def apps(self) -> list[FakeApp]:
        return self._state.apps

    def app(self, mode: str = "chat") -> FakeApp:
        """The first app of that mode."""
        return self._state.app(mode)

    @property
    def faults(self) -> FaultPlan:
        return self._state.faults

    # -- OAuth2 ----------------------------------------------------------------------------------
    def add_oauth_client(
        self,
        client_id: str,
        client_secret: str,
        app_mode: str = "chat",
        scope: str | None = None,
        audience: str | None = None,
    ) -> None:
        """Register a client-credentials client whose tokens act for the app of ``app_mode``."""
        client = OAuthClient(client_id, client_secret, self.app(app_mode).id, scope, audience)
        self._state.tokens.add_client(client)

    def revoke_tokens(self) -> None:
        """Every access token issued so far now gets 401."""
        self._state.tokens.revoke_all()

    @property
    def token_requests(self) -> int:
        """POSTs to the token endpoint that issued a token."""
        return self._state.tokens.issued

    # -- observation -----------------------------------------------------------------------------
    @property
    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, including revoked and expired ones (leak scans)."""
        return self._state.tokens.issued_tokens()

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the /v1 request log (token endpoint calls are counted in token_requests)."""
        return self._state.records()

    @property
    def billing(self) -> list[Bill]:
        """Snapshot of the billing log: one entry per generation the fake did the work for, so a
        test can check that a client recorded every cost once (late faults are billed too)."""
        return self._state.bills()

    def billed_total(self, currency: str = "USD") -> Decimal:
        """The exact sum of the billing log's prices in ``currency``."""
        return self._state.billed_total(currency)

    @property
    def feedbacks(self) -> list[Feedback]:
        """Snapshot of the feedbacks accepted, in order: ``(message_id, rating, user, content)``
        tuples (``rating`` None: a revocation). Refused ones are only in :attr:`requests`."""
        return self._state.feedbacks()

    def rating(self, message_id: str) -> tuple[str, str | None] | None:
        """(rating, content) of a message's current feedback, or None (never rated, or revoked)."""
        return self._state.rating(message_id)

    def delete_message(self, message_id: str) -> None:
        """Forget an answered message, as if deleted in Dify: its feedback then gets 404."""
        self._state.delete_message(message_id)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start (keep-alive clients reuse one)."""
        return self._httpd.accepted if self._httpd is not None else 0

    def calls(self, path: str | None = None) -> int:
        """Generation requests received (any outcome, incl. 4xx/429/faults), optionally by path;
        pinned ``/workflows/{id}/run`` runs count as ``/workflows/run``."""
        return self._state.calls(path)

    def stats(self) -> dict[str, Any]:
        """max_concurrency_seen, worst_1s, worst_60s (max over apps), admitted, rejected_429, per_app."""
        return self._state.limits.stats()

    def reset(self) -> None:
        """Clear the request, billing and feedback logs, counters, faults, stats, tokens and stored
        runs (apps, OAuth clients, answered messages and their current feedback stay)."""
        self._state.reset()

    @property
    def uploads(self) -> list[Upload]:
        """Snapshot of the files uploaded (``POST /files/upload``), in order: id, user, name, size,
        extension, mime_type, sha256, ... Kept by :meth:`reset` (their ids stay valid); refused
        uploads are only in :attr:`requests`."""
        return self._state.uploads.all()
