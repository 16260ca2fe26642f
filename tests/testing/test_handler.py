"""The pure request handler: a request value and a state in, a reply out; no server, no sleeping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_dify.testing import FakeApp, Fault, answer_text
from airflow_dify.testing.exchange import Request, Reset
from airflow_dify.testing.faults import TOKEN_PATH
from airflow_dify.testing.handler import handle
from airflow_dify.testing.limits import Limits
from airflow_dify.testing.oauth import OAuthClient
from airflow_dify.testing.state import FakeState

from .fakedify_helpers import call, decoded, response, stream

CHAT = {"query": "q", "inputs": {}, "user": "u"}


def in_flight(state: FakeState, mode: str = "chat") -> int:
    return state.limits.in_flight(state.app(mode).id)


def test_blocking_answer_waits_the_latency_and_frees_its_slot_at_commit() -> None:
    state = FakeState(latency=0.25)
    reply = call(state, "/chat-messages", CHAT)
    assert reply.delay == 0.25
    assert response(reply).status == 200 and response(reply).headers["Content-Type"] == "application/json"
    assert decoded(reply)["answer"] == answer_text("q", {})
    # Admitted and counted at once; logged and freed only when the answer is about to go out.
    assert in_flight(state) == 1 and state.records() == [] and state.calls("/chat-messages") == 1
    reply.commit()
    assert in_flight(state) == 0
    [record] = state.records()
    assert (record.status, record.auth, record.app_mode, record.body) == (200, "key", "chat", CHAT)
    reply.close()
    assert len(state.records()) == 1  # close after commit records nothing twice


def test_a_held_slot_refuses_the_next_call_until_commit() -> None:
    state = FakeState(limits=Limits(max_active_requests=1))
    first = call(state, "/chat-messages", CHAT)
    refused = call(state, "/chat-messages", CHAT)
    assert response(refused).status == 429 and decoded(refused)["code"] == "too_many_requests"
    assert "Retry-After" not in response(refused).headers
    first.commit()
    assert response(call(state, "/chat-messages", CHAT)).status == 200


def test_stream_frames_share_the_latency_and_hold_the_slot_until_close() -> None:
    state = FakeState(latency=0.4)
    reply = call(state, "/chat-messages", {**CHAT, "response_mode": "streaming"})
    sent = stream(reply)
    assert reply.delay == 0.0 and sent.status == 200
    assert sent.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert sent.frames[0].delay == 0.0 and sent.frames[0].data == b"event: ping\n\n"
    steps = {frame.delay for frame in sent.frames[1:]}
    assert len(steps) == 1 and sum(f.delay for f in sent.frames) == pytest.approx(0.4)
    events = [json.loads(frame.data[len(b"data: ") :]) for frame in sent.frames[1:]]
    assert events[-1]["event"] == "message_end"
    reply.commit()
    assert len(state.records()) == 1 and in_flight(state) == 1
    reply.close()
    assert in_flight(state) == 0


def test_stall_delays_the_answer_or_the_head_of_a_stream() -> None:
    state = FakeState(latency=0.1)
    state.faults.add(Fault("stall", delay=3.0, times=2))
    assert call(state, "/chat-messages", CHAT).delay == pytest.approx(3.1)
    assert call(state, "/chat-messages", {**CHAT, "response_mode": "streaming"}).delay == 3.0
    assert state.records() == []  # neither is logged before it commits


def test_reset_and_early_faults_are_not_admitted() -> None:
    state = FakeState()
    state.faults.add(Fault("reset", on=[1]))
    state.faults.add(Fault("status", on=[2], status=503, retry_after=4))
    reset = call(state, "/chat-messages", CHAT)
    assert isinstance(reset.send, Reset)
    failed = call(state, "/chat-messages", CHAT)
    assert response(failed).status == 503 and response(failed).headers["Retry-After"] == "4"
    for reply in (reset, failed):
        reply.close()
    assert [(r.status, r.fault) for r in state.records()] == [(0, "reset"), (503, "status")]
    assert state.limits.stats()["admitted"] == 0


def test_billed_504_keeps_the_answer_in_the_record() -> None:
    state = FakeState()
    state.faults.add(Fault("billed_504"))
    reply = call(state, "/chat-messages", CHAT)
    assert response(reply).status == 504 and b"Gateway Time-out" in response(reply).body
    reply.close()
    assert state.records()[0].response["answer"] == "Answer: q"


def test_auth_and_routing_errors() -> None:
    state = FakeState()
    missing = handle(Request("GET", "/v1/info"), state)
    assert response(missing).status == 401
    assert response(missing).headers["WWW-Authenticate"] == 'Bearer realm="api"'
    unknown = handle(Request("GET", "/v1/info", {"authorization": "Bearer nope"}), state)
    assert decoded(unknown)["message"] == "Access token is invalid"
    assert response(call(state, "/chat-messages", method="GET")).status == 405
    assert response(handle(Request("POST", "/chat-messages"), state)).status == 404
    for reply in (missing, unknown):
        reply.close()
    assert [r.auth for r in state.records()] == ["none", "invalid"]
    assert state.calls() == 0  # wrong method: not a generation call


def test_read_endpoints_and_stored_runs() -> None:
    state = FakeState(apps=[FakeApp(mode="workflow", inputs=["city"])])
    assert decoded(call(state, "/info", mode="workflow", method="GET"))["mode"] == "workflow"
    form = decoded(call(state, "/parameters", mode="workflow", method="GET"))["user_input_form"]
    assert form[0]["text-input"]["variable"] == "city"
    run = decoded(call(state, "/workflows/run", {"inputs": {"city": "Oslo"}, "user": "u"}, mode="workflow"))
    detail = decoded(call(state, f"/workflows/run/{run['workflow_run_id']}", mode="workflow", method="GET"))
    assert detail["status"] == "succeeded" and detail["inputs"] == '{"city": "Oslo"}'


def test_token_endpoint_is_not_logged_and_slow_is_a_delay() -> None:
    state = FakeState()
    form = b"grant_type=client_credentials&client_id=cid&client_secret=secret"
    state.tokens.add_client(OAuthClient("cid", "secret", state.app().id))
    state.faults.add(Fault("token_down", on=[1]))
    state.faults.add(Fault("token_slow", on=[2], delay=0.7))
    down = handle(Request("POST", TOKEN_PATH, body=form), state)
    slow = handle(Request("POST", TOKEN_PATH, body=form), state)
    assert response(down).status == 503 and down.delay == 0.0
    assert response(slow).status == 200 and slow.delay == 0.7
    token = decoded(slow)["access_token"]
    assert state.app_for_credential(token) == ("token", state.app())
    assert response(handle(Request("GET", TOKEN_PATH), state)).status == 405
    assert state.records() == [] and state.tokens.issued == 1


def test_a_bug_answers_500_and_still_frees_the_slot() -> None:
    def broken(body: Any) -> float:
        raise RuntimeError("boom")

    state = FakeState(latency=broken)
    reply = call(state, "/chat-messages", CHAT)  # fails after admission
    assert response(reply).status == 500 and response(reply).close
    assert decoded(reply)["message"] == "FakeDify bug"
    reply.close()
    assert in_flight(state) == 0 and state.records()[0].status == 500


def test_request_headers_are_looked_up_case_insensitively() -> None:
    assert Request("GET", "/", {"authorization": "x"}).header("Authorization") == "x"
