"""``POST /messages/{message_id}/feedbacks``: rate a message as the end user who asked it.

Dify's checks in Dify's order: the route only matches a UUID (anything else is the plain 404
page), then the API key, the ``user`` field, the payload (``rating`` like | dislike | null,
``content`` text), then the message, looked up by id, app *and* end user, so another user's
message is as missing as an unknown one (404 "Message Not Exists."). A rating creates or replaces
the feedback (content too); null deletes it, and is refused when there is none.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airflow_dify.testing.auth import authenticate
from airflow_dify.testing.exchange import Reply, Request
from airflow_dify.testing.faults import EARLY_KINDS, FEEDBACK_PATH
from airflow_dify.testing.generation import early_fault
from airflow_dify.testing.replies import Reject, json_reply
from airflow_dify.testing.state import Exchange, FakeState

#: Flask's ``<uuid:message_id>`` converter: a canonical UUID in either case.
_ROUTE = re.compile(
    r"/messages/([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})/feedbacks"
)
RATINGS = ("like", "dislike")
MESSAGE_NOT_EXISTS = "Message Not Exists."
NOTHING_TO_REVOKE = "rating cannot be None when feedback not exists"


def feedback_route(path: str) -> str | None:
    """The message id (lower case, as Dify stores it) when ``path`` is a feedback path, else None."""
    match = _ROUTE.fullmatch(path)
    return match.group(1).lower() if match else None


def submit_feedback(state: FakeState, request: Request, ex: Exchange, message_id: str) -> Reply:
    """Serve one feedback; refusals are raised as :class:`Reject`."""
    numbers = state.arrive(FEEDBACK_PATH)
    ex.auth, ex.app = authenticate(state, request.header("authorization"))
    body = _body(request.body)
    ex.body = body
    user = body.get("user")
    if not user:
        raise Reject(400, "invalid_param", "Arg user must be provided.")
    rating, content = body.get("rating"), body.get("content")
    if rating is not None and rating not in RATINGS:
        raise Reject(400, "invalid_param", f"rating: Input should be 'like' or 'dislike' (got {rating!r})")
    if content is not None and not isinstance(content, str):
        raise Reject(400, "invalid_param", "content: Input should be a valid string")
    fault = state.faults.match(FEEDBACK_PATH, False, numbers)
    if fault is not None and fault.kind in EARLY_KINDS:
        ex.fault = fault.kind
        return early_fault(ex, fault)  # answered before anything is stored
    if state.get_message(ex.app.id, str(user), message_id) is None:
        raise Reject(404, "not_found", MESSAGE_NOT_EXISTS)
    if not state.rate(message_id, rating, str(user), content):
        raise Reject(400, "invalid_param", NOTHING_TO_REVOKE)
    return json_reply(ex, 200, {"result": "success"})


def _body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Reject(
            400, "bad_request", "The browser (or proxy) sent a request that this server could not understand."
        ) from None
    if not isinstance(body, dict):
        raise Reject(400, "invalid_param", "Input should be a valid dictionary")
    return body


__all__ = ["MESSAGE_NOT_EXISTS", "NOTHING_TO_REVOKE", "RATINGS", "feedback_route", "submit_feedback"]
