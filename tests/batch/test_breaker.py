"""The circuit breaker and the pre-flight on their own: scripted clients, in-memory rows, no HTTP."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_dify.batch.breaker import SYSTEMIC, UNAVAILABLE, classify
from airflow_dify.batch.errors import PreflightError
from airflow_dify.batch.preflight import check_inputs, form_of
from airflow_dify.client.errors import (
    DifyAuthError,
    DifyBadRequestError,
    DifyError,
    DifyForbiddenError,
    DifyQuotaError,
    DifyServerError,
    DifyTimeoutError,
    DifyTransportError,
)
from tests.batch.test_engine import Rows, ScriptedClient, run


class FailingClient(ScriptedClient):
    """Answers until call number ``after``, then raises ``error`` for every call."""

    def __init__(self, after: int, error: DifyError) -> None:
        super().__init__()
        self.after, self.error = after, error
        self.failures_seen = 0
        self.calls_after_first_failure = 0
        self._lock = threading.Lock()

    def call(self, family: str, *, query: str | None, **kw: Any) -> Any:
        with self._lock:
            n = self.started + 1
            if self.failures_seen:
                self.calls_after_first_failure += 1
        if n > self.after:
            with self._lock:
                self.started += 1
                self.failures_seen += 1
            raise self.error
        return super().call(family, query=query, **kw)


@pytest.mark.parametrize(
    "error",
    [
        DifyAuthError("the API key was refused", status=401, code="unauthorized"),
        DifyBadRequestError("quota", status=400, code="provider_quota_exceeded"),
        DifyQuotaError("plan quota", status=429, code="rate_limit_error"),
    ],
    ids=["revoked-key", "provider-quota", "plan-quota"],
)
def test_a_systemic_error_stops_the_run_and_leaves_the_rest_pending(error: DifyError) -> None:
    client = FailingClient(after=40, error=error)
    rows = Rows(500, client)
    summary = run(rows, max_concurrency=8)
    assert summary.stopped == "breaker" and error.code in (summary.stopped_reason or "")
    # No call starts between an urgent error and the breaker's look at it, so after a revoked key
    # only the 7 calls already in flight may be asked; an error that needs 3 in a row may also
    # start the 8 rows already handed over, never more (a retried 429 may add one).
    bound = 7 if error.code == "unauthorized" else 16
    assert client.calls_after_first_failure <= bound
    assert len(rows.saved) == 40 and all(o.status == "succeeded" for o in rows.saved.values())
    pending = 500 - len(rows.saved)
    assert pending >= 400 and f"{pending:,} row(s) left pending" in (summary.stopped_reason or "")
    assert summary.left_pending == client.failures_seen  # called, got the error, not written


def test_one_systemic_error_then_answers_does_not_hold_the_run_back() -> None:
    """The breaker's wariness ends with the next answer: one quota blip leaves one row pending and
    the run goes on to the end."""

    def blip(i: int) -> None:
        if i == 10:
            raise DifyBadRequestError("quota", status=400, code="provider_quota_exceeded")

    rows = Rows(200, ScriptedClient(blip))
    summary = run(rows, max_concurrency=4)
    assert summary.stopped is None and summary.left_pending == 1
    assert sorted(rows.saved) == [i for i in range(1, 201) if i != 10]


def test_row_errors_do_not_trip_it() -> None:
    client = FailingClient(after=0, error=DifyBadRequestError("bad prompt", status=400, code="invalid_param"))
    rows = Rows(30, client)
    summary = run(rows, max_concurrency=4, max_failed_ratio=1.0)
    assert summary.stopped is None and summary.failed == 30 and len(rows.saved) == 30


def test_a_sustained_outage_trips_it_and_a_success_resets_the_clock() -> None:
    client = FailingClient(after=5, error=DifyTransportError("cannot connect", code="connection_error"))
    rows = Rows(5000, client)
    summary = run(rows, max_concurrency=4, outage_seconds=0.2)
    assert summary.stopped == "breaker" and "no call reached Dify" in (summary.stopped_reason or "")
    assert len(rows.saved) == 5 and summary.left_pending > 0 and summary.failed == 0


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (DifyAuthError("x", status=401), SYSTEMIC),
        (DifyForbiddenError("x", status=403), SYSTEMIC),
        (DifyQuotaError("x", status=429, code="rate_limit_error"), SYSTEMIC),
        (DifyBadRequestError("x", status=400, code="app_unavailable"), SYSTEMIC),
        (DifyBadRequestError("x", status=400, code="invalid_param"), None),
        (DifyTransportError("x", code="connection_error"), UNAVAILABLE),
        (DifyServerError("x", status=503), UNAVAILABLE),
        (DifyServerError("x", status=500), None),
        (DifyServerError("x", status=504, maybe_billed=True), None),
        (DifyTimeoutError("x"), None),  # may have run and been billed: the row records that
    ],
)
def test_classification(error: DifyError, kind: str | None) -> None:
    assert classify(error) == kind


def _form(*items: tuple[str, str, bool]) -> dict[str, tuple[str, bool]]:
    return form_of({"user_input_form": [{t: {"variable": v, "required": r}} for v, t, r in items]})


def test_preflight_names_unmapped_required_and_unknown_inputs() -> None:
    form = _form(("language", "text-input", True), ("invoice", "file", True), ("tone", "select", False))
    with pytest.raises(PreflightError) as err:
        check_inputs("Support bot", form, {"langauge": "lang"})
    message = str(err.value)
    assert "['langauge']" in message and "its inputs: language, invoice, tone" in message
    assert "['language', 'invoice']" in message and "invoice: a file input" in message
    check_inputs("Support bot", form, {"language": "lang", "invoice": "file_url"})
