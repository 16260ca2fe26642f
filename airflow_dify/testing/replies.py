"""Building replies: JSON and raw answers, and Dify's error answers from :class:`Reject`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_dify.testing.answers import error_body
from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.exchange import Reply, Response
from airflow_dify.testing.state import Exchange

JSON = "application/json"
HTML = "text/html"
ROUTE_MESSAGES = {
    "not_chat_app": "Please check if your app mode matches the right API route.",
    "not_workflow_app": "Please check if your app mode matches the right API route.",
    "app_unavailable": "App unavailable, please check your app configurations.",
}
#: The code Dify (or its gateway) puts in an error body for a bare status.
STATUS_CODES = {
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
DEFAULT_MESSAGES = {
    500: "The server encountered an internal error and was unable to complete your request. Either the "
    "server is overloaded or there is an error in the application.",
    429: "Too many requests. Please try again later.",
}


class Reject(Exception):
    """A Dify error answer, raised anywhere while handling a request and answered by the handler.

    ``auth`` and ``app`` (when set) are what authentication learnt before it refused, for the record.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        auth: str | None = None,
        app: FakeApp | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        self.auth, self.app = auth, app


def raw_reply(ex: Exchange | None, status: int, body: bytes, content_type: str, delay: float = 0.0) -> Reply:
    """``body`` as it is, after ``delay``; the record (when logged) keeps its response as set."""
    return _reply(ex, Response(status, body, {"Content-Type": content_type}), delay)


def json_reply(
    ex: Exchange | None,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
    close: bool = False,
) -> Reply:
    """``body`` as JSON, after ``delay``; it is also the record's response (when logged)."""
    if ex is not None:
        ex.response = body
    response = Response(status, json.dumps(body).encode(), {"Content-Type": JSON, **(headers or {})}, close)
    return _reply(ex, response, delay)


def _reply(ex: Exchange | None, response: Response, delay: float) -> Reply:
    if ex is not None:
        ex.status = response.status
    return Reply(response, delay, ex)


def error_reply(
    ex: Exchange, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Reply:
    """Dify's ``{code, message, status}`` error answer."""
    return json_reply(ex, status, error_body(status, code, message), headers)


def rejected(ex: Exchange, err: Reject) -> Reply:
    if err.auth is not None:
        ex.auth = err.auth
    if err.app is not None:
        ex.app = err.app
    return error_reply(ex, err.status, err.code, err.message, headers=err.headers)
