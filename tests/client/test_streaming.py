"""SSE parsing and aggregation: a streamed call returns what the blocking call would have."""

from __future__ import annotations

import pytest

from airflow_dify.client import (
    NO_RETRY,
    DifyBadRequestError,
    DifyRunFailedError,
    DifyServerError,
    DifyStreamError,
)
from airflow_dify.client.responses import CallContext
from airflow_dify.client.streaming import MessageAggregator, iter_events, iter_lines
from airflow_dify.testing import FakeDify, Fault

CTX = CallContext("http://127.0.0.1/v1", "chat-messages")


@pytest.fixture
def client_engine(both_engines: str) -> str:
    """Every test here runs on the sync client and on the asyncio one (driven from this thread)."""
    return both_engines


def _usage_fields(result) -> dict:
    usage = result.usage.__dict__.copy()
    usage.pop("latency")
    return usage


def test_iter_lines_handles_every_line_ending_across_chunks() -> None:
    chunks = [b"data: 1\r", b"\n\r\nda", b"ta: 2\n", b"\n", b"data: 3\r", b"\r", b"tail"]
    assert list(iter_lines(chunks)) == ["data: 1", "", "data: 2", "", "data: 3", "", "tail"]


def test_iter_events_skips_pings_and_comments() -> None:
    raw = (
        b"event: ping\n\n: keep-alive comment\n\n"
        b'data: {"event": "message", "answer": "Hel"}\r\n\r\n'
        b'data:{"event": "message", "answer": "lo"}\n\n'
        b'data: {"event": "message_end",\ndata: "metadata": {}}\n\n'
    )
    events = list(iter_events([raw[i : i + 7] for i in range(0, len(raw), 7)]))
    assert [e["event"] for e in events] == ["message", "message", "message_end"]
    assert events[1]["answer"] == "lo"


def test_malformed_event_is_a_stream_error() -> None:
    with pytest.raises(DifyStreamError):
        list(iter_events([b"data: {not json\n\n"]))


def test_agent_closing_message_replaces_chunks() -> None:
    agg = MessageAggregator("chat", CTX)
    for event in (
        {"event": "agent_message", "answer": "Hel", "message_id": "m1", "conversation_id": "c1"},
        {"event": "agent_message", "answer": "lo"},
        {"event": "message", "answer": "Hello"},
        {"event": "message_end", "metadata": {"usage": {"total_tokens": 7}}},
    ):
        done = agg.feed(event)
    assert done
    result = agg.result(5)
    assert (result.answer, result.message_id, result.conversation_id) == ("Hello", "m1", "c1")
    assert result.usage.total_tokens == 7


def test_message_replace_and_chatflow_failure() -> None:
    agg = MessageAggregator("chat", CTX)
    agg.feed({"event": "message", "answer": "bad words"})
    agg.feed({"event": "message_replace", "answer": "[moderated]"})
    agg.feed({"event": "message_end", "metadata": {}})
    assert agg.result().answer == "[moderated]"
    failed = MessageAggregator("chat", CTX)
    failed.feed({"event": "workflow_finished", "data": {"status": "failed", "error": "node X broke"}})
    with pytest.raises(DifyRunFailedError, match="node X broke"):
        failed.result()


@pytest.mark.parametrize(
    ("mode", "method", "args"),
    [
        ("chat", "chat", (("Hello there", {"lang": "fr"}), {})),
        ("advanced-chat", "chat", (("Hello there",), {})),
        ("completion", "complete", (({"text": "abc"},), {})),
    ],
)
def test_message_stream_equals_blocking(fake_dify: FakeDify, make_client, mode, method, args) -> None:
    client = make_client(mode)
    positional, kwargs = args
    blocking = getattr(client, method)(*positional, user="u", **kwargs)
    streamed = getattr(client, method)(*positional, user="u", response_mode="streaming", **kwargs)
    assert fake_dify.requests[-1].body["response_mode"] == "streaming"
    assert streamed.answer == blocking.answer
    assert streamed.mode == blocking.mode
    assert _usage_fields(streamed) == _usage_fields(blocking)
    assert streamed.message_id and streamed.task_id
    if mode != "completion":
        assert streamed.conversation_id


def test_workflow_stream_equals_blocking(fake_dify: FakeDify, make_client) -> None:
    client = make_client("workflow")
    blocking = client.run_workflow({"city": "Oslo"}, user="u")
    streamed = client.run_workflow({"city": "Oslo"}, user="u", response_mode="streaming")
    assert (streamed.outputs, streamed.answer, streamed.status) == (
        blocking.outputs,
        blocking.answer,
        "succeeded",
    )
    assert streamed.usage.total_tokens == blocking.usage.total_tokens
    assert streamed.workflow_run_id and streamed.workflow_run_id != blocking.workflow_run_id


def test_stream_error_event_maps_like_http(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(
        Fault("stream_error", path="/chat-messages", on=[1], status=400, code="provider_quota_exceeded")
    )
    with pytest.raises(DifyBadRequestError) as info:
        make_client("chat").chat("q", user="u", response_mode="streaming")
    assert (info.value.status, info.value.code) == (400, "provider_quota_exceeded")
    assert fake_dify.calls() == 1  # terminal: not retried
    fake_dify.faults.add(Fault("stream_error", path="/chat-messages", on=[2]))
    with pytest.raises(DifyServerError) as info:
        make_client("chat", retry=NO_RETRY).chat("q", user="u", response_mode="streaming")
    assert info.value.maybe_billed


def test_workflow_stream_failed_status(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("workflow_status", path="/workflows/run", status_text="failed"))
    with pytest.raises(DifyRunFailedError) as info:
        make_client("workflow").run_workflow({}, user="u", response_mode="streaming")
    assert info.value.code == "workflow_failed" and info.value.workflow_run_id


def test_broken_chat_stream(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("stream_break", path="/chat-messages", on=[1, 2]))
    with pytest.raises(DifyStreamError) as info:
        make_client("chat", retry=NO_RETRY).chat("q", user="u", response_mode="streaming")
    assert info.value.retryable and info.value.maybe_billed and "message_end" in info.value.message
    result = make_client("chat").chat("q", user="u", response_mode="streaming")  # retried: 2 fails, 3 ok
    assert result.answer == "Answer: q"
    assert fake_dify.calls("/chat-messages") == 3


def test_broken_workflow_stream_recovers_without_a_second_run(fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("stream_break", path="/workflows/run", on=[1]))
    result = make_client("workflow").run_workflow({"x": "y"}, user="u", response_mode="streaming")
    assert result.status == "succeeded" and result.outputs == {"result": "x=y"}
    assert fake_dify.calls("/workflows/run") == 1  # no second POST: no double spend
    lookups = [r for r in fake_dify.requests if r.method == "GET"]
    assert [r.path for r in lookups] == [f"/workflows/run/{result.workflow_run_id}"]
    assert result.usage.total_tokens is not None
