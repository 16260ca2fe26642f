"""Workflow runs of FakeDify: scripted outputs and answers, per-node usage, pinned versions."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
import requests

from airflow_dify.testing import FakeApp, FakeDify, Fault, make_usage, prompt_text
from airflow_dify.testing.runs import NodeRun, output_text
from airflow_dify.testing.state import FakeState

from .fakedify_helpers import bearer, call, decoded, events, parse_sse, served, validate

V2, V3 = str(uuid.uuid4()), str(uuid.uuid4())
RUN = {"inputs": {"city": "Oslo"}, "user": "u"}
STREAMING = {**RUN, "response_mode": "streaming"}


def workflow_state(**app: Any) -> FakeState:
    return FakeState(apps=[FakeApp(mode="workflow", **app)])


def llm_finished(stream_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e["data"] for e in stream_events if e["event"] == "node_finished" and e["data"]["node_type"] == "llm"
    ]


def test_scripted_outputs_blocking_and_streamed() -> None:
    outputs = {"category": "travel", "score": {"value": 3, "why": "fjord"}}
    state = workflow_state(outputs=lambda inputs: {**outputs, "city": inputs["city"]})
    data = decoded(call(state, "/workflows/run", RUN, mode="workflow"))["data"]
    assert data["outputs"] == {**outputs, "city": "Oslo"}
    streamed = events(call(state, "/workflows/run", STREAMING, mode="workflow"))
    assert streamed[-1]["data"]["outputs"] == data["outputs"]
    # The LLM nodes wrote the outputs' text: their usage is computed on it, half each.
    text = output_text(data["outputs"])
    assert text == 'travel\n{"value": 3, "why": "fjord"}\nOslo'
    nodes = llm_finished(streamed)
    assert "".join(node["outputs"]["text"] for node in nodes) == text
    prompt = prompt_text(None, RUN["inputs"])
    for node in nodes:
        usage = make_usage(prompt, node["outputs"]["text"], 0.0)
        assert node["outputs"]["usage"] == {
            k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
        assert node["execution_metadata"]["total_tokens"] == usage["total_tokens"]
        assert Decimal(str(node["execution_metadata"]["total_price"])) == Decimal(usage["total_price"])


def test_scripted_outputs_must_be_a_dict() -> None:
    state = workflow_state(outputs=lambda inputs: "not a dict")
    reply = served(call(state, "/workflows/run", RUN, mode="workflow"))
    assert decoded(reply)["message"] == "FakeDify bug"


@pytest.mark.parametrize(
    ("mode", "path", "body"),
    [
        ("chat", "/chat-messages", {"query": "Classify: tea", "inputs": {"lang": "en"}}),
        ("completion", "/completion-messages", {"query": "Classify: tea", "inputs": {"lang": "en"}}),
        ("advanced-chat", "/chat-messages", {"query": "Classify: tea", "inputs": {"lang": "en"}}),
    ],
)
def test_scripted_answer_and_its_usage(mode: str, path: str, body: dict[str, Any]) -> None:
    def answer(query: str | None, inputs: dict[str, Any]) -> str:
        return json.dumps({"label": "drink", "query": query, "lang": inputs["lang"]})

    state = FakeState(apps=[FakeApp(mode=mode, answer=answer)], latency=0.25)
    expected = answer(body["query"], body["inputs"])
    usage = make_usage(prompt_text(body["query"], body["inputs"]), expected, 0.25)
    blocking = decoded(call(state, path, {**body, "user": "u"}, mode=mode))
    assert blocking["answer"] == expected and blocking["metadata"]["usage"] == usage
    streamed = events(call(state, path, {**body, "user": "u", "response_mode": "streaming"}, mode=mode))
    assert "".join(e["answer"] for e in streamed if e["event"] == "message") == expected
    assert next(e for e in streamed if e["event"] == "message_end")["metadata"]["usage"] == usage


def test_agent_chat_streams_its_scripted_answer() -> None:
    state = FakeState(apps=[FakeApp(mode="agent-chat", answer=lambda q, i: "planned")])
    streamed = events(
        call(state, "/chat-messages", {"query": "q", "user": "u", "response_mode": "streaming"}, "agent-chat")
    )
    assert "".join(e["answer"] for e in streamed if e["event"] == "agent_message") == "planned"


def test_stream_has_four_nodes_and_their_usage_sums_to_the_run() -> None:
    state = workflow_state()
    streamed = events(call(state, "/workflows/run", STREAMING, mode="workflow"))
    finished = [e["data"] for e in streamed if e["event"] == "node_finished"]
    assert [n["node_id"] for n in finished] == ["start", "llm_draft", "llm_final", "end"]
    assert [n["predecessor_node_id"] for n in finished] == [None, "start", "llm_draft", "llm_final"]
    for event in streamed:
        if event["event"] == "node_finished":
            validate(event, "WorkflowStreamEventNodeFinished")
    assert finished[0]["execution_metadata"] is None and finished[-1]["execution_metadata"] is None
    metadata = [n["execution_metadata"] for n in llm_finished(streamed)]
    assert all(m["currency"] == "USD" and isinstance(m["total_price"], float) for m in metadata)
    run = streamed[-1]["data"]
    assert run["total_tokens"] == sum(m["total_tokens"] for m in metadata)
    assert run["total_steps"] == 4 and run["outputs"] == {"result": "city=Oslo"}
    # The blocking run of the same inputs costs the same, and (like Dify) shows no price.
    blocking = decoded(call(state, "/workflows/run", RUN, mode="workflow"))["data"]
    assert blocking["total_tokens"] == run["total_tokens"]
    assert "price" not in json.dumps(blocking)


def test_streamed_prices_are_exact_as_json_numbers() -> None:
    for size in range(0, 3000, 7):
        usage = make_usage("p" * (size * 13), "a" * (size * 29), 0.0)
        node = NodeRun("id", "llm", "llm", "LLM", "succeeded", {}, 0.0, usage=usage)
        price = json.loads(json.dumps(node.execution_metadata()))["total_price"]
        assert Decimal(str(price)) == Decimal(usage["total_price"]), usage["total_price"]


def test_failed_run_stops_in_the_final_node_and_paused_after_the_draft() -> None:
    state = workflow_state()
    state.faults.add(Fault("workflow_status", status_text="failed", times=2))
    state.faults.add(Fault("workflow_status", status_text="paused", times=1))
    blocking = decoded(call(state, "/workflows/run", RUN, mode="workflow"))["data"]
    streamed = events(call(state, "/workflows/run", STREAMING, mode="workflow"))
    draft, final = llm_finished(streamed)
    assert (draft["status"], final["status"]) == ("succeeded", "failed")
    assert final["execution_metadata"] is None and final["error"] == blocking["error"]
    assert (
        blocking["total_tokens"]
        == draft["execution_metadata"]["total_tokens"]
        == streamed[-1]["data"]["total_tokens"]
    )
    paused = events(call(state, "/workflows/run", STREAMING, mode="workflow"))
    assert [n["node_id"] for n in llm_finished(paused)] == ["llm_draft"]
    assert paused[-1]["data"]["status"] == "paused"


def test_pinned_workflow_run_blocking_streamed_and_looked_up() -> None:
    app = FakeApp(mode="workflow", versions=[V2, V3])
    with FakeDify(apps=[app]) as fake, requests.Session() as http:
        fake.faults.add(Fault("status", path="/workflows/run", on=[3], status=503))
        url = f"{fake.url}/workflows/{V2}/run"
        blocking = http.post(url, json=RUN, headers=bearer(app.key), timeout=10).json()
        assert blocking["data"]["workflow_id"] == V2
        _, streamed = parse_sse(http.post(url, json=STREAMING, headers=bearer(app.key), timeout=10).text)
        assert streamed[0]["data"]["workflow_id"] == streamed[-1]["data"]["workflow_id"] == V2
        assert http.post(url, json=RUN, headers=bearer(app.key), timeout=10).status_code == 503
        default = http.post(f"{fake.url}/workflows/run", json=RUN, headers=bearer(app.key), timeout=10).json()
        assert default["data"]["workflow_id"] == app.workflow_id
        run_id = blocking["workflow_run_id"]
        detail = http.get(f"{fake.url}/workflows/run/{run_id}", headers=bearer(app.key), timeout=10).json()
        assert detail["workflow_id"] == V2
        assert http.get(url, headers=bearer(app.key), timeout=10).status_code == 405
        # Counted and faulted as /workflows/run; recorded (and billed) under the path called.
        assert fake.calls("/workflows/run") == fake.calls() == 4
        assert [r.path for r in fake.requests][:4] == [f"/workflows/{V2}/run"] * 3 + ["/workflows/run"]
        assert [(b.path, b.workflow_id) for b in fake.billing] == [
            (f"/workflows/{V2}/run", V2),
            (f"/workflows/{V2}/run", V2),
            ("/workflows/run", app.workflow_id),
        ]


def test_pinned_chatflow_run() -> None:
    state = FakeState(apps=[FakeApp(mode="advanced-chat", versions=[V2])])
    body = {"query": "q", "user": "u", "workflow_id": V2, "response_mode": "streaming"}
    streamed = events(served(call(state, "/chat-messages", body, mode="advanced-chat")))
    assert streamed[0]["data"]["workflow_id"] == streamed[-1]["data"]["workflow_id"] == V2
    end = next(e for e in streamed if e["event"] == "message_end")
    assert streamed[-1]["data"]["total_tokens"] == end["metadata"]["usage"]["total_tokens"]
    [bill] = state.bills()
    assert (bill.workflow_id, bill.workflow_run_id, bill.message_id) == (
        V2,
        streamed[0]["workflow_run_id"],
        end["message_id"],
    )
    blocking = served(
        call(
            state, "/chat-messages", {**body, "response_mode": "blocking", "workflow_id": ""}, "advanced-chat"
        )
    )
    assert (
        decoded(blocking)["answer"] == "Answer: q"
        and state.bills()[-1].workflow_id == state.app("advanced-chat").workflow_id
    )


UNKNOWN = str(uuid.uuid4())
PIN_ERRORS = [
    ({}, "not-a-uuid", 400, "bad_request", "Invalid workflow_id format: 'not-a-uuid'"),
    ({}, UNKNOWN, 404, "not_found", f"Workflow not found with id: {UNKNOWN}"),
    (
        {"pinned_runs": False},
        V2,
        403,
        "workflow_version_execution_not_allowed",
        "Workflow version execution is not available on your current plan. Please upgrade to a paid plan.",
    ),
    ({"pinned_runs": False}, "not-a-uuid", 403, "workflow_version_execution_not_allowed", None),
]


@pytest.mark.parametrize(("app", "pinned", "status", "code", "message"), PIN_ERRORS)
@pytest.mark.parametrize("mode", ["workflow", "advanced-chat"])
def test_pinning_errors(
    mode: str, app: dict, pinned: str, status: int, code: str, message: str | None
) -> None:
    state = FakeState(apps=[FakeApp(mode=mode, versions=[V2], **app)])
    if mode == "workflow":
        reply = call(state, f"/workflows/{pinned}/run", RUN, mode=mode)
    else:
        reply = call(state, "/chat-messages", {"query": "q", "user": "u", "workflow_id": pinned}, mode=mode)
    body = decoded(served(reply))
    assert (body["status"], body["code"]) == (status, code)
    if message is not None:
        assert body["message"] == message
    assert state.bills() == [] and state.calls() == 1


def test_pinned_path_checks_the_route_and_versions_are_uuids() -> None:
    state = FakeState()
    refused = decoded(call(state, f"/workflows/{V2}/run", {"inputs": {}, "user": "u"}, mode="chat"))
    assert refused["code"] == "not_workflow_app"
    run = decoded(call(state, "/workflows/run", RUN, mode="workflow"))
    lookup = decoded(call(state, f"/workflows/run/{run['workflow_run_id']}", mode="workflow", method="GET"))
    assert lookup["id"] == run["workflow_run_id"]
    assert decoded(call(state, "/workflows/run/run", RUN, mode="workflow"))["code"] == "bad_request"
    with pytest.raises(ValueError, match="UUID"):
        FakeApp(mode="workflow", versions=["v2"])
