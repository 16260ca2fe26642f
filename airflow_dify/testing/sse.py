"""Server-sent event sequences shaped like Dify's streaming responses."""

from __future__ import annotations

import json
import time
from typing import Any

from airflow_dify.testing.answers import (
    answer_text,
    make_usage,
    new_id,
    prompt_text,
    workflow_data,
)
from airflow_dify.testing.apps import FakeApp

PING = b"event: ping\n\n"


def frame(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def chunks(text: str, parts: int = 4) -> list[str]:
    """Split an answer into a few pieces; their concatenation is the answer exactly."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _node(
    run_id: str, task_id: str, event: str, node_id: str, node_type: str, index: int, **extra: Any
) -> dict[str, Any]:
    data = {
        "id": f"{run_id[:8]}-{node_id}",
        "node_id": node_id,
        "node_type": node_type,
        "title": node_type.upper(),
        "index": index,
        "predecessor_node_id": None,
        "inputs": None,
        "created_at": int(time.time()),
        **extra,
    }
    return {"event": event, "task_id": task_id, "workflow_run_id": run_id, "data": data}


def _workflow_frame(run_id: str, task_id: str, wf_data: dict[str, Any], inputs: dict) -> list[dict]:
    started = {
        "event": "workflow_started",
        "task_id": task_id,
        "workflow_run_id": run_id,
        "data": {
            "id": run_id,
            "workflow_id": wf_data["workflow_id"],
            "inputs": inputs,
            "created_at": wf_data["created_at"],
        },
    }
    return [started, _node(run_id, task_id, "node_started", "start", "start", 1)]


def message_events(
    app: FakeApp, query: str | None, inputs: dict, latency: float, conversation_id: str | None
) -> list[dict[str, Any]]:
    """chat / completion / agent-chat / advanced-chat streams, ending with ``message_end``
    (advanced-chat: then ``workflow_finished``)."""
    task_id, message_id, now = new_id(), new_id(), int(time.time())
    answer = answer_text(query, inputs)
    usage = make_usage(prompt_text(query, inputs), answer, latency)
    base: dict[str, Any] = {"task_id": task_id, "message_id": message_id}
    if conversation_id is not None:
        base["conversation_id"] = conversation_id
    events: list[dict[str, Any]] = []
    wf: dict[str, Any] | None = None
    if app.mode == "advanced-chat":
        wf = workflow_data(app, inputs, latency)
        events += _workflow_frame(wf["id"], task_id, wf, inputs)
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
        "metadata": {"usage": usage, "retriever_resources": []},
    }
    if app.mode == "completion":
        end["files"] = None
    events.append(end)
    if wf is not None:
        wf["outputs"] = {"answer": answer}
        events.append(
            {"event": "workflow_finished", "task_id": task_id, "workflow_run_id": wf["id"], "data": wf}
        )
    return events


def workflow_events(app: FakeApp, inputs: dict, wf_data: dict[str, Any]) -> list[dict[str, Any]]:
    """A workflow stream around an already computed run ``wf_data`` (ends with ``workflow_finished``)."""
    task_id, run_id = new_id(), wf_data["id"]
    events = _workflow_frame(run_id, task_id, wf_data, inputs)
    events.append(
        _node(
            run_id,
            task_id,
            "node_finished",
            "start",
            "start",
            1,
            status="succeeded",
            outputs=inputs,
            error=None,
            elapsed_time=0.0,
            execution_metadata=None,
        )
    )
    events.append(_node(run_id, task_id, "node_started", "llm", "llm", 2))
    ok = wf_data["status"] in ("succeeded", "partial-succeeded")
    result = wf_data["outputs"].get("result", "") if ok else ""
    metadata = {"total_tokens": wf_data["total_tokens"], "total_price": 0.0, "currency": "USD"}
    events.append(
        _node(
            run_id,
            task_id,
            "node_finished",
            "llm",
            "llm",
            2,
            status="succeeded" if ok else "failed",
            outputs={"text": result},
            error=wf_data["error"],
            elapsed_time=wf_data["elapsed_time"],
            execution_metadata=metadata,
        )
    )
    if ok:
        events += [
            {
                "event": "text_chunk",
                "task_id": task_id,
                "workflow_run_id": run_id,
                "data": {"text": part, "from_variable_selector": ["llm", "text"]},
            }
            for part in chunks(result)
        ]
    events.append(
        {"event": "workflow_finished", "task_id": task_id, "workflow_run_id": run_id, "data": wf_data}
    )
    return events


def error_event(task_id: str | None, status: int, code: str, message: str) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "error", "status": status, "code": code, "message": message}
    if task_id:
        event = {"event": "error", "task_id": task_id, "message_id": new_id(), **event}
    return event
