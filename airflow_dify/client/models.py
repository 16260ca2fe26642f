"""Typed results of Dify calls. Prices are ``Decimal`` end to end: finance sums them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow_dify.frozen import build

APP_MODES = ("chat", "completion", "workflow")
#: Dify's own app modes (GET /info ``mode``) mapped to the endpoint family that serves them.
MODE_FAMILY = {
    "chat": "chat",
    "advanced-chat": "chat",
    "agent-chat": "chat",
    "agent": "chat",
    "completion": "completion",
    "workflow": "workflow",
}
#: Modes that reject ``response_mode=blocking``.
STREAMING_ONLY_MODES = frozenset({"agent-chat", "agent"})


def to_decimal(value: Any) -> Decimal | None:
    """Dify sends prices as decimal strings; keep them exact (never via float)."""
    if value is None or value == "":
        return None
    try:
        return Decimal(value if type(value) is str else str(value))
    except (InvalidOperation, ValueError):
        return None


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Usage:
    """Every field of Dify's ``metadata.usage``; absent fields stay None."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_unit_price: Decimal | None = None
    prompt_price_unit: Decimal | None = None
    prompt_price: Decimal | None = None
    completion_unit_price: Decimal | None = None
    completion_price_unit: Decimal | None = None
    completion_price: Decimal | None = None
    total_price: Decimal | None = None
    currency: str | None = None
    latency: float | None = None
    time_to_first_token: float | None = None
    time_to_generate: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Usage:
        get = (data or {}).get
        latency = get("latency")
        return build(
            cls,
            {
                "prompt_tokens": _int(get("prompt_tokens")),
                "completion_tokens": _int(get("completion_tokens")),
                "total_tokens": _int(get("total_tokens")),
                "prompt_unit_price": to_decimal(get("prompt_unit_price")),
                "prompt_price_unit": to_decimal(get("prompt_price_unit")),
                "prompt_price": to_decimal(get("prompt_price")),
                "completion_unit_price": to_decimal(get("completion_unit_price")),
                "completion_price_unit": to_decimal(get("completion_price_unit")),
                "completion_price": to_decimal(get("completion_price")),
                "total_price": to_decimal(get("total_price")),
                "currency": get("currency"),
                "latency": float(latency) if isinstance(latency, (int, float, Decimal)) else None,
                "time_to_first_token": get("time_to_first_token"),
                "time_to_generate": get("time_to_generate"),
            },
        )


@dataclass(frozen=True)
class DifyResult:
    """One successful call. ``answer`` is the text (chat/completion) or the workflow outputs as JSON."""

    mode: str
    answer: str | None
    usage: Usage = field(default_factory=Usage)
    outputs: dict[str, Any] | None = None
    message_id: str | None = None
    conversation_id: str | None = None
    task_id: str | None = None
    workflow_run_id: str | None = None
    #: The published workflow version that ran (workflow and chatflow apps).
    workflow_id: str | None = None
    status: str = "succeeded"
    latency_ms: int | None = None
    created_at: int | None = None
    #: HTTP attempts this call took (1 = no retry); set by the client.
    attempts: int = 1
    #: Of those, failed attempts that may have run and been billed (re-sent timeouts, 504s).
    maybe_billed_retries: int = 0
    #: RAG apps: ``metadata.retriever_resources`` (document, segment, score) the answer cites.
    citations: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_message(cls, body: dict[str, Any], *, mode: str, latency_ms: int | None = None) -> DifyResult:
        """Blocking chat/completion body (or an aggregated stream)."""
        meta = body.get("metadata") or {}
        cited = meta.get("retriever_resources")
        return build(
            cls,
            {
                "mode": mode,
                "answer": body.get("answer"),
                "usage": Usage.from_json(meta.get("usage")),
                "message_id": body.get("message_id") or body.get("id"),
                "conversation_id": body.get("conversation_id") or None,
                "task_id": body.get("task_id"),
                "latency_ms": latency_ms,
                "created_at": body.get("created_at"),
                "citations": tuple(r for r in cited if isinstance(r, dict)) if cited else (),
            },
        )

    @classmethod
    def from_workflow(cls, body: dict[str, Any], *, latency_ms: int | None = None) -> DifyResult:
        """Workflow body ``{task_id, workflow_run_id, data: {...}}`` (blocking, or folded from a
        stream with the nodes' summed ``usage``); the status is checked by the caller.

        ``answer`` is the output itself when the workflow has exactly one string output, else all
        outputs as JSON.
        """
        data = body.get("data") or {}
        outputs = data.get("outputs")
        usage = (
            Usage.from_json(body["usage"])
            if body.get("usage")
            else Usage(total_tokens=_int(data.get("total_tokens")))
        )
        return cls(
            mode="workflow",
            answer=_workflow_answer(outputs),
            outputs=outputs,
            usage=usage,
            task_id=body.get("task_id"),
            workflow_run_id=body.get("workflow_run_id") or data.get("id"),
            workflow_id=data.get("workflow_id"),
            status=data.get("status") or "succeeded",
            latency_ms=latency_ms,
            created_at=data.get("created_at"),
        )


def _workflow_answer(outputs: Any) -> str | None:
    if outputs is None:
        return None
    if isinstance(outputs, dict) and len(outputs) == 1:
        (only,) = outputs.values()
        if isinstance(only, str):
            return only
    return json.dumps(outputs, ensure_ascii=False, sort_keys=True, default=_json_number)


def _json_number(value: Any) -> Any:
    """Numbers parsed as Decimal (exact prices) back to JSON numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass(frozen=True)
class AppInfo:
    """GET /info: the cheapest authenticated probe, and the app's mode."""

    name: str
    mode: str
    description: str | None = None
    author_name: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def family(self) -> str | None:
        return MODE_FAMILY.get(self.mode)
