"""Blocking calls against FakeDify: bodies sent, usage parsed exactly, one permit per attempt."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_dify.client import AppInfo, DifyConfigError, DifyResult
from airflow_dify.testing import FakeDify, Fault
from tests.client.client_helpers import CountingPool

PRICE_FIELDS = (
    "prompt_unit_price",
    "prompt_price_unit",
    "prompt_price",
    "completion_unit_price",
    "completion_price_unit",
    "completion_price",
    "total_price",
)


@pytest.fixture
def client_engine(both_engines: str) -> str:
    """Every test here runs on the sync client and on the asyncio one (driven from this thread)."""
    return both_engines


def _last(fake: FakeDify, path: str):
    return [r for r in fake.requests if r.path == path][-1]


def _assert_usage_matches(result: DifyResult, usage: dict) -> None:
    for name in PRICE_FIELDS:
        value = getattr(result.usage, name)
        assert isinstance(value, Decimal), name
        assert str(value) == usage[name], name  # exact decimal string, never through float
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(result.usage, name) == usage[name]
    assert result.usage.currency == usage["currency"]


def test_chat_sends_dify_body_and_parses_usage(fake_dify: FakeDify, make_client) -> None:
    result = make_client("chat").chat("What is 2+2?", {"lang": "en"}, user="airflow-test")
    record = _last(fake_dify, "/chat-messages")
    assert record.body == {
        "query": "What is 2+2?",
        "inputs": {"lang": "en"},
        "user": "airflow-test",
        "response_mode": "blocking",
        "auto_generate_name": False,
    }
    assert record.auth == "key"
    assert result.answer == "Answer: What is 2+2? | lang=en" == record.response["answer"]
    assert result.mode == "chat"
    assert result.message_id == record.response["message_id"]
    assert result.conversation_id == record.response["conversation_id"]
    assert result.task_id == record.response["task_id"]
    _assert_usage_matches(result, record.response["metadata"]["usage"])
    assert result.latency_ms is not None and result.latency_ms >= 0


def test_completion_parses_usage(fake_dify: FakeDify, make_client) -> None:
    result = make_client("completion").complete({"text": "hello"}, user="u")
    record = _last(fake_dify, "/completion-messages")
    assert "query" not in record.body and record.body["inputs"] == {"text": "hello"}
    assert result.answer == record.response["answer"] == "text=hello"
    assert result.mode == "completion" and result.conversation_id is None
    _assert_usage_matches(result, record.response["metadata"]["usage"])


def test_workflow_result(fake_dify: FakeDify, make_client) -> None:
    result = make_client("workflow").run_workflow({"city": "Paris"}, user="u")
    record = _last(fake_dify, "/workflows/run")
    data = record.response["data"]
    assert result.status == "succeeded"
    assert result.outputs == data["outputs"] == {"result": "city=Paris"}
    assert result.usage.total_tokens == data["total_tokens"]
    assert result.workflow_run_id == record.response["workflow_run_id"]
    assert result.answer == "city=Paris"  # the one string output itself, not {"result": ...}


def test_latency_ms_covers_server_time(make_client) -> None:
    fake = FakeDify(latency=0.05).start()
    try:
        client = make_client(auth=fake.app("chat").key, base_url=fake.url)
        assert client.chat("q", user="u").latency_ms >= 45
    finally:
        fake.stop()


def test_info_and_parameters(make_client) -> None:
    client = make_client("workflow")
    info = client.info()
    assert isinstance(info, AppInfo)
    assert info.mode == "workflow" and info.family == "workflow" and info.name == "Fake Workflow"
    params = client.parameters()
    assert "user_input_form" in params


def test_get_workflow_run_matches_the_run(make_client) -> None:
    client = make_client("workflow")
    ran = client.run_workflow({"a": "b"}, user="u")
    fetched = client.get_workflow_run(ran.workflow_run_id)
    assert fetched.status == "succeeded"
    assert fetched.outputs == ran.outputs
    assert fetched.usage.total_tokens == ran.usage.total_tokens


@pytest.mark.parametrize(
    ("family", "kwargs", "path"),
    [
        ("chat", {"query": "hi"}, "/chat-messages"),
        ("advanced-chat", {"query": "hi"}, "/chat-messages"),
        ("completion", {"inputs": {"x": "1"}}, "/completion-messages"),
        ("workflow", {"inputs": {"x": "1"}}, "/workflows/run"),
    ],
)
def test_call_dispatches_by_family(fake_dify: FakeDify, make_client, family, kwargs, path) -> None:
    result = make_client(family).call(family, user="u", **kwargs)
    assert result.status == "succeeded"
    # Workflows stream by default: only their node events carry the price.
    expected = "streaming" if family == "workflow" else "blocking"
    assert _last(fake_dify, path).body["response_mode"] == expected


def test_call_agent_chat_defaults_to_streaming(fake_dify: FakeDify, make_client) -> None:
    result = make_client("agent-chat").call("agent-chat", query="plan a trip", user="u")
    assert result.answer == "Answer: plan a trip"
    assert _last(fake_dify, "/chat-messages").body["response_mode"] == "streaming"


@pytest.mark.parametrize("user", ["", "   ", None])
def test_user_is_required_before_any_request(fake_dify: FakeDify, make_client, user) -> None:
    with pytest.raises(DifyConfigError, match="user is required"):
        make_client("chat").chat("q", user=user)
    assert fake_dify.calls() == 0


def test_trace_id_validated(fake_dify: FakeDify, make_client) -> None:
    client = make_client("chat")
    assert client.chat("q", user="u", trace_id="dag_1-run-2").answer == "Answer: q"
    with pytest.raises(DifyConfigError, match="trace_id"):
        client.chat("q", user="u", trace_id="dag:1/run")
    with pytest.raises(DifyConfigError, match="response_mode"):
        client.chat("q", user="u", response_mode="fast")
    assert fake_dify.calls() == 1


def test_one_permit_per_attempt_settled_with_actual_tokens(fake_dify: FakeDify, make_client) -> None:
    pool = CountingPool()
    fake_dify.faults.add(Fault("status", path="/chat-messages", on=[1], status=503))
    fake_dify.faults.add(Fault("status", path="/chat-messages", on=[2], status=429, code="too_many_requests"))
    result = make_client("chat", pool=pool, completion_token_estimate=300).chat("q", user="u")
    assert pool.acquired == [300, 300, 300]
    # 503: may have run -> estimate; 429: rejected before running -> 0; success -> real total.
    assert pool.settled == [300, 0, result.usage.total_tokens]
    assert pool.throttles == 1


def test_terminal_error_settles_zero(fake_dify: FakeDify, make_client) -> None:
    pool = CountingPool()
    with pytest.raises(Exception):  # noqa: B017 - the class is checked in test_errors
        make_client("chat", pool=pool).chat("", user="u")
    assert pool.acquired == [256] and pool.settled == [0] and pool.throttles == 0


def test_lookups_do_not_use_the_pool(make_client) -> None:
    pool = CountingPool()
    make_client("chat", pool=pool).info()
    assert pool.acquired == []


def test_client_accepts_messy_key_and_string_auth(fake_dify: FakeDify, make_client) -> None:
    client = make_client(auth=f'  "Bearer {fake_dify.app("chat").key}"\n')
    assert client.info().mode == "chat"
    assert fake_dify.app("chat").key not in repr(client)
