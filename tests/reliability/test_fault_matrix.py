"""Each fault FakeDify can inject, through a real batch: nothing lost, nothing paid twice, bounded retries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airflow_dify.client import OAuth2ClientCredentials, clear_token_cache
from airflow_dify.testing import FakeDify, Fault
from tests.reliability.batch_harness import (
    GENERATION,
    assert_invariants,
    make_table,
    prompt_of,
    run_batch,
    table_rows,
)

N = 20
# fault, app mode, expected failed rows, expected error code of the failed rows (None: all succeed)
RECOVERABLE = {
    "429 too_many_requests": (Fault("status", status=429, code="too_many_requests", on=[2, 3]), "chat"),
    "429 with Retry-After": (Fault("retry_after", status=429, retry_after=1, on=[2]), "chat"),
    "500": (Fault("status", status=500, code="internal_server_error", on=[2, 6]), "completion"),
    "502 HTML": (Fault("html", status=502, on=[3]), "chat"),
    "503": (Fault("status", status=503, code="service_unavailable", on=[4]), "workflow"),
}
AMBIGUOUS = {  # the server may have run (and billed) the call: reported, never re-sent
    "504 after billing": (Fault("billed_504", on=[3]), "chat"),
    "connection reset": (Fault("reset", on=[3]), "completion"),
    "read timeout": (Fault("stall", delay=2.0, on=[3]), "chat"),
    "truncated JSON": (Fault("truncated", on=[3]), "chat"),
    "malformed JSON": (Fault("malformed", on=[3]), "completion"),  # a blocking body (workflows stream)
}
WORKFLOW_STATUS = ["failed", "partial-succeeded", "paused"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "rows.db"
    make_table(path, N)
    return path


@pytest.mark.parametrize("name", list(RECOVERABLE))
def test_transient_faults_are_retried_to_success(name: str, db: Path) -> None:
    fault, mode = RECOVERABLE[name]
    with FakeDify() as fake:
        fake.faults.add(fault)
        started = time.monotonic()
        summary = run_batch(fake, db, mode=mode)
        assert summary.succeeded == N and summary.failed == 0, summary.to_dict()
        assert_invariants(fake, db, N)
        faulted = [r for r in fake.requests if r.fault]
        assert faulted, "the fault never fired"
        assert fake.calls() == N + len(faulted)
        assert sum(r["attempts"] for r in table_rows(db).values()) == N + len(faulted)  # retries recorded
        if fault.kind == "retry_after":
            assert time.monotonic() - started >= 1.0  # Retry-After honoured


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_ambiguous_faults_fail_the_row_without_paying_twice(name: str, db: Path) -> None:
    fault, mode = AMBIGUOUS[name]
    with FakeDify() as fake:
        fake.faults.add(fault)
        summary = run_batch(fake, db, mode=mode, timeout=(2.0, 1.0))
        assert summary.failed == 1 and summary.succeeded == N - 1, summary.to_dict()
        assert summary.maybe_billed == 1
        assert_invariants(fake, db, N)
        (failed,) = [r for r in table_rows(db).values() if r["status"] == "failed"]
        assert "may have run and been billed" in failed["error"]
        deadline = time.monotonic() + 5  # a stalled request is logged once the server answers
        while not any(r.fault for r in fake.requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        (hit,) = [r for r in fake.requests if r.fault]
        assert [prompt_of(r) for r in fake.requests if r.path in GENERATION].count(prompt_of(hit)) == 1
        assert_invariants(fake, db, N)


@pytest.mark.parametrize("status_text", WORKFLOW_STATUS)
def test_workflow_status_other_than_succeeded_fails_the_row(status_text: str, db: Path) -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault("workflow_status", status_text=status_text, on=[5]))
        summary = run_batch(fake, db, mode="workflow")
        assert (summary.succeeded, summary.failed) == (N - 1, 1)
        (failed,) = [r for r in table_rows(db).values() if r["status"] == "failed"]
        assert status_text in failed["error"]
        assert_invariants(fake, db, N)
        assert fake.calls() == N  # a finished-but-failed workflow is not re-run


def test_broken_workflow_stream_is_recovered_without_running_twice(db: Path) -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault("stream_break", on=[2, 7]))
        summary = run_batch(fake, db, mode="workflow", response_mode="streaming")
        assert summary.succeeded == N, summary.to_dict()
        assert fake.calls("/workflows/run") == N  # no second POST for the broken ones
        assert sum(1 for r in fake.requests if r.path.startswith("/workflows/run/")) >= 2
        assert_invariants(fake, db, N)


def test_stream_error_event_fails_the_row(db: Path) -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault("stream_error", status=400, code="completion_request_error", on=[4]))
        summary = run_batch(fake, db, mode="chat", response_mode="streaming")
        assert (summary.succeeded, summary.failed) == (N - 1, 1)
        assert summary.error_codes == {"completion_request_error": 1}
        assert_invariants(fake, db, N)


def _oauth(fake: FakeDify) -> OAuth2ClientCredentials:
    clear_token_cache()
    fake.add_oauth_client("batch", "batch-secret-value", app_mode="chat")
    return OAuth2ClientCredentials(fake.token_url, "batch", "batch-secret-value", timeout=(2, 3))


@pytest.mark.parametrize("kind", ["token_down", "token_slow"])
def test_token_endpoint_down_or_slow(kind: str, db: Path) -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault(kind, status=503, delay=1.0, times=1))
        summary = run_batch(fake, db, auth=_oauth(fake))
        assert summary.succeeded == N, summary.to_dict()
        assert_invariants(fake, db, N)


def test_tokens_revoked_mid_run_refresh_once(db: Path) -> None:
    with FakeDify() as fake:
        auth = _oauth(fake)
        done = []

        def after_call() -> None:
            done.append(1)
            if len(done) == 8:
                fake.revoke_tokens()

        summary = run_batch(fake, db, auth=auth, after_call=after_call, concurrency=2)
        assert summary.succeeded == N, summary.to_dict()
        assert fake.token_requests == 2  # one fetch, one refresh after the 401s
        assert any(r.status == 401 for r in fake.requests)
        assert_invariants(fake, db, N)


def test_expired_tokens_are_refreshed_ahead(db: Path) -> None:
    with FakeDify(token_ttl=2, latency=0.15) as fake:
        summary = run_batch(fake, db, auth=_oauth(fake), concurrency=2)
        assert summary.succeeded == N
        assert fake.token_requests >= 2
        assert_invariants(fake, db, N)
