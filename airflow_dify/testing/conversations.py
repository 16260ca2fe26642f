"""``GET /conversations`` and ``GET /messages``: an end user's conversations and their messages.

Like Dify, both are scoped to the app and to the end user (``user`` is required): another user's
conversation is "Conversation Not Exists.". Conversations come newest first (``sort_by``
``-updated_at``, the default), messages of a conversation oldest first, each in Dify's
``ConversationMessageItem`` shape with its usage and price, which is what lets a client that
timed out find the answer it paid for instead of asking again.
"""

from __future__ import annotations

from typing import Any

from airflow_dify.testing.auth import authenticate
from airflow_dify.testing.exchange import Reply, Request
from airflow_dify.testing.replies import Reject, json_reply
from airflow_dify.testing.state import Exchange, FakeState

PATHS = ("/conversations", "/messages")
CONVERSATION_NOT_EXISTS = "Conversation Not Exists."


def message_item(
    body: dict[str, Any], query: str | None, inputs: dict[str, Any], conversation_id: str | None
) -> dict[str, Any]:
    """A stored message as GET /messages returns it, from the answer body (or folded stream)."""
    meta = body.get("metadata") or {}
    usage = meta.get("usage") or {}
    return {
        "id": body.get("message_id") or body.get("id"),
        "conversation_id": conversation_id,
        "parent_message_id": None,
        "inputs": dict(inputs or {}),
        "query": query or "",
        "answer": body.get("answer") or "",
        "status": "normal",
        "error": None,
        "message_files": [],
        "feedback": None,
        "retriever_resources": meta.get("retriever_resources") or [],
        "agent_thoughts": [],
        "created_at": body.get("created_at"),
        "extra_contents": [],
        "message_tokens": usage.get("prompt_tokens"),
        "answer_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "provider_response_latency": usage.get("latency"),
        "total_price": usage.get("total_price"),
        "currency": usage.get("currency"),
    }


def serve(state: FakeState, request: Request, ex: Exchange) -> Reply:
    """GET /conversations or GET /messages; refusals are raised as :class:`Reject`."""
    if ex.method != "GET":
        raise Reject(405, "method_not_allowed", "The method is not allowed for the requested URL.")
    ex.auth, ex.app = authenticate(state, request.header("authorization"))
    params = request.params()
    ex.body = params
    user = params.get("user")
    if not user:
        raise Reject(400, "invalid_param", "user is required")
    limit = _limit(params.get("limit"))
    if ex.path == "/conversations":
        data = state.conversations(ex.app.id, user)
        return json_reply(ex, 200, _page(data, limit, params.get("last_id"), key="id"))
    conversation_id = params.get("conversation_id")
    if not conversation_id:
        raise Reject(400, "invalid_param", "conversation_id is required")
    items = state.conversation_messages(ex.app.id, user, conversation_id)
    if items is None:
        raise Reject(404, "not_found", CONVERSATION_NOT_EXISTS)
    # Newest page first, each page in time order: first_id pages back to older messages.
    first_id = params.get("first_id")
    older = items
    if first_id:
        ids = [m["id"] for m in items]
        if first_id not in ids:
            raise Reject(404, "not_found", "First Message Not Exists.")
        older = items[: ids.index(first_id)]
    page = older[-limit:]
    return json_reply(ex, 200, {"limit": limit, "has_more": len(older) > len(page), "data": page})


def _limit(raw: str | None) -> int:
    try:
        limit = int(raw) if raw not in (None, "") else 20
    except ValueError:
        raise Reject(400, "invalid_param", "limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise Reject(400, "invalid_param", "limit must be between 1 and 100")
    return limit


def _page(data: list[dict[str, Any]], limit: int, last_id: str | None, *, key: str) -> dict[str, Any]:
    if last_id:
        ids = [d[key] for d in data]
        if last_id not in ids:
            raise Reject(404, "not_found", "Last Conversation Not Exists.")
        data = data[ids.index(last_id) + 1 :]
    return {"limit": limit, "has_more": len(data) > limit, "data": data[:limit]}


__all__ = ["CONVERSATION_NOT_EXISTS", "PATHS", "message_item", "serve"]
