"""FakeDify's request handler: ``handle(request, state) -> reply``.

It reads and updates the state but never touches a socket or sleeps: latencies and stalls are
delays in the reply, performed by whichever server runs it (see :mod:`.exchange`).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_dify.testing.answers import NOT_FOUND_MESSAGE, info_body, parameters_body
from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.auth import authenticate
from airflow_dify.testing.conversations import PATHS as CONVERSATION_PATHS
from airflow_dify.testing.conversations import serve as serve_conversations
from airflow_dify.testing.exchange import Reply, Request
from airflow_dify.testing.faults import TOKEN_PATH
from airflow_dify.testing.feedback import feedback_route, submit_feedback
from airflow_dify.testing.files import UPLOAD_PATH, upload_file
from airflow_dify.testing.generation import generate, generation_route
from airflow_dify.testing.replies import ROUTE_MESSAGES, Reject, error_reply, json_reply, rejected
from airflow_dify.testing.state import Exchange, FakeState

log = logging.getLogger("airflow_dify.testing")
DEFAULT_TOKEN_DELAY = 2.0
_READ_PATHS = ("/info", "/parameters")


def handle(request: Request, state: FakeState) -> Reply:
    """The reply to one request. /v1 requests are logged (when the reply commits); the token
    endpoint is counted in the token store instead."""
    ex: Exchange | None = None
    try:
        if request.path == TOKEN_PATH:
            return _token(request, state)
        v1 = request.path.startswith("/v1/")
        ex = state.open(request.method, request.path[3:] if v1 else request.path, request.received)
        try:
            return _route(request, state, ex) if v1 else _not_found(ex)
        except Reject as err:
            return rejected(ex, err)
    except Exception:
        # A bug in the fake must look like a server error, not hang the client.
        log.exception("FakeDify failed on %s %s", request.method, request.path)
        body = {"code": "internal_server_error", "message": "FakeDify bug", "status": 500}
        return json_reply(ex, 500, body, close=True)


def _route(request: Request, state: FakeState, ex: Exchange) -> Reply:
    path = ex.path
    read = path in _READ_PATHS or path.startswith("/workflows/run/")
    served = generation_route(path)
    # GET /workflows/run/run is a run lookup; POST to it pins a version named "run", like Flask routes it.
    if served is not None and not (read and ex.method == "GET"):
        _allow(ex, "POST")
        return generate(state, request, ex, *served)
    message_id = feedback_route(path)
    if message_id is not None:
        _allow(ex, "POST")
        return submit_feedback(state, request, ex, message_id)
    if path in CONVERSATION_PATHS:
        return serve_conversations(state, request, ex)
    if path == UPLOAD_PATH:
        _allow(ex, "POST")
        return upload_file(state, request, ex)
    if read:
        _allow(ex, "GET")
        ex.auth, ex.app = authenticate(state, request.header("authorization"))
        return json_reply(ex, 200, _read(state, ex.app, path))
    return _not_found(ex)


def _allow(ex: Exchange, method: str) -> None:
    if ex.method != method:
        raise Reject(405, "method_not_allowed", "The method is not allowed for the requested URL.")


def _read(state: FakeState, app: FakeApp, path: str) -> dict[str, Any]:
    """GET /info, /parameters and /workflows/run/{id}."""
    if path == "/info":
        return info_body(app)
    if path == "/parameters":
        return parameters_body(app)
    if app.mode != "workflow":
        raise Reject(400, "not_workflow_app", ROUTE_MESSAGES["not_workflow_app"])
    run = state.get_run(app.id, path.rsplit("/", 1)[1])
    if run is None:
        raise Reject(404, "not_found", "Workflow run not found.")
    return run


def _not_found(ex: Exchange) -> Reply:
    return error_reply(ex, 404, "not_found", NOT_FOUND_MESSAGE)


def _token(request: Request, state: FakeState) -> Reply:
    """``POST /oauth2/token``; ``token_slow`` delays the answer, not the issuing."""
    numbers = state.arrive(TOKEN_PATH)
    fault = state.faults.match(TOKEN_PATH, False, numbers)
    if fault is not None and fault.kind == "token_down":
        return json_reply(None, fault.status or 503, {"error": "temporarily_unavailable"})
    delay = 0.0
    if fault is not None and fault.kind == "token_slow":
        delay = fault.delay if fault.delay is not None else DEFAULT_TOKEN_DELAY
    if request.method != "POST":
        body = {"error": "invalid_request", "error_description": "use POST"}
        return json_reply(None, 405, body, {"Allow": "POST"}, delay=delay)
    status, headers, answer = state.tokens.handle(request.header("authorization"), request.body)
    return json_reply(None, status, answer, headers, delay=delay)
