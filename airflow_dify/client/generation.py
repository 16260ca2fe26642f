"""What the sync and the asyncio client share for a generation call, apart from the I/O.

The request plan (path and body per family), the per-call attempt book (token estimate, attempts,
maybe-billed count, what to settle), stream aggregation and the run-record shape live here once,
so :class:`~airflow_dify.client.client.DifyClient` and
:class:`~airflow_dify.client.async_client.AsyncDifyClient` differ only where one awaits.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from airflow_dify.client.errors import DifyConfigError, DifyError, DifyRunFailedError, DifyStreamError
from airflow_dify.client.models import MODE_FAMILY, STREAMING_ONLY_MODES, DifyResult
from airflow_dify.client.responses import CallContext
from airflow_dify.client.streaming import MessageAggregator, WorkflowAggregator

_TRACE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_RESPONSE_MODES = ("blocking", "streaming")
RUN_LOOKUP = "workflows/run/{id}"


@dataclass(frozen=True, slots=True)
class Plan:
    """One generation request: which family parses it, where it goes, what it carries."""

    family: str
    path: str
    body: dict[str, Any]
    agent: bool = False

    @property
    def streaming(self) -> bool:
        return self.body["response_mode"] == "streaming"


def plan_call(
    family: str,
    *,
    query: str | None,
    inputs: dict[str, Any] | None,
    user: str,
    response_mode: str | None,
    conversation_id: str | None,
    workflow_id: str | None,
) -> Plan:
    """The request ``DifyClient.call`` sends (see its docstring for the defaults per mode)."""
    fam = MODE_FAMILY.get(family)
    if fam is None:
        raise DifyConfigError(f"unknown app mode {family!r}; expected one of {sorted(MODE_FAMILY)}")
    streams = family in STREAMING_ONLY_MODES or fam == "workflow"
    mode = response_mode or ("streaming" if streams else "blocking")
    if fam == "chat":
        text = query if query is not None else ""
        agent = family == "agent"
        return chat_plan(text, inputs, user, conversation_id, mode, agent=agent, workflow_id=workflow_id)
    if fam == "completion":
        return completion_plan(inputs, user, query, mode)
    return workflow_plan(inputs, user, workflow_id, mode)


def chat_plan(
    query: str,
    inputs: dict[str, Any] | None,
    user: str,
    conversation_id: str | None,
    response_mode: str,
    *,
    agent: bool = False,
    workflow_id: str | None = None,
) -> Plan:
    body = request_body(inputs, user, response_mode)
    body["query"] = query
    # Naming each new conversation can cost an extra LLM call: useless for bulk runs.
    body["auto_generate_name"] = False
    if conversation_id:
        body["conversation_id"] = conversation_id
    if workflow_id:
        body["workflow_id"] = workflow_id  # a chatflow's pinned published version
    return Plan("chat", "/chat-messages", body, agent)


def completion_plan(inputs: dict[str, Any] | None, user: str, query: str | None, response_mode: str) -> Plan:
    body = request_body(inputs, user, response_mode)
    if query is not None:
        body["query"] = query
    return Plan("completion", "/completion-messages", body)


def workflow_plan(
    inputs: dict[str, Any] | None, user: str, workflow_id: str | None, response_mode: str
) -> Plan:
    path = f"/workflows/{quote(workflow_id, safe='')}/run" if workflow_id else "/workflows/run"
    return Plan("workflow", path, request_body(inputs, user, response_mode))


class AttemptBook:
    """The bookkeeping of one call across its attempts: what each reserves and settles.

    Reserve prompt (~4 characters per token) + expected completion; settled to the real count.
    ``maybe_billed`` counts failed attempts that may have run (the usage ledger counts them).
    """

    __slots__ = ("estimate", "completion_estimate", "attempts", "maybe_billed")

    def __init__(self, body: dict[str, Any], completion_estimate: int) -> None:
        inputs = body.get("inputs")
        text = len(body.get("query") or "") + (sum(len(str(v)) for v in inputs.values()) if inputs else 0)
        self.completion_estimate = completion_estimate
        self.estimate = completion_estimate + text // 4
        self.attempts = 0
        self.maybe_billed = 0

    def succeeded(self, result: DifyResult) -> tuple[DifyResult, int]:
        """The result to return and the tokens to settle."""
        total = result.usage.total_tokens
        used = total if total is not None else self.estimate
        if self.attempts > 1:
            result = replace(result, attempts=self.attempts, maybe_billed_retries=self.maybe_billed)
        return result, used

    def failed(self, err: DifyError) -> tuple[DifyError, int]:
        """The error to raise (``err`` itself when nothing is added) and the tokens to settle:
        what ran, the estimate if unknown, 0 if rejected."""
        result = err.result
        if result is not None and result.usage.total_tokens is not None:
            used = result.usage.total_tokens
        elif err.maybe_billed or (err.status or 0) >= 500:
            used = self.completion_estimate
        else:
            used = 0
        earlier, self.maybe_billed = self.maybe_billed, self.maybe_billed + int(err.maybe_billed)
        return (err.evolve(maybe_billed_retries=earlier) if earlier else err), used


def aggregator(plan: Plan, ctx: CallContext) -> MessageAggregator | WorkflowAggregator:
    if plan.family == "workflow":
        return WorkflowAggregator(ctx)
    return MessageAggregator(plan.family, ctx, agent=plan.agent)


def is_event_stream(headers: Any) -> bool:
    """False when a gateway answered a streaming request blocking."""
    return "text/event-stream" in headers.get("Content-Type", "")


def stream_result(agg: MessageAggregator | WorkflowAggregator, started: float) -> DifyResult:
    """The result of a stream read to its end (raises when it ended before its terminal event)."""
    if isinstance(agg, MessageAggregator):
        return agg.result(ms(started))
    return parse_result("workflow", agg.body(), ms(started))


def recoverable_run(plan: Plan, agg: Any, err: DifyStreamError) -> str | None:
    """The workflow run a broken stream had started (to look up, never re-run), or None."""
    run_id = err.workflow_run_id or getattr(agg, "workflow_run_id", None)
    return run_id if plan.family == "workflow" and run_id else None


def run_path(run_id: str) -> str:
    if not run_id or not isinstance(run_id, str):
        raise DifyConfigError("get_workflow_run needs a workflow run id")
    return f"/workflows/run/{quote(run_id, safe='')}"


def run_record(data: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The run record in the blocking-response shape ``{workflow_run_id, data}``."""
    data = dict(data)
    for key in ("outputs", "inputs"):
        if isinstance(data.get(key), str):  # Dify sends these as JSON strings here
            with contextlib.suppress(ValueError):
                data[key] = json.loads(data[key])
    return {"workflow_run_id": data.get("id") or run_id, "data": data}


def run_status(body: dict[str, Any]) -> str:
    return (body.get("data") or {}).get("status") or "running"


def parse_result(family: str, data: dict[str, Any], latency_ms: int) -> DifyResult:
    if family != "workflow":
        return DifyResult.from_message(data, mode=family, latency_ms=latency_ms)
    result = DifyResult.from_workflow(data, latency_ms=latency_ms)
    if result.status != "succeeded":
        error = (data.get("data") or {}).get("error")
        raise DifyRunFailedError(
            str(error) if error else f"workflow run ended with status '{result.status}'",
            code=f"workflow_{result.status}",
            result=result,
            workflow_run_id=result.workflow_run_id,
        )
    return result


def unrecoverable(cause: DifyStreamError, run_id: str, why: str) -> DifyStreamError:
    return DifyStreamError(
        f"{cause.message}; run {run_id} {why}; not re-sent to avoid paying twice",
        retryable=False,
        workflow_run_id=run_id,
    )


def ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def request_body(inputs: dict[str, Any] | None, user: str, response_mode: str) -> dict[str, Any]:
    """What every generation request carries, checked before anything is sent."""
    if not isinstance(user, str) or not user.strip():
        raise DifyConfigError("user is required: pass a stable end-user id, e.g. 'airflow-<dag_id>'")
    if response_mode not in _RESPONSE_MODES:
        raise DifyConfigError(f"response_mode must be 'blocking' or 'streaming' (got {response_mode!r})")
    return {"inputs": inputs or {}, "user": user, "response_mode": response_mode}


def trace_headers(trace_id: str | None) -> dict[str, str] | None:
    if trace_id is None:
        return None
    if not _TRACE_ID_RE.match(trace_id):
        raise DifyConfigError("trace_id must be 1-128 characters of letters, digits, '_' or '-'")
    return {"X-Trace-Id": trace_id}
