"""``POST /messages/{message_id}/feedbacks``: the request, checked before anything is sent.

Dify scopes a message to the end user who asked it, so ``user`` must be the one the answer was
generated for; any other user gets 404 ``not_found`` ("Message Not Exists."), like an unknown id.
``rating`` None revokes the feedback given before (400 ``invalid_param`` when there is none).
A feedback generates nothing and is billed nothing, and sending the same one twice leaves the
same state: it is safe to re-send after a timeout.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow_dify.client.errors import DifyConfigError

#: What Dify accepts as ``rating``; None revokes.
RATINGS = ("like", "dislike")
#: The endpoint as retries and errors name it.
FEEDBACK_ENDPOINT = "messages/{id}/feedbacks"


def feedback_request(
    message_id: str, rating: str | None, user: str, content: str | None
) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of one feedback; DifyConfigError names the bad argument."""
    if not isinstance(message_id, str) or not message_id.strip():
        raise DifyConfigError("feedback needs the message id Dify answered with (message_id)")
    if rating is not None and rating not in RATINGS:
        raise DifyConfigError(f"rating must be 'like', 'dislike' or None to revoke (got {rating!r})")
    if not isinstance(user, str) or not user.strip():
        raise DifyConfigError("user is required: the same end-user id the message was generated for")
    if content is not None and not isinstance(content, str):
        raise DifyConfigError(f"content must be text or None (got {type(content).__name__})")
    body: dict[str, Any] = {"rating": rating, "user": user}
    if content is not None:
        body["content"] = content
    return f"/messages/{quote(message_id, safe='')}/feedbacks", body


__all__ = ["FEEDBACK_ENDPOINT", "RATINGS", "feedback_request"]
