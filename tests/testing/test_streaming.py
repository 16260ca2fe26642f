"""Streaming (SSE) responses of FakeDify."""

from __future__ import annotations

import requests

from airflow_dify.testing import FakeDify, answer_text

from .fakedify_helpers import DATA, assert_same_shape, bearer, parse_sse, validate


def stream(fake: FakeDify, mode: str, path: str, body: dict) -> requests.Response:
    body = {**body, "response_mode": "streaming", "user": "u"}
    resp = requests.post(f"{fake.url}{path}", json=body, headers=bearer(fake.app(mode).key), timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return resp


def test_completion_stream_matches_fixture(fake_dify: FakeDify) -> None:
    resp = stream(fake_dify, "completion", "/completion-messages", {"query": "Hello there", "inputs": {}})
    other, events = parse_sse(resp.text)
    assert other[0] == "event: ping" and resp.text.startswith("event: ping\n\n")
    _, expected = parse_sse((DATA / "completion_messages_streaming_200.sse.txt").read_text())
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "message_end" and set(kinds[:-1]) == {"message"} and len(kinds) >= 3
    assert_same_shape(events[0], expected[0])
    assert_same_shape(events[-1], expected[-1])
    for event in events[:-1]:
        validate(event, "StreamEventMessage")
    validate(events[-1], "StreamEventMessageEnd")
    assert "".join(e["answer"] for e in events[:-1]) == "Answer: Hello there"
    usage = events[-1]["metadata"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert isinstance(usage["total_price"], str)


def test_chat_stream_has_conversation(fake_dify: FakeDify) -> None:
    _, events = parse_sse(
        stream(fake_dify, "chat", "/chat-messages", {"query": "x", "inputs": {"a": 1}}).text
    )
    assert {e["conversation_id"] for e in events} and len({e["conversation_id"] for e in events}) == 1
    assert "".join(e["answer"] for e in events if e["event"] == "message") == answer_text("x", {"a": 1})


def test_agent_chat_streams(fake_dify: FakeDify) -> None:
    _, events = parse_sse(
        stream(fake_dify, "agent-chat", "/chat-messages", {"query": "x", "inputs": {}}).text
    )
    kinds = [e["event"] for e in events]
    assert kinds[0] == "agent_thought" and kinds[-1] == "message_end"
    assert "".join(e["answer"] for e in events if e["event"] == "agent_message") == "Answer: x"


def test_advanced_chat_stream_has_workflow_events(fake_dify: FakeDify) -> None:
    _, events = parse_sse(
        stream(fake_dify, "advanced-chat", "/chat-messages", {"query": "x", "inputs": {}}).text
    )
    kinds = [e["event"] for e in events]
    assert kinds[0] == "workflow_started" and kinds[-2:] == ["message_end", "workflow_finished"]


def test_workflow_stream(fake_dify: FakeDify) -> None:
    _, events = parse_sse(stream(fake_dify, "workflow", "/workflows/run", {"inputs": {"city": "Oslo"}}).text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_finished"
    assert {"node_started", "node_finished", "text_chunk"} <= set(kinds)
    started, finished = events[0], events[-1]
    assert started["workflow_run_id"] == started["data"]["id"] == finished["workflow_run_id"]
    validate(started, "WorkflowStreamEventWorkflowStarted")
    validate(finished, "WorkflowStreamEventWorkflowFinished")
    for event in events:
        if event["event"] == "node_started":
            validate(event, "WorkflowStreamEventNodeStarted")
        elif event["event"] == "node_finished":
            validate(event, "WorkflowStreamEventNodeFinished")
        elif event["event"] == "text_chunk":
            validate(event, "StreamEventTextChunk")
    assert finished["data"]["status"] == "succeeded"
    assert finished["data"]["outputs"] == {"result": "city=Oslo"}
    assert "".join(e["data"]["text"] for e in events if e["event"] == "text_chunk") == "city=Oslo"
    # The run is stored for GET /workflows/run/{id}.
    detail = requests.get(
        f"{fake_dify.url}/workflows/run/{finished['workflow_run_id']}",
        headers=bearer(fake_dify.app("workflow").key),
        timeout=10,
    )
    assert detail.status_code == 200 and detail.json()["status"] == "succeeded"
    record = fake_dify.requests[0]
    assert record.status == 200 and record.response is None


def test_stream_can_be_read_incrementally() -> None:
    with FakeDify(latency=0.2) as fake:
        body = {"query": "q", "inputs": {}, "user": "u", "response_mode": "streaming"}
        with requests.post(
            f"{fake.url}/chat-messages", json=body, headers=bearer(fake.app().key), stream=True, timeout=10
        ) as resp:
            lines = [line for line in resp.iter_lines() if line]
    assert lines[0] == b"event: ping"
    assert b"message_end" in lines[-1]
