"""FakeDify's billing log: one entry per generation it did the work for, late faults included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import requests

from airflow_dify.testing import Bill, FakeDify, Fault
from airflow_dify.testing.limits import Limits
from airflow_dify.testing.state import FakeState

from .fakedify_helpers import bearer, call, decoded, events, served

CHAT = {"query": "q", "inputs": {}, "user": "alice"}
RUN = {"inputs": {"question": "why"}, "user": "bob"}
#: Which app and body each generation path is called with.
CALLS = {
    "/chat-messages": ("chat", CHAT),
    "/completion-messages": ("completion", CHAT),
    "/workflows/run": ("workflow", RUN),
}


def generate(state: FakeState, path: str, streaming: bool = False, **extra: Any) -> Any:
    mode, body = CALLS[path]
    body = {**body, "response_mode": "streaming" if streaming else "blocking", **extra}
    return served(call(state, path, body, mode=mode))


def test_answers_are_billed_with_their_usage_and_record() -> None:
    state = FakeState()
    chat = decoded(generate(state, "/chat-messages"))
    run = decoded(generate(state, "/workflows/run"))
    streamed = events(generate(state, "/workflows/run", streaming=True))
    chat_bill, run_bill, stream_bill = state.bills()
    usage = chat["metadata"]["usage"]
    assert chat_bill == Bill(
        seq=1,
        path="/chat-messages",
        user="alice",
        workflow_id=None,
        message_id=chat["message_id"],
        workflow_run_id=None,
        total_tokens=usage["total_tokens"],
        total_price=Decimal(usage["total_price"]),
        currency="USD",
    )
    workflow_id = state.app("workflow").workflow_id
    assert (run_bill.seq, run_bill.user, run_bill.workflow_id) == (2, "bob", workflow_id)
    assert (run_bill.workflow_run_id, run_bill.message_id) == (run["workflow_run_id"], None)
    assert run_bill.total_tokens == run["data"]["total_tokens"]
    # A stream's bill is what its node events report, to the last decimal.
    metadata = [e["data"]["execution_metadata"] for e in streamed if e["event"] == "node_finished"]
    reported = [m for m in metadata if m is not None]
    assert len(reported) == 2
    assert stream_bill.total_price == sum((Decimal(str(m["total_price"])) for m in reported), Decimal(0))
    assert stream_bill.total_tokens == sum(m["total_tokens"] for m in reported) == run_bill.total_tokens
    assert stream_bill.total_price == run_bill.total_price  # same inputs, same cost
    assert [r.seq for r in state.records()] == [b.seq for b in state.bills()]
    assert state.billed_total() == sum((b.total_price for b in state.bills()), Decimal(0))
    assert state.billed_total("EUR") == 0


@pytest.mark.parametrize(
    ("fault", "path", "streaming"),
    [
        (Fault("billed_504"), "/chat-messages", False),
        (Fault("truncated"), "/completion-messages", False),
        (Fault("malformed"), "/workflows/run", False),
        (Fault("stall", delay=0.5), "/chat-messages", True),
        (Fault("answer", message="bad\x00answer"), "/chat-messages", False),
        (Fault("stream_break"), "/chat-messages", True),
        (Fault("stream_break"), "/workflows/run", True),
    ],
)
def test_late_faults_are_billed_in_full(fault: Fault, path: str, streaming: bool) -> None:
    clean, faulty = FakeState(), FakeState()
    faulty.faults.add(fault)
    generate(clean, path, streaming)
    generate(faulty, path, streaming)
    [expected], [bill] = clean.bills(), faulty.bills()
    assert faulty.records()[0].fault == fault.kind
    assert (bill.total_tokens, bill.total_price) == (expected.total_tokens, expected.total_price)


def test_a_failed_run_bills_the_draft_node_only() -> None:
    state = FakeState()
    state.faults.add(Fault("workflow_status", status_text="failed"))
    data = decoded(generate(state, "/workflows/run"))["data"]
    streamed = events(generate(state, "/workflows/run", streaming=True))
    blocking_bill, stream_bill = state.bills()
    [draft] = [
        e["data"] for e in streamed if e["event"] == "node_finished" and e["data"]["execution_metadata"]
    ]
    assert draft["node_id"] == "llm_draft"
    assert blocking_bill.total_tokens == data["total_tokens"] == draft["execution_metadata"]["total_tokens"]
    assert stream_bill.total_price == Decimal(str(draft["execution_metadata"]["total_price"])) > 0


def test_a_stream_error_bills_only_what_the_stream_reported() -> None:
    state = FakeState()
    state.faults.add(Fault("stream_error"))
    generate(state, "/chat-messages", streaming=True)  # no message_end: no usage, nothing billed
    assert state.bills() == []
    streamed = events(generate(state, "/workflows/run", streaming=True))
    assert streamed[-1]["event"] == "error"
    reported = [
        e["data"] for e in streamed if e["event"] == "node_finished" and e["data"]["execution_metadata"]
    ]
    [bill] = state.bills()
    assert [n["node_id"] for n in reported] == ["llm_draft"]
    assert bill.total_tokens == reported[0]["execution_metadata"]["total_tokens"]


@pytest.mark.parametrize(
    "fault",
    [Fault("status", status=503), Fault("html"), Fault("retry_after"), Fault("reset")],
)
def test_early_faults_are_not_billed(fault: Fault) -> None:
    state = FakeState()
    state.faults.add(fault)
    generate(state, "/chat-messages")
    assert state.records()[0].fault == fault.kind and state.bills() == []


def test_refusals_and_429_are_not_billed() -> None:
    state = FakeState(limits=Limits(max_active_requests=1))
    held = call(state, "/chat-messages", {**CHAT, "response_mode": "streaming"})
    assert decoded(generate(state, "/chat-messages"))["code"] == "too_many_requests"
    assert decoded(generate(state, "/chat-messages", user=""))["code"] == "invalid_param"
    assert decoded(generate(state, "/workflows/run", query=3))["code"] == "invalid_param"
    assert state.bills() == []
    served(held)
    assert [b.seq for b in state.bills()] == [4]  # the stream, recorded when it ended


def test_fake_dify_billing_over_http_reset_and_bound() -> None:
    with FakeDify(max_records=2) as fake, requests.Session() as http:
        key = fake.app().key
        for _ in range(3):
            assert http.post(f"{fake.url}/chat-messages", json=CHAT, headers=bearer(key), timeout=10).ok
        billing = fake.billing
        assert [b.seq for b in billing] == [r.seq for r in fake.requests] == [2, 3]
        assert fake.billed_total() == sum((b.total_price for b in billing), Decimal(0)) > 0
        billing.clear()  # a snapshot
        assert len(fake.billing) == 2
        fake.reset()
        assert fake.billing == [] and fake.billed_total() == 0
