"""Server-sent event sequences shaped like Dify's streaming responses."""

from __future__ import annotations

import json
import time
from typing import Any

from airflow_dify.testing.answers import app_answer, app_citations, make_usage, new_id, prompt_text
from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.runs import NodeRun, WorkflowRun, run_data, start_node

PING = b"event: ping\n\n"


def frame(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def chunks(text: str, parts: int = 4) -> list[str]:
    """Split an answer into a few pieces; their concatenation is the answer exactly."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _node_event(
    event: str, node: NodeRun, position: int, previous: str | None, run_id: str, task_id: str, created: int
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": node.id,
        "node_id": node.node_id,
        "node_type": node.node_type,
        "title": node.title,
        "index": position,
        "predecessor_node_id": previous,
        "inputs": None,
        "created_at": created,
    }
    if event == "node_finished":
        data.update(
            status=node.status,
            outputs=node.outputs,
            error=node.error,
            elapsed_time=node.elapsed_time,
            execution_metadata=node.execution_metadata(),
            finished_at=created + int(node.elapsed_time),
        )
    return {"event": event, "task_id": task_id, "workflow_run_id": run_id, "data": data}


def _run_started(run_id: str, task_id: str, workflow_id: str, inputs: dict, created: int) -> dict[str, Any]:
    data = {"id": run_id, "workflow_id": workflow_id, "inputs": inputs, "created_at": created}
    return {"event": "workflow_started", "task_id": task_id, "workflow_run_id": run_id, "data": data}


def _run_finished(task_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event": "workflow_finished", "task_id": task_id, "workflow_run_id": data["id"], "data": data}


def message_events(
    app: FakeApp,
    query: str | None,
    inputs: dict,
    latency: float,
    conversation_id: str | None,
    workflow_id: str | None = None,
) -> list[dict[str, Any]]:
    """chat / completion / agent-chat / advanced-chat streams, ending with ``message_end``
    (advanced-chat, running version ``workflow_id``: then ``workflow_finished``)."""
    task_id, message_id, now = new_id(), new_id(), int(time.time())
    answer = app_answer(app, query, inputs)
    usage = make_usage(prompt_text(query, inputs), answer, latency)
    base: dict[str, Any] = {"task_id": task_id, "message_id": message_id}
    if conversation_id is not None:
        base["conversation_id"] = conversation_id
    events: list[dict[str, Any]] = []
    wf: dict[str, Any] | None = None
    if app.mode == "advanced-chat":
        # A chatflow's run costs what its message reports.
        wf = run_data(
            workflow_id or app.workflow_id, "succeeded", {"answer": answer}, usage["total_tokens"], 3, latency
        )
        events.append(_run_started(wf["id"], task_id, wf["workflow_id"], inputs, wf["created_at"]))
        events.append(_node_event("node_started", start_node(inputs), 1, None, wf["id"], task_id, now))
    if app.mode == "agent-chat":
        thought = {
            "event": "agent_thought",
            "id": new_id(),
            **base,
            "position": 1,
            "thought": "",
            "observation": "",
            "tool": "",
            "tool_input": "",
            "message_files": [],
            "created_at": now,
        }
        events.append(thought)
    kind = "agent_message" if app.mode == "agent-chat" else "message"
    events += [
        {"event": kind, **base, "id": message_id, "answer": part, "created_at": now}
        for part in chunks(answer)
    ]
    end = {
        "event": "message_end",
        **base,
        "id": message_id,
        "metadata": {"usage": usage, "retriever_resources": app_citations(app, query, inputs)},
    }
    if app.mode == "completion":
        end["files"] = None
    events.append(end)
    if wf is not None:
        events.append(_run_finished(task_id, wf))
    return events


def workflow_events(run: WorkflowRun) -> list[dict[str, Any]]:
    """A workflow stream of an already computed run: each node's ``node_started``, its text as
    ``text_chunk`` events (LLM nodes) and its ``node_finished``; then ``workflow_finished``."""
    task_id, run_id, created = new_id(), run.data["id"], run.data["created_at"]
    events = [_run_started(run_id, task_id, run.data["workflow_id"], run.inputs, created)]
    previous: str | None = None
    for position, node in enumerate(run.nodes, start=1):
        where = (position, previous, run_id, task_id, created)
        events.append(_node_event("node_started", node, *where))
        text = (node.outputs or {}).get("text") if node.node_type == "llm" else None
        if text:
            events += [
                {
                    "event": "text_chunk",
                    "task_id": task_id,
                    "workflow_run_id": run_id,
                    "data": {"text": part, "from_variable_selector": [node.node_id, "text"]},
                }
                for part in chunks(text, parts=2)
            ]
        events.append(_node_event("node_finished", node, *where))
        previous = node.node_id
    events.append(_run_finished(task_id, run.data))
    return events


def error_event(task_id: str | None, status: int, code: str, message: str) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "error", "status": status, "code": code, "message": message}
    if task_id:
        event = {"event": "error", "task_id": task_id, "message_id": new_id(), **event}
    return event
