"""HTTP answers map to the right DifyError (status, code, message); retries are bounded and honest."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_dify.client import (
    NO_RETRY,
    DifyAPIError,
    DifyAuthError,
    DifyBadRequestError,
    DifyForbiddenError,
    DifyNotFoundError,
    DifyQuotaError,
    DifyRateLimitError,
    DifyResponseError,
    DifyRunFailedError,
    DifyServerError,
    DifyTimeoutError,
    DifyTransportError,
    RetryPolicy,
)
from airflow_dify.client.responses import describe_body, parse_retry_after
from airflow_dify.testing import FakeApp, FakeDify, Fault
from tests.client.client_helpers import FAST

NO_BILLED_RESEND = RetryPolicy(max_attempts=5, initial_wait=0.01, max_wait=0.05, resend_maybe_billed=False)


def test_401_wrong_key_is_terminal_and_actionable(fake_dify: FakeDify, make_client) -> None:
    client = make_client(auth="app-" + "Z" * 24)
    with pytest.raises(DifyAuthError) as info:
        client.chat("q", user="u")
    err = info.value
    assert (err.status, err.code, err.retryable, err.attempts) == (401, "unauthorized", False, 1)
    assert "Access token is invalid" in err.message
    assert "app's own API key" in err.message and "Authorization: Bearer <key>" in err.message
    assert fake_dify.calls("/chat-messages") == 1


def test_403_api_disabled_passes_dify_message() -> None:
    app = FakeApp(mode="chat", api_enabled=False)
    with FakeDify(apps=[app]) as fake:
        from airflow_dify.client import DifyClient

        with DifyClient(fake.url, app.key, retry=FAST) as client, pytest.raises(DifyForbiddenError) as info:
            client.info()
        assert info.value.status == 403 and info.value.code == "forbidden"
        assert "The app's API service has been disabled." in info.value.message
        assert "API Access" in info.value.message
        assert len(fake.requests) == 1


def test_404_base_url_without_v1(fake_dify: FakeDify, make_client) -> None:
    client = make_client(base_url=fake_dify.base_url)
    with pytest.raises(DifyNotFoundError) as info:
        client.chat("q", user="u")
    assert info.value.code == "not_found" and info.value.attempts == 1
    assert f"ends with /v1 (got {fake_dify.base_url})" in info.value.message


def test_400_missing_query(fake_dify: FakeDify, make_client) -> None:
    with pytest.raises(DifyBadRequestError) as info:
        make_client("chat").chat("", user="u")
    assert (info.value.status, info.value.code) == (400, "invalid_param")
    assert "query is required" in info.value.message
    assert fake_dify.calls() == 1


def test_400_wrong_route_code(make_client, fake_dify: FakeDify) -> None:
    with pytest.raises(DifyBadRequestError) as info:
        make_client("completion").chat("q", user="u")
    assert info.value.code == "not_chat_app"


def test_400_blocking_on_agent_hints_streaming(make_client) -> None:
    with pytest.raises(DifyBadRequestError, match="response_mode='streaming'"):
        make_client("agent-chat").chat("q", user="u")


@pytest.mark.parametrize(
    ("status", "code"), [(429, "too_many_requests"), (500, None), (502, None), (503, None), (524, None)]
)
def test_transient_status_retried_then_succeeds(fake_dify: FakeDify, make_client, status, code) -> None:
    fake_dify.faults.add(Fault("status", path="/chat-messages", on=[1, 2], status=status, code=code))
    result = make_client("chat").chat("q", user="u")
    assert result.answer == "Answer: q"
    assert fake_dify.calls("/chat-messages") == 3
    assert [r.status for r in fake_dify.requests] == [status, status, 200]


def test_retry_log_line(fake_dify: FakeDify, make_client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_dify.client")
    fake_dify.faults.add(Fault("status", path="/chat-messages", on=[1], status=503))
    make_client("chat").chat("q", user="u")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("chat-messages attempt 1/5 failed (503 ")
    assert "; retrying in " in line and line.endswith(" s")


def test_html_502_gateway_page(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("html", path="/chat-messages", status=502))
    with pytest.raises(DifyServerError) as info:
        make_client("chat", retry=NO_RETRY).chat("q", user="u")
    assert info.value.status == 502 and info.value.retryable
    assert "HTTP 502 from the gateway (HTML page: '" in info.value.message
    assert "<" not in info.value.message


def test_html_429_is_a_retryable_rate_limit(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("html", path="/chat-messages", on=[1], status=429))
    pool_result = make_client("chat").chat("q", user="u")
    assert pool_result.answer == "Answer: q"
    with pytest.raises(DifyRateLimitError) as info:
        fake_dify.faults.add(Fault("html", path="/chat-messages", status=429))
        make_client("chat", retry=NO_RETRY).chat("q", user="u")
    assert info.value.code == "too_many_requests" and "HTML page" in info.value.message


def test_quota_429_is_terminal(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("status", path="/workflows/run", status=429, code="rate_limit_error"))
    with pytest.raises(DifyQuotaError) as info:
        make_client("workflow").run_workflow({}, user="u")
    assert not info.value.retryable and info.value.attempts == 1
    assert fake_dify.calls() == 1


def test_retry_after_is_honoured(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("retry_after", path="/chat-messages", on=[1], retry_after=1))
    client = make_client("chat", retry=RetryPolicy(initial_wait=0.01, max_wait=5.0))
    assert client.chat("q", user="u").answer == "Answer: q"
    first, second = fake_dify.requests
    assert first.status == 429 and second.status == 200
    assert second.started - first.ended >= 0.9  # the header said 1 s; jittered back-off would be ~0


def test_retry_after_is_capped_by_max_wait(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("retry_after", path="/chat-messages", on=[1], retry_after=120))
    client = make_client("chat", retry=RetryPolicy(initial_wait=0.01, max_wait=0.1))
    assert client.chat("q", user="u").answer == "Answer: q"
    first, second = fake_dify.requests
    assert second.started - first.ended < 30


def test_retries_bounded_by_attempts(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("status", path="/chat-messages", after=0, status=503))
    policy = RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02)
    with pytest.raises(DifyServerError) as info:
        make_client("chat", retry=policy).chat("q", user="u")
    assert info.value.attempts == 3
    assert fake_dify.calls("/chat-messages") == 3


def test_retries_bounded_by_elapsed_time(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("retry_after", path="/chat-messages", after=0, retry_after=1))
    policy = RetryPolicy(max_attempts=100, max_elapsed=1.5, initial_wait=0.01, max_wait=5.0)
    with pytest.raises(DifyRateLimitError) as info:
        make_client("chat", retry=policy).chat("q", user="u")
    # Each wait is 1 s; no sleep may start that would end past 1.5 s: at most 2 attempts.
    assert 1 <= info.value.attempts <= 2
    assert fake_dify.calls("/chat-messages") == info.value.attempts


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_bad_2xx_body(fake_dify: FakeDify, make_client, kind: str) -> None:
    fake_dify.faults.add(Fault(kind, path="/chat-messages", on=[1]))
    assert make_client("chat").chat("q", user="u").answer == "Answer: q"  # retried by default
    fake_dify.faults.add(Fault(kind, path="/chat-messages", on=[3]))
    with pytest.raises(DifyResponseError) as info:
        make_client("chat", retry=NO_BILLED_RESEND).chat("q", user="u")
    assert info.value.maybe_billed and info.value.attempts == 1
    assert fake_dify.calls("/chat-messages") == 3


def test_billed_504_not_resent_when_policy_forbids(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("billed_504", path="/chat-messages", on=[1]))
    with pytest.raises(DifyServerError) as info:
        make_client("chat", retry=NO_BILLED_RESEND).chat("q", user="u")
    assert info.value.status == 504 and info.value.maybe_billed
    assert "may still have run" in info.value.message
    assert fake_dify.calls("/chat-messages") == 1


def test_connection_reset_retried(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("reset", path="/chat-messages", on=[1]))
    assert make_client("chat").chat("q", user="u").answer == "Answer: q"
    fake_dify.faults.add(Fault("reset", path="/chat-messages", on=[3]))
    with pytest.raises(DifyTransportError) as info:
        make_client("chat", retry=NO_RETRY).chat("q", user="u")
    assert info.value.retryable and info.value.status is None


def test_read_timeout_is_maybe_billed(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("stall", path="/chat-messages", on=[1], delay=2.0))
    with pytest.raises(DifyTimeoutError) as info:
        make_client("chat", retry=NO_RETRY, timeout=(5, 0.3)).chat("q", user="u")
    assert info.value.maybe_billed and info.value.retryable
    assert "read timeout" in info.value.message


def test_connection_refused_is_not_billed(make_client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", retry=NO_RETRY)
    with pytest.raises(DifyTransportError) as info:
        client.info()
    assert info.value.code == "connection_error" and not info.value.maybe_billed


@pytest.mark.parametrize("status_text", ["failed", "partial-succeeded", "paused", "stopped"])
def test_workflow_status_other_than_succeeded(fake_dify: FakeDify, make_client, status_text: str) -> None:
    fake_dify.faults.add(Fault("workflow_status", path="/workflows/run", status_text=status_text))
    with pytest.raises(DifyRunFailedError) as info:
        make_client("workflow").run_workflow({"a": "b"}, user="u")
    err = info.value
    assert err.code == f"workflow_{status_text}" and not err.retryable
    assert err.result is not None and err.result.status == status_text
    run_id = fake_dify.requests[0].response["workflow_run_id"]
    assert err.workflow_run_id == err.result.workflow_run_id == run_id
    if status_text == "failed":
        assert "injected failure" in err.message
    assert fake_dify.calls() == 1  # a run that failed is never re-run


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert 9 <= parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=0.0) <= 11
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_describe_body() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    assert describe_body(502, page, "text/html") == "HTTP 502 from the gateway (HTML page: '502 Bad Gateway')"
    text = describe_body(429, "error code: 1015", "text/plain")
    assert text == "HTTP 429 (non-JSON body: 'error code: 1015')"
    assert describe_body(503, "", "") == "HTTP 503 with an empty body"


class _Redirect(BaseHTTPRequestHandler):
    target = ""
    seen_auth: list[str | None] = []

    def _redirect(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization"))
        self.send_response(307)
        self.send_header("Location", self.target + self.path.removeprefix("/v1"))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *args: object) -> None:
        return None


def test_redirect_is_refused_and_the_key_never_travels(fake_dify: FakeDify, make_client) -> None:
    """127.0.0.1 redirects to localhost: the client stops with a clear error, sends nothing there."""
    _Redirect.target = f"http://localhost:{fake_dify.port}/v1"
    _Redirect.seen_auth = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = make_client("chat", base_url=f"http://127.0.0.1:{server.server_port}/v1", retry=NO_RETRY)
        for call in (
            client.info,
            lambda: client.chat("q", user="u"),
            lambda: client.chat("q", user="u", response_mode="streaming"),
        ):
            with pytest.raises(DifyAPIError) as info:
                call()
            assert info.value.code == "redirect" and not info.value.retryable
            assert f"redirect to {_Redirect.target}" in str(info.value)
    finally:
        server.shutdown()
        server.server_close()
    key = fake_dify.app("chat").key
    assert _Redirect.seen_auth == [f"Bearer {key}"] * 3  # the configured host got it (control)
    assert fake_dify.requests == []  # the redirect target never saw a request
