"""Everything FakeDify remembers: apps, limits, OAuth2 tokens, faults, the request log, the billing
log, counters, stored workflow runs and conversations.

One thread-safe object with a public interface, so the request handler (and any server running
it, threaded or asyncio) changes state through methods instead of reaching into internals.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, NamedTuple

from airflow_dify.testing.answers import new_id, run_detail
from airflow_dify.testing.apps import GENERATION_PATHS, FakeApp, default_apps
from airflow_dify.testing.faults import TOKEN_PATH, FaultPlan
from airflow_dify.testing.limits import Limits
from airflow_dify.testing.oauth import TokenStore
from airflow_dify.testing.uploads import UploadStore

Latency = float | Callable[[Any], float]
#: Bounds on remembered state, so a million-row benchmark does not grow the fake without end.
MAX_RUNS = 100_000
MAX_CONVERSATIONS = 100_000
MAX_MESSAGES = 100_000


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it. ``auth`` names the credential kind, never the secret;
    ``path`` is as called (``/workflows/{id}/run`` for a pinned run)."""

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
    #: The ``X-Trace-Id`` header a generation request carried (Dify joins its logs and traces on it).
    trace_id: str | None = None


@dataclass(frozen=True)
class Bill:
    """What the fake charged for one generation it did the work for, like a provider's invoice line.

    Tests compare it with what a client recorded: late faults (a 504 after the work, a cut stream)
    are billed although the client saw an error; early faults, refusals and 429s are not. ``seq``
    is the :class:`RequestRecord` of the request; ``path`` is as called (a pinned
    ``/workflows/{id}/run`` too); for workflows the tokens and price are the sums over the LLM nodes.
    """

    seq: int
    path: str
    user: str
    workflow_id: str | None
    message_id: str | None
    workflow_run_id: str | None
    total_tokens: int
    total_price: Decimal
    currency: str


@dataclass(frozen=True)
class Message:
    """A message the fake answered: Dify scopes it to its app and to the end user who asked."""

    app_id: str
    user: str
    conversation_id: str | None
    #: The message as ``GET /messages`` lists it (see :mod:`.conversations`); None: not listed.
    item: dict[str, Any] | None = None


class Feedback(NamedTuple):
    """One feedback the fake accepted (``rating`` None: a revocation), in arrival order."""

    message_id: str
    rating: str | None
    user: str
    content: str | None


class Exchange:
    """One logged request from arrival to its last byte: the facts its :class:`RequestRecord` will
    hold, and the concurrency slot it holds meanwhile. It is the reply's settlement: the server
    calls :meth:`commit` just before the last bytes and :meth:`close` at the end."""

    def __init__(self, state: FakeState, method: str, path: str, started: float) -> None:
        self.method, self.path, self.started = method, path, started
        self.body: Any = None
        self.auth = "none"
        self.app: FakeApp | None = None
        self.status = 0
        self.response: Any = None
        self.fault: str | None = None
        self.trace_id: str | None = None
        #: Set once the work is done; its ``seq`` is filled in when the request is recorded.
        self.bill: Bill | None = None
        self._state = state
        self._slot: str | None = None
        self._slot_until_close = False
        self._committed = False

    def hold_slot(self, app_id: str, until_close: bool) -> None:
        """Own an admitted slot of ``app_id``. Like Dify's AppGenerateService, a blocking call frees
        it when its answer is ready, before it is written (a client that sends its next call on
        receipt never finds its own finished call counted); a stream holds it until it ends."""
        self._slot, self._slot_until_close = app_id, until_close

    def commit(self) -> None:
        """Record the request once, so a client that has its answer always finds it logged."""
        if not self._slot_until_close:
            self._release()
        if not self._committed:
            self._committed = True
            self._state.record(self, time.monotonic())

    def close(self) -> None:
        self._release()
        self.commit()

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            self._state.limits.release(slot)


class FakeState:
    """The state of one FakeDify.

    :param apps: the apps; default one per mode.
    :param latency: seconds per generation call, or ``callable(request_body) -> float``.
    :param limits: the server-side limits (default: none); pass one with a clock to test windows.
    :param tokens: the OAuth2 token store (default: tokens live an hour).
    :param max_records: newest request records kept (None = all).
    """

    def __init__(
        self,
        apps: Iterable[FakeApp] | None = None,
        latency: Latency = 0.0,
        limits: Limits | None = None,
        tokens: TokenStore | None = None,
        max_records: int | None = None,
    ) -> None:
        self.apps: list[FakeApp] = list(apps) if apps is not None else default_apps()
        if not self.apps:
            raise ValueError("FakeDify needs at least one app")
        self._by_key = {app.key: app for app in self.apps}
        self._by_id = {app.id: app for app in self.apps}
        if len(self._by_key) != len(self.apps):
            raise ValueError("two apps share one API key")
        self.latency: Latency = latency
        self.limits = limits if limits is not None else Limits()
        self.tokens = tokens if tokens is not None else TokenStore()
        self.faults = FaultPlan()
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._bills: deque[Bill] = deque(maxlen=max_records)
        self._seq = itertools.count(1)
        self._calls: dict[str, int] = {}
        self._runs: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._conversations: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._messages: OrderedDict[str, Message] = OrderedDict()
        #: message id -> (rating, content) of its current feedback.
        self._ratings: dict[str, tuple[str, str | None]] = {}
        self._feedbacks: list[Feedback] = []
        #: Files uploaded (``POST /files/upload``); kept across :meth:`reset`, like answered messages.
        self.uploads = UploadStore()

    # -- apps and credentials --------------------------------------------------------------------
    def app(self, mode: str = "chat") -> FakeApp:
        """The first app of that mode."""
        for app in self.apps:
            if app.mode == mode:
                return app
        raise KeyError(f"no app with mode {mode!r}")

    def app_for_credential(self, credential: str) -> tuple[str, FakeApp] | None:
        """(``"key"`` or ``"token"``, app) for an app API key or a live OAuth2 access token."""
        app = self._by_key.get(credential)
        if app is not None:
            return "key", app
        app_id = self.tokens.app_for(credential)
        app = self._by_id.get(app_id) if app_id else None
        return ("token", app) if app is not None else None

    # -- arrivals --------------------------------------------------------------------------------
    def arrive(self, path: str) -> dict[str | None, int]:
        """Count a request; returns its number in every fault scope."""
        if path != TOKEN_PATH:
            with self._lock:
                self._calls[path] = self._calls.get(path, 0) + 1
        return self.faults.numbers(path)

    def open(self, method: str, path: str, started: float) -> Exchange:
        """Start the record of a /v1 request (logged when the exchange commits)."""
        return Exchange(self, method, path, started)

    def latency_for(self, body: Any) -> float:
        latency = self.latency(body) if callable(self.latency) else self.latency
        return max(0.0, float(latency))

    # -- conversations and workflow runs ---------------------------------------------------------
    def new_conversation(self, app_id: str) -> str:
        conversation_id = new_id()
        with self._lock:
            self._conversations[(app_id, conversation_id)] = None
            if len(self._conversations) > MAX_CONVERSATIONS:
                self._conversations.popitem(last=False)
        return conversation_id

    def has_conversation(self, app_id: str, conversation_id: str) -> bool:
        with self._lock:
            return (app_id, conversation_id) in self._conversations

    def store_run(self, app_id: str, data: dict[str, Any], inputs: dict[str, Any]) -> None:
        """Keep a finished run for ``GET /workflows/run/{id}``."""
        with self._lock:
            self._runs[data["id"]] = (app_id, run_detail(data, inputs))
            if len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)

    def get_run(self, app_id: str, run_id: str) -> dict[str, Any] | None:
        """The run detail, if it exists and belongs to ``app_id``."""
        with self._lock:
            entry = self._runs.get(run_id)
        return entry[1] if entry is not None and entry[0] == app_id else None

    # -- messages and their feedback -------------------------------------------------------------
    def store_message(
        self,
        message_id: str,
        app_id: str,
        user: str,
        conversation_id: str | None,
        item: dict[str, Any] | None = None,
    ) -> None:
        """Remember a message answered, for its feedback and for ``GET /messages``."""
        with self._lock:
            self._messages[message_id] = Message(app_id, user, conversation_id, item)
            if len(self._messages) > MAX_MESSAGES:
                gone, _ = self._messages.popitem(last=False)
                self._ratings.pop(gone, None)

    def get_message(self, app_id: str, user: str, message_id: str) -> Message | None:
        """The message, if ``user`` of ``app_id`` asked it (Dify's lookup: id, app and end user)."""
        with self._lock:
            message = self._messages.get(message_id)
        if message is None or message.app_id != app_id or message.user != user:
            return None
        return message

    def conversations(self, app_id: str, user: str) -> list[dict[str, Any]]:
        """The user's conversations in ``app_id``, most recently updated first (GET /conversations)."""
        with self._lock:
            messages = [m for m in self._messages.values() if m.app_id == app_id and m.user == user]
        found: dict[str, dict[str, Any]] = {}
        for m in messages:
            if m.conversation_id is None or m.item is None:
                continue
            at = m.item.get("created_at") or 0
            conv = found.setdefault(
                m.conversation_id,
                {
                    "id": m.conversation_id,
                    "name": "New conversation",
                    "inputs": m.item.get("inputs") or {},
                    "status": "normal",
                    "introduction": "",
                    "created_at": at,
                    "updated_at": at,
                },
            )
            conv["updated_at"] = max(conv["updated_at"], at)
        # Stored in arrival order: the reversed order breaks ties in updated_at newest first.
        ordered = list(found.values())[::-1]
        return sorted(ordered, key=lambda c: -c["updated_at"])

    def conversation_messages(
        self, app_id: str, user: str, conversation_id: str
    ) -> list[dict[str, Any]] | None:
        """The conversation's messages in time order; None when it is not this user's (GET /messages)."""
        with self._lock:
            mine = [
                m
                for m in self._messages.values()
                if m.conversation_id == conversation_id and m.app_id == app_id and m.user == user
            ]
        if not mine:
            return None
        return [dict(m.item) for m in mine if m.item is not None]

    def delete_message(self, message_id: str) -> None:
        """Forget a message, like one deleted in Dify (its feedback goes with it)."""
        with self._lock:
            self._messages.pop(message_id, None)
            self._ratings.pop(message_id, None)

    def rate(self, message_id: str, rating: str | None, user: str, content: str | None) -> bool:
        """Apply one feedback like Dify's MessageService.create_feedback: a rating creates or replaces
        the feedback (content included), None deletes it; False when there is nothing to delete."""
        with self._lock:
            if rating is None:
                if self._ratings.pop(message_id, None) is None:
                    return False
            else:
                self._ratings[message_id] = (rating, content)
            self._feedbacks.append(Feedback(message_id, rating, user, content))
        return True

    def rating(self, message_id: str) -> tuple[str, str | None] | None:
        """(rating, content) of the message's current feedback, or None."""
        with self._lock:
            return self._ratings.get(message_id)

    def feedbacks(self) -> list[Feedback]:
        with self._lock:
            return list(self._feedbacks)

    # -- the request log -------------------------------------------------------------------------
    def record(self, ex: Exchange, ended: float) -> RequestRecord:
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
                trace_id=ex.trace_id,
            )
            self._records.append(record)
            if ex.bill is not None:
                self._bills.append(replace(ex.bill, seq=record.seq))
        return record

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def bills(self) -> list[Bill]:
        with self._lock:
            return list(self._bills)

    def billed_total(self, currency: str = "USD") -> Decimal:
        with self._lock:
            return sum((b.total_price for b in self._bills if b.currency == currency), Decimal(0))

    def calls(self, path: str | None = None) -> int:
        """Generation requests received (any outcome), optionally by path (pinned runs count as
        ``/workflows/run``)."""
        with self._lock:
            if path is None:
                return sum(self._calls.get(p, 0) for p in GENERATION_PATHS)
            return self._calls.get(path, 0)

    def reset(self) -> None:
        """Clear logs (the feedback log too), counters, faults, stats, tokens and stored runs (apps,
        OAuth clients, answered messages and their current feedback stay)."""
        with self._lock:
            self._records.clear()
            self._bills.clear()
            self._seq = itertools.count(1)
            self._calls.clear()
            self._runs.clear()
            self._conversations.clear()
            # Messages and their ratings stay: tests reset the logs between answering and rating.
            self._feedbacks.clear()
        self.faults.clear()
        self.limits.reset()
        self.tokens.reset()
