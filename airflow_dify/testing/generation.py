"""The generation endpoints: ``/chat-messages``, ``/completion-messages`` and ``/workflows/run``.

Dify's order of checks (auth, payload, route vs mode, conversation), then faults and limits,
then the answer: a blocking reply after the latency, or a stream whose frames share it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from airflow_dify.testing import sse
from airflow_dify.testing.answers import html_page, message_body, workflow_body, workflow_data
from airflow_dify.testing.apps import CHAT_MODES, ROUTE_MODES, FakeApp
from airflow_dify.testing.auth import authenticate
from airflow_dify.testing.exchange import Frame, Reply, Request, Reset, Stream
from airflow_dify.testing.faults import EARLY_KINDS, Fault
from airflow_dify.testing.replies import (
    DEFAULT_MESSAGES,
    HTML,
    JSON,
    ROUTE_MESSAGES,
    STATUS_CODES,
    Reject,
    error_reply,
    json_reply,
    raw_reply,
)
from airflow_dify.testing.state import Exchange, FakeState

DEFAULT_STALL = 5.0
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_BAD_JSON = object()


@dataclass(frozen=True)
class Call:
    """A validated generation request; ``conversation_id`` is as sent, checked against the state later."""

    inputs: dict[str, Any]
    query: str | None
    streaming: bool
    conversation_id: Any


@dataclass(frozen=True)
class Job:
    """An admitted generation request: what to answer, and how long it takes."""

    app: FakeApp
    call: Call
    conversation_id: str | None
    latency: float
    stall: float
    fault: Fault | None


def generate(state: FakeState, request: Request, ex: Exchange) -> Reply:
    """Serve a POST to a generation path (``ex.path``); refusals are raised as :class:`Reject`."""
    numbers = state.arrive(ex.path)
    ex.auth, ex.app = authenticate(state, request.header("authorization"))
    app = ex.app
    body = _parse_json(request.body)
    ex.body = None if body is _BAD_JSON else body
    call = validate(app, ex.path, body)
    conversation_id = _conversation(state, app, call.conversation_id)
    fault = state.faults.match(ex.path, call.streaming, numbers)
    if fault is not None:
        ex.fault = fault.kind
        if fault.kind in EARLY_KINDS:
            return early_fault(ex, fault)
    refused = state.limits.admit(app.id)
    if refused is not None:
        ex.fault = None  # the limit answered first; the fault did not take effect
        raise Reject(429, "too_many_requests", refused)
    ex.hold_slot(app.id, until_close=call.streaming)
    stall = 0.0
    if fault is not None and fault.kind == "stall":
        stall = fault.delay if fault.delay is not None else DEFAULT_STALL
    job = Job(app, call, conversation_id, state.latency_for(ex.body), stall, fault)
    return _stream(state, ex, job) if call.streaming else _blocking(state, ex, job)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _BAD_JSON


def validate(app: FakeApp, path: str, body: Any) -> Call:
    """Dify's checks in Dify's order: user (token wrapper), route vs mode, then the payload."""
    if not isinstance(body, dict):
        raise Reject(
            400, "bad_request", "The browser (or proxy) sent a request that this server could not understand."
        )
    if not body.get("user"):
        raise Reject(400, "invalid_param", "Arg user must be provided.")
    modes, code = ROUTE_MODES[path]
    if app.mode not in modes:
        raise Reject(400, code, ROUTE_MESSAGES[code])
    inputs = body.get("inputs")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise Reject(400, "invalid_param", "inputs must be a dict")
    query = body.get("query")
    if path == "/chat-messages" and (not isinstance(query, str) or not query.strip()):
        raise Reject(400, "invalid_param", "query is required")
    if query is not None and not isinstance(query, str):
        raise Reject(400, "invalid_param", "query must be a string")
    mode = body.get("response_mode") or "blocking"
    if mode not in ("blocking", "streaming"):
        raise Reject(400, "invalid_param", "response_mode must be 'blocking' or 'streaming'")
    for spec in app.form():
        if spec["required"] and inputs.get(spec["variable"]) in (None, ""):
            raise Reject(400, "invalid_param", f"{spec['variable']} is required in input form")
    if app.mode == "agent-chat" and mode == "blocking":
        raise Reject(400, "invalid_param", "Agent Chat App does not support blocking mode")
    return Call(inputs, query, mode == "streaming", body.get("conversation_id"))


def _conversation(state: FakeState, app: FakeApp, given: Any) -> str | None:
    if app.mode not in CHAT_MODES:
        return None
    if not given:
        return state.new_conversation(app.id)
    try:
        uuid.UUID(str(given))
    except ValueError:
        raise Reject(400, "invalid_param", "conversation_id must be a valid UUID") from None
    if not state.has_conversation(app.id, str(given)):
        raise Reject(404, "not_found", "Conversation Not Exists.")
    return str(given)


def early_fault(ex: Exchange, fault: Fault) -> Reply:
    """Faults answered before any work: nothing is admitted or billed."""
    kind = fault.kind
    if kind == "reset":
        ex.status = 0
        return Reply(Reset(), 0.0, ex)
    if kind == "html":
        status = fault.status or 502
        return raw_reply(ex, status, html_page(status), HTML)
    if kind == "retry_after":
        status = fault.status or 429
        code = fault.code or "too_many_requests"
        retry = {"Retry-After": _seconds(fault.retry_after)}
        return error_reply(ex, status, code, fault.message or DEFAULT_MESSAGES[429], headers=retry)
    status = fault.status or 500  # "status"
    code = fault.code or STATUS_CODES.get(status, "internal_server_error")
    message = fault.message or DEFAULT_MESSAGES.get(status, f"Injected fault {code}.")
    headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after is not None else None
    return error_reply(ex, status, code, message, headers=headers)


def _seconds(value: float | None) -> str:
    return str(max(0, round(value if value is not None else 1)))


def _workflow_run(state: FakeState, job: Job) -> dict[str, Any]:
    status, error = "succeeded", None
    if job.fault is not None and job.fault.kind == "workflow_status":
        status = job.fault.status_text
        if status == "failed":
            error = job.fault.message or "Node LLM run failed: [fake] injected failure"
    data = workflow_data(job.app, job.call.inputs, job.latency, status, error)
    state.store_run(job.app.id, data, job.call.inputs)
    return data


def _blocking(state: FakeState, ex: Exchange, job: Job) -> Reply:
    app, call = job.app, job.call
    if app.mode == "workflow":
        body = workflow_body(_workflow_run(state, job))
    else:
        body = message_body(app, call.query, call.inputs, job.latency, job.conversation_id)
    fault = job.fault
    kind = fault.kind if fault is not None else None
    if fault is not None and kind == "answer" and app.mode != "workflow":
        body["answer"] = fault.message or ""  # what the model said, e.g. with a NUL byte in it
    ex.response = body  # billed even when the answer is spoiled on the way
    delay = job.stall + job.latency
    if fault is not None and kind == "billed_504":
        # The work is done and billed, but the gateway gives up.
        status = fault.status or 504
        return raw_reply(ex, status, html_page(status), HTML, delay=delay)
    if kind == "truncated":
        data = json.dumps(body).encode()
        return raw_reply(ex, 200, data[: len(data) // 2], JSON, delay=delay)
    if kind == "malformed":
        return raw_reply(ex, 200, b"upstream returned something that is not JSON", JSON, delay=delay)
    return json_reply(ex, 200, body, delay=delay)


def _stream(state: FakeState, ex: Exchange, job: Job) -> Reply:
    """The events share the latency evenly; a stall delays the head."""
    app, call = job.app, job.call
    if app.mode == "workflow":
        events = sse.workflow_events(app, call.inputs, _workflow_run(state, job))
    else:
        events = sse.message_events(app, call.query, call.inputs, job.latency, job.conversation_id)
    fault = job.fault
    if fault is not None and fault.kind in ("stream_break", "stream_error"):
        tail = [] if fault.kind == "stream_break" else [_stream_error(events[0].get("task_id"), fault)]
        events = events[: max(1, len(events) // 2)] + tail
    ex.status = 200
    step = job.latency / max(1, len(events))
    frames = (Frame(0.0, sse.PING), *(Frame(step, sse.frame(event)) for event in events))
    return Reply(Stream(200, frames, SSE_HEADERS), job.stall, ex)


def _stream_error(task_id: str | None, fault: Fault) -> dict[str, Any]:
    status = fault.status or 500
    code = fault.code or ("internal_server_error" if status >= 500 else "completion_request_error")
    message = fault.message or "Internal Server Error, please contact support."
    return sse.error_event(task_id, status, code, message)
