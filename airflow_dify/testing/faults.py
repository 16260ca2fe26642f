"""Scriptable fault injection: which request gets which failure.

A fault is matched by request number within its scope: per path when ``path`` is set, across all
generation paths when it is None (token faults: the token endpoint). Faults are tried in the order
added; the first one whose conditions hold fires.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from airflow_dify.testing.apps import GENERATION_PATHS

TOKEN_PATH = "/oauth2/token"
#: Every ``POST /messages/{id}/feedbacks`` is counted and faulted under this one path; only faults
#: that name it apply (a fault without a path stays on the generation paths).
FEEDBACK_PATH = "/messages/{id}/feedbacks"
#: Answered before any work is done (nothing billed, not admitted by the limits).
EARLY_KINDS = frozenset({"status", "html", "retry_after", "reset"})
#: The work is done (admitted, billed), then the response is spoiled.
LATE_KINDS = frozenset({"billed_504", "stall", "truncated", "malformed", "workflow_status", "answer"})
STREAM_KINDS = frozenset({"stream_break", "stream_error"})
TOKEN_KINDS = frozenset({"token_down", "token_slow"})
KINDS = EARLY_KINDS | LATE_KINDS | STREAM_KINDS | TOKEN_KINDS


@dataclass
class Fault:
    """One scripted failure.

    :param kind: one of :data:`KINDS`.
    :param path: ``"/chat-messages"``, ``"/completion-messages"``, ``"/workflows/run"`` (pinned
        ``/workflows/{id}/run`` runs too), None (any of those), or :data:`FEEDBACK_PATH` (the
        feedback endpoint; early kinds only).
    :param on: 1-based request numbers (within the scope) that fire.
    :param every: fire on every Nth request of the scope.
    :param after: fire on every request after the Nth.
    :param probability: fire with this probability (seeded by ``seed``, reproducible).
    :param times: fire at most this many times.
    :param status: HTTP status for ``status``/``html`` (default 500/502); retry_after uses 429.
    :param code: Dify error code for ``status`` and ``stream_error``; message likewise (for
        ``answer``, the answer text the app returns instead of its usual one, e.g. with a NUL byte).
    :param retry_after: Retry-After header seconds for ``retry_after``.
    :param delay: seconds for ``stall`` and ``token_slow``.
    :param status_text: ``data.status`` for ``workflow_status`` (default ``failed``).
    """

    kind: str
    path: str | None = None
    on: Iterable[int] | None = None
    every: int | None = None
    probability: float | None = None
    times: int | None = None
    seed: int = 0
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    after: int | None = None
    code: str | None = None
    message: str | None = None
    status_text: str = "failed"
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {sorted(KINDS)}")
        if self.path is not None and self.path not in (*GENERATION_PATHS, TOKEN_PATH, FEEDBACK_PATH):
            raise ValueError(
                f"fault path must be a generation path, {TOKEN_PATH} or {FEEDBACK_PATH}, got {self.path!r}"
            )
        self.on = frozenset(self.on) if self.on is not None else None
        self._rng = random.Random(self.seed)

    def applies_to(self, path: str, streaming: bool) -> bool:
        """Whether this kind can happen on that request at all (others do not consume it)."""
        if self.kind in TOKEN_KINDS:
            return path == TOKEN_PATH
        if path == FEEDBACK_PATH or self.path == FEEDBACK_PATH:
            return path == self.path and self.kind in EARLY_KINDS
        if path == TOKEN_PATH or (self.path is not None and self.path != path):
            return False
        if self.kind in STREAM_KINDS:
            return streaming
        if self.kind == "workflow_status":
            return path == "/workflows/run"
        if self.kind == "answer":
            return not streaming and path != "/workflows/run"
        return True

    def hits(self, number: int) -> bool:
        """Whether request ``number`` of its scope fires this fault (not counting it as fired)."""
        if self.times is not None and self.fired >= self.times:
            return False
        if self.on is not None and number not in self.on:
            return False
        if self.every is not None and number % self.every != 0:
            return False
        if self.after is not None and number <= self.after:
            return False
        # The draw happens only for otherwise-matching requests, so the sequence is reproducible.
        return self.probability is None or self._rng.random() < self.probability


class FaultPlan:
    """The ordered, thread-safe list of faults of one FakeDify, plus the per-scope request counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._counts: dict[str | None, int] = {}

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop the faults and restart the request numbering."""
        with self._lock:
            self._faults.clear()
            self._counts.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def match(self, path: str, streaming: bool, numbers: dict[str | None, int]) -> Fault | None:
        """The first fault that fires for this request, marking it fired."""
        with self._lock:
            for fault in self._faults:
                if not fault.applies_to(path, streaming):
                    continue
                scope = fault.path if fault.path is not None else (TOKEN_PATH if path == TOKEN_PATH else None)
                if fault.hits(numbers.get(scope, 0)):
                    fault.fired += 1
                    return fault
        return None

    def numbers(self, path: str) -> dict[str | None, int]:
        """Count a request and return its number in every scope (per path and any-path)."""
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            if path not in (TOKEN_PATH, FEEDBACK_PATH):
                self._counts[None] = self._counts.get(None, 0) + 1
            return {path: self._counts[path], None: self._counts.get(None, 0)}
