"""No re-pay on chat timeouts: find the answer Dify gave to a call whose response was lost.

A blocking chat call that timed out (504/524, read timeout) or whose stream broke may have been
answered and billed. When each row asks as its own end user (``user_per_row``), the row's newest
conversation is the call's: ``GET /conversations?user=<row user>&limit=1`` then ``GET /messages``
give its answer, usage and exact price, which are stored as if the response had arrived. Only when
Dify has no record of the call (no conversation since the call started, or no finished answer after
a few bounded looks) does the row fail as "maybe billed", and it is not re-sent.

The same look-up finds the calls of a try that crashed (SIGKILL, OOM) while it held the row: the new
try stores the answer the dead one paid for instead of asking again (see :func:`recover_lost`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from airflow_dify.batch.trace import row_key
from airflow_dify.client.errors import DifyError
from airflow_dify.client.models import DifyResult, Usage
from airflow_dify.outcome import TakenOver

log = logging.getLogger("airflow_dify.batch")
#: Dify's clock may be a little behind ours: a conversation this much older still counts as the call's.
CLOCK_SKEW_SECONDS = 30.0
LOOKS = 3


class SupportsLookup(Protocol):
    def conversations(self, user: str, *, limit: int = 20) -> list[dict[str, Any]]: ...

    def messages(self, conversation_id: str, user: str, *, limit: int = 20) -> list[dict[str, Any]]: ...


def row_user(user: str, row_id: Any) -> str:
    """The end user a row asks as with ``user_per_row``: ``<user>-<row key>``."""
    return f"{user}-{row_key(row_id)}"


def recover_chat(
    client: SupportsLookup,
    user: str,
    started: float,
    *,
    family: str,
    known: Collection[str] = (),
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DifyResult | None:
    """The answer of the chat call ``user`` sent at epoch ``started``, or None when Dify has none.

    ``known``: message ids already accounted for (on the ledger); the newest message being one of
    them means the call being looked for never reached Dify.
    """
    for look in range(LOOKS):
        if look:
            sleep(interval)
        try:
            conversations = client.conversations(user, limit=1)
            conv = conversations[0] if conversations else None
            if conv is None or float(conv.get("created_at") or 0) < started - CLOCK_SKEW_SECONDS:
                return None  # no conversation since the call: Dify never started it
            messages = client.messages(str(conv["id"]), user, limit=1)
        except DifyError as err:
            log.warning("looking up the answer of a timed-out call of %s failed: %s", user, err)
            return None
        message = messages[-1] if messages else None
        if message is not None and str(message.get("id")) in known:
            return None
        if message is not None and message.get("status") == "error":
            return None
        if message is not None and message.get("answer"):
            return _result(message, str(conv["id"]), family)
    return None  # still no answer: treated as maybe billed, not re-sent


def _result(message: dict[str, Any], conversation_id: str, family: str) -> DifyResult:
    usage = Usage.from_json(
        {
            "prompt_tokens": message.get("message_tokens"),
            "completion_tokens": message.get("answer_tokens"),
            "total_tokens": message.get("total_tokens"),
            "total_price": message.get("total_price"),
            "currency": message.get("currency"),
        }
    )
    return DifyResult(
        mode=family,
        answer=message.get("answer"),
        usage=usage,
        message_id=message.get("id"),
        conversation_id=conversation_id,
        created_at=message.get("created_at"),
        citations=tuple(message.get("retriever_resources") or ()),
    )


def recover_lost(client: SupportsLookup, user: str, taken: TakenOver, *, family: str) -> DifyResult | None:
    """The answer of the call a crashed try made for this row, or None when it made none."""
    found = recover_chat(client, user, 0.0, family=family, known=taken.known_messages)
    if found is not None:
        log.info(
            "%s: the crashed try %s's answer was found in Dify; stored, not asked again",
            user,
            taken.try_number,
        )
    return found


__all__ = ["CLOCK_SKEW_SECONDS", "recover_chat", "recover_lost", "row_user"]
