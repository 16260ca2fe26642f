"""The generation endpoints: ``/chat-messages``, ``/completion-messages``, ``/workflows/run`` and
``/workflows/{workflow_id}/run`` (a pinned version).

Dify's order of checks (auth, payload, route vs mode, version, conversation), then faults and
limits, then the answer: a blocking reply after the latency, or a stream whose frames share it.
Work done is billed on the exchange, whatever happens to the answer afterwards.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from airflow_dify.testing import sse
from airflow_dify.testing.answers import html_page, message_body, workflow_body
from airflow_dify.testing.apps import CHAT_MODES, GENERATION_PATHS, ROUTE_MODES, FakeApp
from airflow_dify.testing.auth import authenticate
from airflow_dify.testing.conversations import message_item
from airflow_dify.testing.exchange import Frame, Reply, Request, Reset, Stream
from airflow_dify.testing.faults import EARLY_KINDS, STREAM_KINDS, Fault
from airflow_dify.testing.files import check_file_inputs
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
from airflow_dify.testing.runs import WorkflowRun, run_workflow
from airflow_dify.testing.state import Bill, Exchange, FakeState

WORKFLOW_PATH = "/workflows/run"
_PINNED_PATH = re.compile(r"/workflows/([^/]+)/run")
_WORKFLOW_MODES = ("workflow", "advanced-chat")
PLAN_MESSAGE = (
    "Workflow version execution is not available on your current plan. Please upgrade to a paid plan."
)
DEFAULT_STALL = 5.0
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_BAD_JSON = object()


def generation_route(path: str) -> tuple[str, str | None] | None:
    """(the generation path ``path`` is served, counted and faulted as; the workflow version it
    pins), or None for other paths. A pinned run is a ``/workflows/run`` in every way but its path."""
    if path in GENERATION_PATHS:
        return path, None
    match = _PINNED_PATH.fullmatch(path)
    return (WORKFLOW_PATH, unquote(match.group(1))) if match else None


@dataclass(frozen=True)
class Call:
    """A validated generation request; ``conversation_id`` is as sent, checked against the state
    later; ``workflow_id`` is the version that runs (workflow and chatflow apps)."""

    inputs: dict[str, Any]
    query: str | None
    streaming: bool
    conversation_id: Any
    user: str
    workflow_id: str | None


@dataclass(frozen=True)
class Job:
    """An admitted generation request: what to answer, and how long it takes."""

    app: FakeApp
    call: Call
    conversation_id: str | None
    latency: float
    stall: float
    fault: Fault | None


def generate(
    state: FakeState, request: Request, ex: Exchange, route: str, pinned: str | None = None
) -> Reply:
    """Serve a POST to ``ex.path``, a generation path served as ``route`` (see
    :func:`generation_route`); refusals are raised as :class:`Reject`."""
    numbers = state.arrive(route)
    ex.auth, ex.app = authenticate(state, request.header("authorization"))
    ex.trace_id = request.header("x-trace-id")
    app = ex.app
    body = _parse_json(request.body)
    ex.body = None if body is _BAD_JSON else body
    call = validate(app, route, body, pinned)
    check_file_inputs(state, app, call.user, call.inputs)
    conversation_id = _conversation(state, app, call.conversation_id)
    fault = state.faults.match(route, call.streaming, numbers)
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


def validate(app: FakeApp, path: str, body: Any, pinned: str | None = None) -> Call:
    """Dify's checks in Dify's order: user (token wrapper), route vs mode, the payload, then the
    version (``pinned`` by the path, or a chatflow's ``workflow_id``)."""
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
    if app.mode == "advanced-chat":
        pinned = body.get("workflow_id") or None
        if pinned is not None and not isinstance(pinned, str):
            raise Reject(400, "invalid_param", "workflow_id must be a string")
    version = published_version(app, pinned) if app.mode in _WORKFLOW_MODES else None
    return Call(inputs, query, mode == "streaming", body.get("conversation_id"), str(body["user"]), version)


def published_version(app: FakeApp, pinned: str | None) -> str:
    """The workflow version a run uses. Like Dify, the plan is checked before the id."""
    if pinned is None:
        return app.workflow_id
    if not app.pinned_runs:
        raise Reject(403, "workflow_version_execution_not_allowed", PLAN_MESSAGE)
    try:
        wanted = uuid.UUID(pinned)
    except ValueError:
        raise Reject(400, "bad_request", f"Invalid workflow_id format: '{pinned}'") from None
    for version in app.published():
        if uuid.UUID(version) == wanted:
            return version
    raise Reject(404, "not_found", f"Workflow not found with id: {pinned}")


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


def _workflow_run(state: FakeState, job: Job) -> WorkflowRun:
    status, error = "succeeded", None
    if job.fault is not None and job.fault.kind == "workflow_status":
        status = job.fault.status_text
        if status == "failed":
            error = job.fault.message or "Node LLM run failed: [fake] injected failure"
    call = job.call
    version = call.workflow_id or job.app.workflow_id
    run = run_workflow(job.app, call.inputs, job.latency, version, status, error)
    state.store_run(job.app.id, run.data, call.inputs)
    return run


def _bill(
    ex: Exchange,
    call: Call,
    usages: Sequence[dict[str, Any]],
    message_id: str | None = None,
    run_id: str | None = None,
) -> Bill | None:
    """The billing entry for the usage reports of the work done; None when none was done."""
    if not usages:
        return None
    tokens = sum(int(usage["total_tokens"]) for usage in usages)
    price = sum((Decimal(usage["total_price"]) for usage in usages), Decimal(0))
    currency = usages[0]["currency"]
    return Bill(0, ex.path, call.user, call.workflow_id, message_id, run_id, tokens, price, currency)


def _blocking(state: FakeState, ex: Exchange, job: Job) -> Reply:
    app, call = job.app, job.call
    if app.mode == "workflow":
        run = _workflow_run(state, job)
        body = workflow_body(run.data)
        ex.bill = _bill(ex, call, run.usages(), run_id=run.data["id"])
    else:
        body = message_body(app, call.query, call.inputs, job.latency, job.conversation_id)
        ex.bill = _bill(ex, call, [body["metadata"]["usage"]], message_id=body["message_id"])
        item = message_item(body, call.query, call.inputs, job.conversation_id)
        state.store_message(body["message_id"], app.id, call.user, job.conversation_id, item)
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


def _folded(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A message stream as one body: the answer chunks joined, the end event's metadata."""
    answer = "".join(e.get("answer") or "" for e in events if e.get("event") in ("message", "agent_message"))
    end = next((e for e in events if e.get("event") == "message_end"), {})
    first = next((e for e in events if "message_id" in e), {})
    return {
        "message_id": first.get("message_id"),
        "answer": answer,
        "metadata": end.get("metadata") or {},
        "created_at": first.get("created_at"),
    }


def _stream(state: FakeState, ex: Exchange, job: Job) -> Reply:
    """The events share the latency evenly; a stall delays the head."""
    app, call = job.app, job.call
    run = _workflow_run(state, job) if app.mode == "workflow" else None
    if run is not None:
        events = sse.workflow_events(run)
    else:
        events = sse.message_events(
            app, call.query, call.inputs, job.latency, job.conversation_id, call.workflow_id
        )
    message_id = next((e["message_id"] for e in events if "message_id" in e), None)
    if message_id is not None:  # Dify stores the message when the run starts, whatever follows
        item = message_item(_folded(events), call.query, call.inputs, job.conversation_id)
        state.store_message(message_id, app.id, call.user, job.conversation_id, item)
    sent, fault = events, job.fault
    if fault is not None and fault.kind in STREAM_KINDS:
        tail = [] if fault.kind == "stream_break" else [_stream_error(events[0].get("task_id"), fault)]
        sent = events[: max(1, len(events) // 2)] + tail
    # A broken stream's run went on to the end; an error ended it: only what it reported was done.
    done = sent if fault is not None and fault.kind == "stream_error" else events
    ex.bill = _stream_bill(ex, call, run, done)
    ex.status = 200
    step = job.latency / max(1, len(sent))
    frames = (Frame(0.0, sse.PING), *(Frame(step, sse.frame(event)) for event in sent))
    return Reply(Stream(200, frames, SSE_HEADERS), job.stall, ex)


def _stream_bill(
    ex: Exchange, call: Call, run: WorkflowRun | None, events: list[dict[str, Any]]
) -> Bill | None:
    """A workflow's LLM nodes finished in ``events``; a message's usage, once its ``message_end`` is in."""
    if run is not None:
        finished = {e["data"]["node_id"] for e in events if e["event"] == "node_finished"}
        return _bill(ex, call, run.usages(finished), run_id=run.data["id"])
    end = next((e for e in events if e["event"] == "message_end"), None)
    if end is None:
        return None
    run_id = events[0].get("workflow_run_id")  # a chatflow's workflow_started
    return _bill(ex, call, [end["metadata"]["usage"]], message_id=end["message_id"], run_id=run_id)


def _stream_error(task_id: str | None, fault: Fault) -> dict[str, Any]:
    status = fault.status or 500
    code = fault.code or ("internal_server_error" if status >= 500 else "completion_request_error")
    message = fault.message or "Internal Server Error, please contact support."
    return sse.error_event(task_id, status, code, message)
