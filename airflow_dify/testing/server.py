"""FakeDify: a real HTTP server on 127.0.0.1 that behaves like Dify's /v1 service API."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airflow_dify.testing.answers import new_id, run_detail
from airflow_dify.testing.api import Exchange
from airflow_dify.testing.apps import GENERATION_PATHS, FakeApp, default_apps
from airflow_dify.testing.faults import TOKEN_PATH, FaultPlan
from airflow_dify.testing.handler import FakeDifyHTTPServer
from airflow_dify.testing.oauth import OAuthClient, TokenStore
from airflow_dify.testing.stats import Limits

log = logging.getLogger("airflow_dify.testing")
Latency = float | Callable[[Any], float]
#: Bounds on remembered state, so a million-row benchmark does not grow the fake without end.
MAX_RUNS = 100_000
MAX_CONVERSATIONS = 100_000


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it. ``auth`` names the credential kind, never the secret."""

    seq: int
    method: str
    path: str
    app_mode: str | None
    body: Any
    auth: str
    status: int
    started: float
    ended: float
    response: Any
    fault: str | None


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
    :param max_records: newest request records kept in :attr:`requests` (None = all).
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
    ) -> None:
        self.apps: list[FakeApp] = list(apps) if apps is not None else default_apps()
        if not self.apps:
            raise ValueError("FakeDify needs at least one app")
        self._by_key = {app.key: app for app in self.apps}
        self._by_id = {app.id: app for app in self.apps}
        if len(self._by_key) != len(self.apps):
            raise ValueError("two apps share one API key")
        self.host, self._port = host, port
        self.latency = latency
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._limits = Limits(max_active_requests, requests_per_minute)
        self._tokens = TokenStore(token_ttl)
        self.faults = FaultPlan()
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._seq = itertools.count(1)
        self._calls: dict[str, int] = {}
        self._runs: OrderedDict[str, tuple[str, dict]] = OrderedDict()
        self._conversations: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._httpd: FakeDifyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeDify:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = FakeDifyHTTPServer((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="FakeDify", daemon=True
        )
        self._thread.start()
        log.debug("FakeDify listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; sleeping requests wake up and open keep-alive connections are cut."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

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
        return self._httpd.server_address[1]

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

    def app(self, mode: str = "chat") -> FakeApp:
        """The first app of that mode."""
        for app in self.apps:
            if app.mode == mode:
                return app
        raise KeyError(f"no app with mode {mode!r}")

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
        self._tokens.add_client(OAuthClient(client_id, client_secret, self.app(app_mode).id, scope, audience))

    def revoke_tokens(self) -> None:
        """Every access token issued so far now gets 401."""
        self._tokens.revoke_all()

    @property
    def token_ttl(self) -> float | None:
        return self._tokens.token_ttl

    @token_ttl.setter
    def token_ttl(self, value: float | None) -> None:
        self._tokens.token_ttl = value

    @property
    def token_requests(self) -> int:
        """POSTs to the token endpoint that issued a token."""
        return self._tokens.issued

    # -- observation -----------------------------------------------------------------------------
    @property
    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, including revoked and expired ones (leak scans)."""
        with self._tokens._lock:
            return list(self._tokens.history)

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the /v1 request log (token endpoint calls are counted in token_requests)."""
        with self._lock:
            return list(self._records)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start (keep-alive clients reuse one)."""
        return self._httpd.accepted if self._httpd is not None else 0

    def calls(self, path: str | None = None) -> int:
        """Generation requests received (any outcome, incl. 4xx/429/faults), optionally by path."""
        with self._lock:
            if path is None:
                return sum(self._calls.get(p, 0) for p in GENERATION_PATHS)
            return self._calls.get(path, 0)

    def stats(self) -> dict[str, Any]:
        """max_concurrency_seen, worst_1s, worst_60s (max over apps), admitted, rejected_429, per_app."""
        return self._limits.stats()

    def reset(self) -> None:
        """Clear log, counters, faults, stats, tokens and stored runs (apps and OAuth clients stay)."""
        with self._lock:
            self._records.clear()
            self._seq = itertools.count(1)
            self._calls.clear()
            self._runs.clear()
            self._conversations.clear()
        self.faults.clear()
        self._limits.reset()
        self._tokens.reset()

    @property
    def max_active_requests(self) -> int:
        return self._limits.max_active_requests

    @max_active_requests.setter
    def max_active_requests(self, value: int) -> None:
        self._limits.max_active_requests = value

    @property
    def requests_per_minute(self) -> int:
        return self._limits.requests_per_minute

    @requests_per_minute.setter
    def requests_per_minute(self, value: int) -> None:
        self._limits.requests_per_minute = value

    # -- used by the request handlers ------------------------------------------------------------
    def _app_for_key(self, key: str) -> FakeApp | None:
        return self._by_key.get(key)

    def _app_for_token(self, token: str) -> FakeApp | None:
        app_id = self._tokens.app_for(token)
        return self._by_id.get(app_id) if app_id else None

    def _arrive(self, path: str) -> dict[str | None, int]:
        if path != TOKEN_PATH:
            with self._lock:
                self._calls[path] = self._calls.get(path, 0) + 1
        return self.faults.numbers(path)

    def _record(self, ex: Exchange, ended: float) -> None:
        with self._lock:
            record = RequestRecord(
                seq=next(self._seq),
                method=ex.method,
                path=ex.path,
                app_mode=ex.app.mode if ex.app is not None else None,
                body=ex.body,
                auth=ex.auth,
                status=ex.status,
                started=ex.started,
                ended=ended,
                response=ex.response,
                fault=ex.fault,
            )
            self._records.append(record)

    def _sleep(self, seconds: float) -> None:
        # Wakes up early on stop() so a stopping server does not wait for slow fake calls.
        if seconds > 0:
            self._stopping.wait(seconds)

    def _latency_for(self, body: Any) -> float:
        latency = self.latency(body) if callable(self.latency) else self.latency
        return max(0.0, float(latency))

    def _new_conversation(self, app_id: str) -> str:
        conversation_id = new_id()
        with self._lock:
            self._conversations[(app_id, conversation_id)] = None
            if len(self._conversations) > MAX_CONVERSATIONS:
                self._conversations.popitem(last=False)
        return conversation_id

    def _has_conversation(self, app_id: str, conversation_id: str) -> bool:
        with self._lock:
            return (app_id, conversation_id) in self._conversations

    def _store_run(self, app_id: str, data: dict, inputs: dict) -> None:
        with self._lock:
            self._runs[data["id"]] = (app_id, run_detail(data, inputs))
            if len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)

    def _get_run(self, app_id: str, run_id: str) -> dict | None:
        with self._lock:
            entry = self._runs.get(run_id)
        return entry[1] if entry is not None and entry[0] == app_id else None
