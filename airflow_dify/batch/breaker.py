"""The circuit breaker: stop a batch on errors that every remaining row would get too.

A revoked key, a disabled app, an exhausted quota or Dify being down is not a row's problem: the
other 9,999 rows would pay a request each to learn the same thing. Such an outcome is *held back*:
the row is left pending (nothing was answered, nothing is written, the next run takes it), and
after a few of them (an auth error: the first) the breaker opens, no new call starts, the calls in
flight finish and are saved, and the run ends with one message saying what is wrong and how to fix
it. A sustained outage (every call failing to reach Dify for ``outage_seconds``) opens it too.
Everything else (one bad prompt, a 400 ``invalid_param``) stays a row failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from airflow_dify.client.errors import (
    DifyAuthError,
    DifyBadRequestError,
    DifyError,
    DifyForbiddenError,
    DifyNotFoundError,
    DifyQuotaError,
    DifyServerError,
    DifyTransportError,
)
from airflow_dify.outcome import RowOutcome

#: The outcome concerns the app or the account, not the row: every row would get it.
SYSTEMIC = "systemic"
#: Dify (or the way to it) did not answer: the row was never processed.
UNAVAILABLE = "unavailable"

#: Dify error codes that say the same for every request to this app (400 and 403 answers).
SYSTEMIC_CODES = frozenset(
    {
        "provider_not_initialize",
        "provider_quota_exceeded",
        "model_currently_not_support",
        "app_unavailable",
        "rate_limit_error",
        "daily_limit_exceeded",
        "workflow_version_execution_not_allowed",
    }
)
#: How to get out, by what went wrong.
FIXES = {
    "unauthorized": "check the connection's API key (the app's own app-... key) or OAuth2 client",
    "forbidden": "enable the app's API access in Dify (app > API Access) and check the app is active",
    "not_found": "check that the connection's host is the API base URL ending with /v1",
    "provider_not_initialize": "set up the model provider's credentials in Dify (Settings > Model Provider)",
    "provider_quota_exceeded": "top up or raise the model provider's quota in Dify",
    "model_currently_not_support": "choose a model the provider supports in the app",
    "app_unavailable": "publish the app (or its workflow) and check it is enabled",
    "rate_limit_error": "wait for the plan quota to reset or raise it; retrying will not help before",
    "daily_limit_exceeded": "wait for the daily limit to reset or raise it",
    "workflow_version_execution_not_allowed": "publish that workflow version, or drop workflow_id",
    "workflow_id_rejected": "set workflow_id to a published version of this app's workflow, or drop it",
    UNAVAILABLE: "check that Dify (and any gateway in front of it) is up and reachable",
}


def classify(err: DifyError) -> str | None:
    """SYSTEMIC, UNAVAILABLE or None (a failure of this row only)."""
    if isinstance(err, (DifyAuthError, DifyForbiddenError, DifyQuotaError, DifyNotFoundError)):
        return SYSTEMIC
    if isinstance(err, DifyBadRequestError) and err.code in SYSTEMIC_CODES:
        return SYSTEMIC
    if err.maybe_billed:
        return None  # the request may have run: the row keeps its "maybe billed" failure
    if isinstance(err, DifyTransportError) or (isinstance(err, DifyServerError) and err.status in (502, 503)):
        return UNAVAILABLE
    return None


def rejects_pinned_version(err: DifyError) -> bool:
    """With ``workflow_id`` set: Dify refused that version (unknown id, a draft, a malformed id)."""
    if isinstance(err, DifyNotFoundError):
        return True
    return (
        isinstance(err, DifyBadRequestError) and err.code == "bad_request" and "workflow" in str(err).lower()
    )


@dataclass
class Trip:
    """Why the breaker opened."""

    kind: str
    code: str
    cause: str

    @property
    def fix(self) -> str:
        return FIXES.get(self.code) or FIXES.get(self.kind) or FIXES[UNAVAILABLE]


class CircuitBreaker:
    """Watches outcomes as they are saved; :attr:`trip` is set once it opens.

    :param threshold: systemic outcomes (other than 401/403) before it opens.
    :param outage_seconds: it opens when only unavailable outcomes came back for this long.
    """

    def __init__(
        self, *, threshold: int = 3, outage_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.outage_seconds = outage_seconds
        self._clock = clock
        self._systemic = 0
        self._outage_since: float | None = None
        self.trip: Trip | None = None
        #: An outcome every row may get was seen: drive adds no rows until every call handed over
        #: before it has come back (each added row would pay to learn the same), then clears it.
        #: A late answer of a call started before the error says nothing about the error.
        self.wary = False

    @staticmethod
    def watches(outcome: RowOutcome) -> bool:
        """An outcome the breaker counts (the engine hands these over without waiting)."""
        return outcome.failure is not None

    def holds_back(self, outcome: RowOutcome) -> bool:
        """Note one outcome; True when its row must be left pending instead of written."""
        kind = outcome.failure
        if kind is None:
            self._outage_since = None  # Dify answered (a success or this row's own error): no outage
            return False
        if kind == SYSTEMIC:
            self.wary = True
            self._systemic += 1
            first_is_enough = outcome.error_code in ("unauthorized", "forbidden", "not_found")
            if self.trip is None and (first_is_enough or self._systemic >= self.threshold):
                self.trip = Trip(SYSTEMIC, outcome.error_code or SYSTEMIC, outcome.error or "")
            return True
        now = self._clock()
        if self._outage_since is None:
            self._outage_since = now
        elif self.trip is None and now - self._outage_since >= self.outage_seconds:
            seconds = round(now - self._outage_since)
            cause = f"no call reached Dify for {seconds} s; the last said: {outcome.error or '?'}"
            self.trip = Trip(UNAVAILABLE, UNAVAILABLE, cause)
        return True

    def message(self, left_pending: int) -> str:
        """The one line a failed task shows: the cause, the code, what is left, the fix."""
        assert self.trip is not None
        trip = self.trip
        return (
            f"Stopped: an error every remaining row would get too ({trip.code}): {trip.cause[:400]}. "
            f"{left_pending:,} row(s) left pending (not written, not billed); fix: {trip.fix}; then re-run "
            "to answer exactly those rows."
        )


__all__ = [
    "SYSTEMIC",
    "SYSTEMIC_CODES",
    "UNAVAILABLE",
    "CircuitBreaker",
    "Trip",
    "classify",
    "rejects_pinned_version",
]
