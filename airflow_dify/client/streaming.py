"""Server-sent events from Dify: parse the wire format and fold events into one DifyResult.

Streaming is the only mode agent apps accept, and the safe mode for long workflows behind
gateways that cut blocking calls at ~60-100 s. The aggregated result must equal what the blocking
call would have returned, so batch code never cares which mode was used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from airflow_dify.client.errors import DifyError, DifyRunFailedError, DifyStreamError
from airflow_dify.client.models import DifyResult
from airflow_dify.client.responses import CallContext, error_for_status


class LineSplitter:
    """Push-style line splitting on ``\\n``, ``\\r\\n`` or ``\\r``, even across chunk boundaries.

    Push-style so the sync reader (an iterator of chunks) and the asyncio one (chunks awaited on
    the loop) feed the same parser.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[str]:
        if not chunk:
            return []
        buf = self._buf + chunk
        lines: list[str] = []
        # A trailing "\r" may be the first half of "\r\n": keep it until the next chunk.
        while True:
            cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
            idx_n = buf.find(b"\n", 0, cut)
            idx_r = buf.find(b"\r", 0, cut)
            if idx_n < 0 and idx_r < 0:
                break
            if idx_r >= 0 and (idx_n < 0 or idx_r < idx_n):
                line, skip = buf[:idx_r], 2 if buf[idx_r + 1 : idx_r + 2] == b"\n" else 1
                buf = buf[idx_r + skip :]
            else:
                line, buf = buf[:idx_n], buf[idx_n + 1 :]
            lines.append(line.decode("utf-8", errors="replace"))
        self._buf = buf
        return lines

    def end(self) -> list[str]:
        buf, self._buf = self._buf, b""
        return [buf.rstrip(b"\r").decode("utf-8", errors="replace")] if buf else []


class EventDecoder:
    """Push-style SSE decoding: bytes in, each ``data:`` payload out as a dict.

    Pings, comments and other fields are skipped; a last event without its blank line still counts.
    """

    __slots__ = ("_lines", "_data", "_name")

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._data: list[str] = []
        self._name = ""

    def feed(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        """The events ``chunk`` completes, decoded one at a time as they are taken: an event
        before a malformed one is handled before the malformed one raises."""
        return self._events(self._lines.feed(chunk))

    def end(self) -> Iterator[dict[str, Any]]:
        yield from self._events(self._lines.end())
        if self._data:
            data, name = self._data, self._name
            self._data, self._name = [], ""
            yield _decode(data, name)

    def _events(self, lines: list[str]) -> Iterator[dict[str, Any]]:
        for line in lines:
            if not line:
                data, name = self._data, self._name
                self._data, self._name = [], ""
                if data:
                    yield _decode(data, name)
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._name = value


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split raw bytes into lines (see :class:`LineSplitter`)."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.end()


def iter_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Yield each ``data:`` payload as a dict (see :class:`EventDecoder`)."""
    decoder = EventDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.end()


def _decode(data: list[str], name: str) -> dict[str, Any]:
    text = "\n".join(data)
    try:
        # Exact numbers: prices arrive as JSON numbers in node events (never via binary float).
        event = json.loads(text, parse_float=Decimal)
    except ValueError:
        raise DifyStreamError(f"malformed SSE event ({len(text)} characters of non-JSON data)") from None
    if not isinstance(event, dict):
        raise DifyStreamError("malformed SSE event (JSON is not an object)")
    if name and "event" not in event:
        event["event"] = name
    return event


def stream_error(event: dict[str, Any], ctx: CallContext, workflow_run_id: str | None = None) -> DifyError:
    """An ``error`` event as the same exception class an HTTP error with that status would give.

    It is ``maybe_billed`` whatever the status: the run had started when the stream reported it.
    """
    status = event.get("status")
    status = status if isinstance(status, int) and 400 <= status <= 599 else 500
    message = str(event.get("message") or "error event in the stream")
    return error_for_status(
        status, event.get("code"), message, ctx, maybe_billed=True, workflow_run_id=workflow_run_id
    )


class MessageAggregator:
    """Folds chat/completion/agent events: answer chunks, ids, and usage from ``message_end``.

    :param family: "chat" or "completion" (the DifyResult.mode).
    :param agent: New Agent mode, whose closing ``message`` carries the full answer.
    """

    def __init__(self, family: str, ctx: CallContext, *, agent: bool = False) -> None:
        self.family = family
        self.ctx = ctx
        self.agent = agent
        self._parts: list[str] = []
        self._saw_agent_chunks = False
        self._ids: dict[str, Any] = {}
        self._end: dict[str, Any] | None = None
        self._failed_workflow: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> bool:
        """Consume one event; True once the terminal event arrived."""
        kind = event.get("event")
        for key in ("task_id", "message_id", "conversation_id", "created_at"):
            if event.get(key) and key not in self._ids:
                self._ids[key] = event[key]
        if kind == "agent_message":
            self._saw_agent_chunks = True
            self._parts.append(event.get("answer") or "")
        elif kind == "message":
            text = event.get("answer") or ""
            if self.agent or self._saw_agent_chunks:
                self._parts = [text]  # closing full answer: replace, do not append
            else:
                self._parts.append(text)
        elif kind == "message_replace":
            self._parts = [event.get("answer") or ""]
        elif kind == "message_end":
            self._end = event
            return True
        elif kind == "workflow_finished":  # Chatflow: failure comes without message_end
            data = event.get("data") or {}
            if data.get("status") not in (None, "succeeded"):
                self._failed_workflow = event
        elif kind == "error":
            raise stream_error(event, self.ctx)
        return False

    def result(self, latency_ms: int | None = None) -> DifyResult:
        """The aggregated result; raises when the stream ended without ``message_end``."""
        if self._end is None:
            if self._failed_workflow is not None:
                data = self._failed_workflow.get("data") or {}
                status = data.get("status")
                raise DifyRunFailedError(
                    str(data.get("error") or f"chatflow ended with status {status}"),
                    code=f"workflow_{status}",
                )
            raise DifyStreamError(f"{self.ctx.endpoint}: stream ended before message_end")
        end = self._end
        body = {
            "answer": "".join(self._parts),
            "message_id": end.get("message_id") or end.get("id") or self._ids.get("message_id"),
            "conversation_id": end.get("conversation_id") or self._ids.get("conversation_id"),
            "task_id": end.get("task_id") or self._ids.get("task_id"),
            "created_at": self._ids.get("created_at") or end.get("created_at"),
            "metadata": end.get("metadata") or {},
        }
        return DifyResult.from_message(body, mode=self.family, latency_ms=latency_ms)

    def broken(self, reason: str) -> DifyStreamError:
        return DifyStreamError(f"{self.ctx.endpoint}: stream broke before message_end ({reason})")


class NodeCost:
    """Sums what each finished node reports: ``execution_metadata`` (tokens, price, currency) and
    the LLM usage in its outputs. Exact: prices are parsed as Decimal from the JSON text."""

    def __init__(self) -> None:
        self.nodes = 0
        self.tokens = 0
        self.price = Decimal(0)
        self.currency: str | None = None
        self.prompt: int | None = None
        self.completion: int | None = None

    def add(self, data: dict[str, Any]) -> None:
        meta = data.get("execution_metadata") or {}
        usage = (data.get("outputs") or {}).get("usage") if isinstance(data.get("outputs"), dict) else None
        if not isinstance(meta, dict) or meta.get("total_price") is None and meta.get("total_tokens") is None:
            return
        self.nodes += 1
        self.tokens += int(meta.get("total_tokens") or 0)
        if meta.get("total_price") is not None:
            self.price += Decimal(str(meta["total_price"]))
            self.currency = self.currency or meta.get("currency")
        if isinstance(usage, dict):
            self.prompt = (self.prompt or 0) + int(usage.get("prompt_tokens") or 0)
            self.completion = (self.completion or 0) + int(usage.get("completion_tokens") or 0)

    def usage(self, run_tokens: Any) -> dict[str, Any]:
        """A ``metadata.usage``-shaped dict; the run's own total wins over the node sum."""
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": run_tokens if run_tokens is not None else self.tokens,
            "total_price": str(self.price),
            "currency": self.currency,
        }


class WorkflowAggregator:
    """Folds workflow events; remembers ``workflow_run_id`` so a broken stream can be looked up."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.workflow_run_id: str | None = None
        self.task_id: str | None = None
        self._finished: dict[str, Any] | None = None
        self._cost = NodeCost()

    def feed(self, event: dict[str, Any]) -> bool:
        kind = event.get("event")
        if self.workflow_run_id is None:
            run_id = event.get("workflow_run_id") or (
                (event.get("data") or {}).get("id") if kind == "workflow_started" else None
            )
            if run_id:
                self.workflow_run_id = str(run_id)
        if self.task_id is None and event.get("task_id"):
            self.task_id = event["task_id"]
        if kind == "node_finished":
            self._cost.add(event.get("data") or {})
        if kind in ("workflow_finished", "workflow_paused"):
            self._finished = event
            return True
        if kind == "error":
            raise stream_error(event, self.ctx, self.workflow_run_id)
        return False

    def body(self) -> dict[str, Any]:
        """A blocking-shaped body ``{task_id, workflow_run_id, data}`` from the terminal event."""
        if self._finished is None:
            raise self.broken("ended before workflow_finished")
        data = dict(self._finished.get("data") or {})
        if self._finished.get("event") == "workflow_paused":
            data.setdefault("status", "paused")
        body = {
            "task_id": self._finished.get("task_id") or self.task_id,
            "workflow_run_id": self._finished.get("workflow_run_id") or self.workflow_run_id,
            "data": data,
        }
        if self._cost.nodes:
            body["usage"] = self._cost.usage(data.get("total_tokens"))
        return body

    def broken(self, reason: str) -> DifyStreamError:
        run = f"; workflow run {self.workflow_run_id} was started" if self.workflow_run_id else ""
        return DifyStreamError(
            f"{self.ctx.endpoint}: stream broke before workflow_finished ({reason}){run}",
            workflow_run_id=self.workflow_run_id,
        )
