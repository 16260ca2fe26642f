"""Deterministic answers, usage and JSON bodies shaped like Dify's (see dify-fixtures/).

The texts and token counts are pure functions of the request, so tests can predict them with
:func:`answer_text`, :func:`prompt_text` and :func:`make_usage`.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.uploads import FILE_FORM_DEFAULTS, advertised_limits, file_upload_feature

PROMPT_UNIT_PRICE = Decimal("0.001")
COMPLETION_UNIT_PRICE = Decimal("0.002")
PRICE_UNIT = Decimal("0.001")
_SEVEN = Decimal("0.0000001")
NOT_FOUND_MESSAGE = (
    "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again."
)


def inputs_text(inputs: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((inputs or {}).items()))


def answer_text(query: str | None, inputs: dict[str, Any] | None) -> str:
    """``Answer: {query}`` plus `` | k=v, ...`` for the inputs; inputs only when there is no query."""
    rendered = inputs_text(inputs)
    if not query:
        return rendered
    return f"Answer: {query}" + (f" | {rendered}" if rendered else "")


def app_answer(app: FakeApp, query: str | None, inputs: dict[str, Any]) -> str:
    """What ``app`` answers: its scripted ``answer``, else :func:`answer_text`."""
    text = (app.answer or answer_text)(query, dict(inputs))
    if not isinstance(text, str):
        raise TypeError(f"FakeApp.answer must return a str, got {type(text).__name__}")
    return text


def app_citations(app: FakeApp, query: str | None, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """A RAG app's retriever resources for this question ([] for an app without knowledge)."""
    return list(app.citations(query, dict(inputs))) if app.citations is not None else []


def prompt_text(query: str | None, inputs: dict[str, Any] | None) -> str:
    """What the fake 'sends to the model': the query and the rendered inputs."""
    return "\n".join(part for part in (query or "", inputs_text(inputs)) if part)


def _price(tokens: int, unit_price: Decimal) -> Decimal:
    return (tokens * unit_price * PRICE_UNIT).quantize(_SEVEN, rounding=ROUND_HALF_UP)


def token_counts(prompt: str, answer: str) -> tuple[int, int]:
    return 10 + math.ceil(len(prompt) / 4), 5 + math.ceil(len(answer) / 4)


def make_usage(prompt: str, answer: str, latency: float) -> dict[str, Any]:
    """``metadata.usage`` with prices as 7-decimal strings, computed with Decimal like Dify."""
    prompt_tokens, completion_tokens = token_counts(prompt, answer)
    prompt_price = _price(prompt_tokens, PROMPT_UNIT_PRICE)
    completion_price = _price(completion_tokens, COMPLETION_UNIT_PRICE)
    return {
        "prompt_tokens": prompt_tokens,
        "prompt_unit_price": str(PROMPT_UNIT_PRICE),
        "prompt_price_unit": str(PRICE_UNIT),
        "prompt_price": str(prompt_price),
        "completion_tokens": completion_tokens,
        "completion_unit_price": str(COMPLETION_UNIT_PRICE),
        "completion_price_unit": str(PRICE_UNIT),
        "completion_price": str(completion_price),
        "total_tokens": prompt_tokens + completion_tokens,
        "total_price": str(prompt_price + completion_price),
        "currency": "USD",
        "latency": float(latency),
    }


def new_id() -> str:
    return str(uuid.uuid4())


def message_body(
    app: FakeApp, query: str | None, inputs: dict, latency: float, conversation_id: str | None
) -> dict[str, Any]:
    """Blocking chat / completion body (completion has no conversation_id)."""
    answer = app_answer(app, query, inputs)
    message_id = new_id()
    body: dict[str, Any] = {
        "event": "message",
        "task_id": new_id(),
        "id": message_id,
        "message_id": message_id,
    }
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    body.update(
        {
            "mode": app.mode,
            "answer": answer,
            "metadata": {"usage": make_usage(prompt_text(query, inputs), answer, latency)},
            "created_at": int(time.time()),
        }
    )
    if app.mode != "completion":
        body["metadata"]["retriever_resources"] = app_citations(app, query, inputs)
    return body


def workflow_body(data: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": new_id(), "workflow_run_id": data["id"], "data": data}


def run_detail(data: dict[str, Any], inputs: dict) -> dict[str, Any]:
    """``GET /workflows/run/{id}``: like the finished data, with inputs as a JSON *string*."""
    keys = ("id", "workflow_id", "status")
    detail = {k: data[k] for k in keys}
    detail["inputs"] = json.dumps(inputs)
    for k in ("outputs", "error", "total_steps", "total_tokens", "created_at", "finished_at", "elapsed_time"):
        detail[k] = data[k]
    return detail


def info_body(app: FakeApp) -> dict[str, Any]:
    return {
        "name": app.name,
        "description": app.description,
        "tags": list(app.tags),
        "mode": app.mode,
        "author_name": app.author_name,
    }


def parameters_body(app: FakeApp) -> dict[str, Any]:
    form = []
    for spec in app.form():
        entry = {k: spec[k] for k in ("label", "variable", "required", "default")}
        if spec["type"] == "select":
            entry["options"] = list(spec.get("options", []))
        if spec["type"] in FILE_FORM_DEFAULTS:
            entry.update({k: spec.get(k, v) for k, v in FILE_FORM_DEFAULTS[spec["type"]].items()})
        form.append({spec["type"]: entry})
    return {
        "opening_statement": "",
        "suggested_questions": [],
        "suggested_questions_after_answer": {"enabled": False},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False, "voice": "", "language": "", "autoPlay": "disabled"},
        "retriever_resource": {"enabled": False},
        "annotation_reply": {"enabled": False},
        "more_like_this": {"enabled": False},
        "sensitive_word_avoidance": {"enabled": False},
        "user_input_form": form,
        "file_upload": file_upload_feature(app),
        "system_parameters": advertised_limits(app),
    }


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """Dify's error envelope (key order as the code emits it)."""
    return {"code": code, "message": message, "status": status}


_HTML_TITLES = {
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
    524: "524 A timeout occurred",
}


def html_page(status: int) -> bytes:
    """An nginx/edge style HTML error page (what Cloud's proxies send instead of Dify JSON)."""
    title = _HTML_TITLES.get(status, f"{status} Error")
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
