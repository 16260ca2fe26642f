"""What FakeDify answers: routing, auth, validation, limits, faults and the generation endpoints.

The HTTP plumbing (framing, keep-alive, sockets) lives in :mod:`airflow_dify.testing.handler`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_dify.testing import answers, sse
from airflow_dify.testing.apps import CHAT_MODES, GENERATION_PATHS, ROUTE_MODES, FakeApp
from airflow_dify.testing.faults import EARLY_KINDS, TOKEN_PATH, Fault

if TYPE_CHECKING:
    from airflow_dify.testing.handler import FakeDifyHandler
    from airflow_dify.testing.server import FakeDify

_ROUTE_MESSAGES = {
    "not_chat_app": "Please check if your app mode matches the right API route.",
    "not_workflow_app": "Please check if your app mode matches the right API route.",
    "app_unavailable": "App unavailable, please check your app configurations.",
}
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    429: "too_many_requests",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_DEFAULT_MESSAGES = {
    500: "The server encountered an internal error and was unable to complete your request. Either the "
    "server is overloaded or there is an error in the application.",
    429: "Too many requests. Please try again later.",
}


class Reject(Exception):
    """A Dify error answer; raised anywhere in the pipeline, sent by :func:`serve_v1`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class Exchange:
    """One request's facts, filled in while it is served and recorded when it ends."""

    method: str
    path: str
    started: float
    body: Any = None
    auth: str = "none"
    app: FakeApp | None = None
    status: int = 0
    response: Any = None
    fault: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def authenticate(fake: FakeDify, header: str | None) -> tuple[str, FakeApp]:
    """Resolve ``Authorization`` like Dify's ``validate_and_get_api_token``; returns (auth kind, app)."""
    must = "Authorization header must be provided and start with 'Bearer'"
    if header is None:
        raise Reject(401, "unauthorized", must, {"WWW-Authenticate": 'Bearer realm="api"'})
    parts = header.split(None, 1)
    if " " not in header or len(parts) != 2:
        raise _Unauthorized("invalid", must)
    scheme, token = parts
    if scheme.lower() != "bearer":
        raise _Unauthorized("invalid", "Authorization scheme must be 'Bearer'")
    app = fake._app_for_key(token)
    kind = "key"
    if app is None:
        app = fake._app_for_token(token)
        kind = "token"
    if app is None:
        raise _Unauthorized("invalid", "Access token is invalid")
    if not app.api_enabled:
        raise _Forbidden(kind, app)
    return kind, app


class _Unauthorized(Reject):
    def __init__(self, auth: str, message: str) -> None:
        super().__init__(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="api"'})
        self.auth = auth


class _Forbidden(Reject):
    def __init__(self, auth: str, app: FakeApp) -> None:
        super().__init__(403, "forbidden", "The app's API service has been disabled.")
        self.auth, self.app = auth, app


def serve_v1(fake: FakeDify, h: FakeDifyHandler, ex: Exchange, raw: bytes) -> None:
    """Serve one ``/v1`` request (``ex.path`` has the prefix stripped); errors become Dify JSON."""
    try:
        _route(fake, h, ex, raw)
    except Reject as err:
        if isinstance(err, _Unauthorized):
            ex.auth = err.auth
        elif isinstance(err, _Forbidden):
            ex.auth, ex.app = err.auth, err.app
        ex.response = answers.error_body(err.status, err.code, err.message)
        ex.status = err.status
        h.send_json(err.status, ex.response, err.headers)


def not_found(h: FakeDifyHandler, ex: Exchange) -> None:
    ex.status, ex.response = 404, answers.error_body(404, "not_found", answers.NOT_FOUND_MESSAGE)
    h.send_json(404, ex.response)


def _route(fake: FakeDify, h: FakeDifyHandler, ex: Exchange, raw: bytes) -> None:
    path, method = ex.path, ex.method
    if path in GENERATION_PATHS:
        if method != "POST":
            raise Reject(405, "method_not_allowed", "The method is not allowed for the requested URL.")
        numbers = fake._arrive(path)
        _generate(fake, h, ex, raw, numbers)
        return
    if path in ("/info", "/parameters") or path.startswith("/workflows/run/"):
        if method != "GET":
            raise Reject(405, "method_not_allowed", "The method is not allowed for the requested URL.")
        ex.auth, ex.app = authenticate(fake, h.headers.get("Authorization"))
        if path == "/info":
            body = answers.info_body(ex.app)
        elif path == "/parameters":
            body = answers.parameters_body(ex.app)
        else:
            if ex.app.mode != "workflow":
                raise Reject(400, "not_workflow_app", _ROUTE_MESSAGES["not_workflow_app"])
            body = fake._get_run(ex.app.id, path.rsplit("/", 1)[1])
            if body is None:
                raise Reject(404, "not_found", "Workflow run not found.")
        ex.status, ex.response = 200, body
        h.send_json(200, body)
        return
    not_found(h, ex)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _BAD_JSON


_BAD_JSON = object()


def _validate(app: FakeApp, path: str, body: Any) -> dict[str, Any]:
    """Dify's checks in Dify's order: user (token wrapper), route vs mode, then the payload."""
    if body is _BAD_JSON or not isinstance(body, dict):
        raise Reject(
            400, "bad_request", "The browser (or proxy) sent a request that this server could not understand."
        )
    if not body.get("user"):
        raise Reject(400, "invalid_param", "Arg user must be provided.")
    modes, code = ROUTE_MODES[path]
    if app.mode not in modes:
        raise Reject(400, code, _ROUTE_MESSAGES[code])
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
    return {"inputs": inputs, "query": query, "streaming": mode == "streaming"}


def _conversation(fake: FakeDify, app: FakeApp, body: dict[str, Any]) -> str | None:
    if app.mode not in CHAT_MODES:
        return None
    given = body.get("conversation_id")
    if not given:
        return fake._new_conversation(app.id)
    try:
        uuid.UUID(str(given))
    except ValueError:
        raise Reject(400, "invalid_param", "conversation_id must be a valid UUID") from None
    if not fake._has_conversation(app.id, str(given)):
        raise Reject(404, "not_found", "Conversation Not Exists.")
    return str(given)


def _early_fault(h: FakeDifyHandler, ex: Exchange, fault: Fault) -> None:
    """Faults answered before any work: nothing is admitted or billed."""
    kind = fault.kind
    if kind == "reset":
        ex.status = 0
        h.reset_connection()
    elif kind == "html":
        ex.status = fault.status or 502
        h.send_bytes(ex.status, answers.html_page(ex.status), "text/html")
    elif kind == "retry_after":
        ex.status = fault.status or 429
        ex.response = answers.error_body(
            ex.status, fault.code or "too_many_requests", fault.message or _DEFAULT_MESSAGES[429]
        )
        h.send_json(ex.status, ex.response, {"Retry-After": _seconds(fault.retry_after)})
    else:  # "status"
        ex.status = status = fault.status or 500
        code = fault.code or _STATUS_CODES.get(status, "internal_server_error")
        message = fault.message or _DEFAULT_MESSAGES.get(status, f"Injected fault {code}.")
        ex.response = answers.error_body(status, code, message)
        headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after is not None else None
        h.send_json(status, ex.response, headers)


def _seconds(value: float | None) -> str:
    return str(max(0, round(value if value is not None else 1)))


def _generate(fake: FakeDify, h: FakeDifyHandler, ex: Exchange, raw: bytes, numbers: dict) -> None:
    ex.auth, ex.app = authenticate(fake, h.headers.get("Authorization"))
    ex.body = _parse_json(raw)
    if ex.body is _BAD_JSON:
        ex.body = None
        _validate(ex.app, ex.path, _BAD_JSON)
    req = _validate(ex.app, ex.path, ex.body)
    conversation_id = _conversation(fake, ex.app, ex.body)
    fault = fake.faults.match(ex.path, req["streaming"], numbers)
    if fault is not None:
        ex.fault = fault.kind
        if fault.kind in EARLY_KINDS:
            _early_fault(h, ex, fault)
            return
    app = ex.app
    refused = fake._limits.admit(app.id)
    if refused is not None:
        ex.fault = None  # the limit answered first; the fault did not take effect
        raise Reject(429, "too_many_requests", refused)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            fake._limits.release(app.id)

    try:
        if fault is not None and fault.kind == "stall":
            fake._sleep(fault.delay if fault.delay is not None else 5.0)
        latency = fake._latency_for(ex.body)
        if req["streaming"]:
            _stream(fake, h, ex, req, conversation_id, latency, fault)
        else:
            _blocking(fake, h, ex, req, conversation_id, latency, fault, release)
    finally:
        release()


def _workflow_run(fake: FakeDify, app: FakeApp, inputs: dict, latency: float, fault: Fault | None) -> dict:
    status, error = "succeeded", None
    if fault is not None and fault.kind == "workflow_status":
        status = fault.status_text
        if status == "failed":
            error = fault.message or "Node LLM run failed: [fake] injected failure"
    data = answers.workflow_data(app, inputs, latency, status, error)
    fake._store_run(app.id, data, inputs)
    return data


def _blocking(
    fake, h, ex: Exchange, req: dict, conversation_id, latency: float, fault: Fault | None, release
) -> None:
    fake._sleep(latency)
    app = ex.app
    if app.mode == "workflow":
        body = answers.workflow_body(_workflow_run(fake, app, req["inputs"], latency, fault))
    else:
        body = answers.message_body(app, req["query"], req["inputs"], latency, conversation_id)
    ex.response = body
    # Like Dify (AppGenerateService.generate: `finally: if not streaming: rate_limit.exit()`), a
    # blocking call frees its slot when the answer is ready, before the response is written; a
    # client that sends its next call on receipt must never find its own finished call counted.
    release()
    kind = fault.kind if fault is not None else None
    if kind == "billed_504":
        # The work is done and billed (ex.response keeps it), but the gateway gives up.
        ex.status = fault.status or 504
        h.send_bytes(ex.status, answers.html_page(ex.status), "text/html")
        return
    ex.status = 200
    if kind == "truncated":
        data = json.dumps(body).encode()
        h.send_bytes(200, data[: len(data) // 2], "application/json")
    elif kind == "malformed":
        h.send_bytes(200, b"upstream returned something that is not JSON", "application/json")
    else:
        h.send_json(200, body)


def _stream(fake, h, ex: Exchange, req: dict, conversation_id, latency: float, fault: Fault | None) -> None:
    app = ex.app
    if app.mode == "workflow":
        data = _workflow_run(fake, app, req["inputs"], latency, fault)
        events = sse.workflow_events(app, req["inputs"], data)
    else:
        events = sse.message_events(app, req["query"], req["inputs"], latency, conversation_id)
    kind = fault.kind if fault is not None else None
    if kind in ("stream_break", "stream_error"):
        cut = max(1, len(events) // 2)
        tail = []
        if kind == "stream_error":
            status = fault.status or 500
            code = fault.code or ("internal_server_error" if status >= 500 else "completion_request_error")
            message = fault.message or "Internal Server Error, please contact support."
            tail = [sse.error_event(events[0].get("task_id"), status, code, message)]
        events = events[:cut] + tail
    ex.status = 200
    h.start_stream()
    h.write_raw(sse.PING)
    step = latency / max(1, len(events))
    for event in events[:-1]:
        fake._sleep(step)
        h.write_raw(sse.frame(event))
    fake._sleep(step)
    h.end_stream(sse.frame(events[-1]))


def serve_token(fake: FakeDify, h: FakeDifyHandler, raw: bytes) -> None:
    """``POST /oauth2/token``; counted in ``token_requests`` when a token is issued."""
    numbers = fake._arrive(TOKEN_PATH)
    fault = fake.faults.match(TOKEN_PATH, False, numbers)
    if fault is not None and fault.kind == "token_down":
        h.send_json(fault.status or 503, {"error": "temporarily_unavailable"})
        return
    if fault is not None and fault.kind == "token_slow":
        fake._sleep(fault.delay if fault.delay is not None else 2.0)
    if h.command != "POST":
        h.send_json(405, {"error": "invalid_request", "error_description": "use POST"}, {"Allow": "POST"})
        return
    status, headers, body = fake._tokens.handle(h.headers, raw)
    h.send_json(status, body, headers)
