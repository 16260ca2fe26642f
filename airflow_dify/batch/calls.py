"""One row -> one Dify call -> one RowOutcome. Never raises: a failed call is a failed row."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from airflow_dify.batch.breaker import SYSTEMIC, classify, rejects_pinned_version
from airflow_dify.batch.errors import RowError
from airflow_dify.batch.file_inputs import FileInputs
from airflow_dify.batch.outputs import OutputSpec
from airflow_dify.batch.recovery import SupportsLookup, recover_chat, recover_lost, row_user
from airflow_dify.batch.rows import Prompt, PromptBuilder, failed_outcome
from airflow_dify.batch.trace import for_try, row_trace_id, script_prefix
from airflow_dify.client.errors import DifyError
from airflow_dify.client.models import MODE_FAMILY, DifyResult
from airflow_dify.frozen import build
from airflow_dify.outcome import FAILED, STATUS_KEY, SUCCEEDED, TAKEN_OVER_KEY, RowOutcome, TakenOver

MAX_ERROR_CHARS = 1000


class SupportsCall(Protocol):
    def call(
        self,
        family: str,
        *,
        query: str | None,
        inputs: dict[str, Any],
        user: str,
        response_mode: str | None,
        workflow_id: str | None = None,
        trace_id: str | None = None,
    ) -> DifyResult: ...


def _result_fields(result: DifyResult | None) -> dict[str, Any]:
    """What a Dify result (or the partial one of a failed run) contributes to a row's outcome."""
    if result is None:
        return {}
    usage = result.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "total_price": usage.total_price,
        "currency": usage.currency,
        "answer": result.answer,
        "latency_ms": result.latency_ms,
        "message_id": result.message_id or result.workflow_run_id,
        "conversation_id": result.conversation_id,
        "workflow_id": result.workflow_id,
        "workflow_run_id": result.workflow_run_id,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def outcome_from_result(
    row_id: Any, result: DifyResult, *, input_hash: str | None = None, trace_id: str | None = None
) -> RowOutcome:
    values = _result_fields(result)
    values["row_id"] = row_id
    values["status"] = SUCCEEDED
    values["answered_at"] = _now()
    values["attempts"] = getattr(result, "attempts", 1) or 1
    values["input_hash"] = input_hash
    values["trace_id"] = trace_id
    values["earlier_maybe_billed"] = result.maybe_billed_retries
    return build(RowOutcome, values)


def outcome_from_error(
    row_id: Any, err: DifyError, *, input_hash: str | None = None, trace_id: str | None = None
) -> RowOutcome:
    message = str(err)
    if err.maybe_billed:
        message += " (the request may have run and been billed by Dify; not re-sent)"
    return RowOutcome(
        row_id,
        FAILED,
        error=message[:MAX_ERROR_CHARS],
        error_code=err.code,
        answered_at=_now(),
        attempts=getattr(err, "attempts", 1) or 1,
        maybe_billed=err.maybe_billed,
        failure=classify(err),
        # Kept on failures too: redo="changed" re-asks a failed row only once its content changes
        # (redo="failed" retries it as is).
        input_hash=input_hash,
        trace_id=trace_id,
        earlier_maybe_billed=err.maybe_billed_retries,
        **_result_fields(err.result),
    )


def with_outputs(outcome: RowOutcome, result: DifyResult, outputs: OutputSpec) -> RowOutcome:
    """A succeeded outcome with its output columns; failed (answer and usage kept) if they do not fit."""
    source = result.outputs if result.mode == "workflow" else None
    try:
        values = outputs.extract(outcome.row_id, source, result.answer)
    except RowError as exc:
        return replace(
            outcome, status=FAILED, error=f"{exc.code}: {exc}"[:MAX_ERROR_CHARS], error_code=exc.code
        )
    return replace(outcome, outputs=values)


@dataclass(frozen=True)
class Prepared:
    """One row ready to send: its prompt (file inputs attached), trace id and end user."""

    row_id: Any
    prompt: Prompt
    trace_id: str
    sender: str


class RowCalls:
    """Everything the row caller does around the generation call itself: build the prompt,
    attach files, turn results and errors into outcomes, look a lost chat answer up.

    :param lookups: the sync client for the rare I/O around a call (file uploads, chat recovery).
    """

    def __init__(
        self,
        lookups: Any,
        builder: PromptBuilder,
        *,
        user: str,
        response_mode: str | None = None,
        app_mode: str | None = None,
        workflow_id: str | None = None,
        outputs: OutputSpec | None = None,
        trace_prefix: str | None = None,
        user_per_row: bool = False,
        citations_column: str | None = None,
        files: FileInputs | None = None,
    ) -> None:
        self.lookups = lookups
        self.builder = builder
        self.user = user
        self.response_mode = response_mode
        self.workflow_id = workflow_id
        self.outputs = outputs
        self.prefix = trace_prefix or script_prefix()
        self.family = app_mode or builder.family
        self.version = {"workflow_id": workflow_id} if workflow_id else {}
        self.user_per_row = user_per_row
        self.recovers = user_per_row and MODE_FAMILY.get(self.family) == "chat"
        self.citations_column = citations_column
        self.files = files

    def prepare(self, row: Mapping[str, Any]) -> Prepared | RowOutcome:
        """The call to make, or the row's outcome when it needs no generation call (it fails
        first, or a crashed try's answer is found). Does I/O only for file inputs (the upload)
        and for rows taken over from a crashed try (:meth:`needs_io`)."""
        row_id = row[self.builder.id_column]
        try:
            prompt = self.builder.build(row)
        except RowError as exc:
            return failed_outcome(row_id, exc.code, str(exc))
        trace_id = row_trace_id(self.prefix, row_id)
        sender = row_user(self.user, row_id) if self.user_per_row else self.user
        taken = row.get(TAKEN_OVER_KEY)
        if self.recovers and isinstance(taken, TakenOver):  # a crashed try held it: look first
            found = recover_lost(cast(SupportsLookup, self.lookups), sender, taken, family=self.family)
            if found is not None:  # stored with the id its call carried, so its trace still finds it
                lost_trace = row_trace_id(for_try(self.prefix, taken.try_number), row_id)
                return self.finish(Prepared(row_id, prompt, lost_trace, sender), found)
        if self.files is not None:
            try:
                prompt = replace(prompt, inputs=self.files.attach(prompt, user=sender))
            except RowError as exc:
                return failed_outcome(row_id, exc.code, str(exc))
            except DifyError as err:  # the upload failed (no generation call): classified like one
                return outcome_from_error(row_id, err, input_hash=prompt.input_hash)
        return Prepared(row_id, prompt, trace_id, sender)

    def needs_io(self, row: Mapping[str, Any]) -> bool:
        """Whether :meth:`prepare` may block on the network for this row (run it off the loop)."""
        return self.files is not None or (self.recovers and TAKEN_OVER_KEY in row)

    def call_kwargs(self, p: Prepared) -> dict[str, Any]:
        return {
            "query": p.prompt.query,
            "inputs": p.prompt.inputs,
            "user": p.sender,
            "response_mode": self.response_mode,
            "trace_id": p.trace_id,
            **self.version,
        }

    def may_recover(self, err: DifyError) -> bool:
        return self.recovers and err.maybe_billed

    def recover(self, p: Prepared, started: float) -> DifyResult | None:
        """The answer Dify gave to a chat call whose response was lost (sync lookups)."""
        return recover_chat(cast(SupportsLookup, self.lookups), p.sender, started, family=self.family)

    def failed(self, p: Prepared, err: DifyError, found: DifyResult | None = None) -> RowOutcome:
        if found is not None:
            result = replace(found, attempts=err.attempts, maybe_billed_retries=err.maybe_billed_retries)
            return self.finish(p, result)
        outcome = outcome_from_error(p.row_id, err, input_hash=p.prompt.input_hash, trace_id=p.trace_id)
        if self.workflow_id and rejects_pinned_version(err):
            return replace(outcome, failure=SYSTEMIC, error_code="workflow_id_rejected")
        return outcome

    def crashed(self, p: Prepared, exc: Exception) -> RowOutcome:
        """A bug must fail the row, not kill 999 other rows' results."""
        error = f"internal_error: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        return RowOutcome(
            p.row_id,
            FAILED,
            error=error,
            error_code="internal_error",
            answered_at=_now(),
            input_hash=p.prompt.input_hash,
            trace_id=p.trace_id,
        )

    def finish(self, p: Prepared, result: DifyResult) -> RowOutcome:
        outcome = outcome_from_result(p.row_id, result, input_hash=p.prompt.input_hash, trace_id=p.trace_id)
        if self.workflow_id and outcome.workflow_id is None:
            outcome = replace(outcome, workflow_id=self.workflow_id)  # a chatflow's answer does not echo it
        if self.outputs:
            outcome = with_outputs(outcome, result, self.outputs)
        if self.citations_column:
            outcome = replace(
                outcome, outputs={**(outcome.outputs or {}), self.citations_column: list(result.citations)}
            )
        return outcome

    @staticmethod
    def with_prior(row: Mapping[str, Any], outcome: RowOutcome) -> RowOutcome:
        """Sinks keep a stored answer when its re-run fails: they need to know there was one."""
        prior = row.get(STATUS_KEY)
        return outcome if prior is None else replace(outcome, prior_status=prior)


class SupportsAsyncCall(Protocol):
    async def call(
        self,
        family: str,
        *,
        query: str | None,
        inputs: dict[str, Any],
        user: str,
        response_mode: str | None,
        workflow_id: str | None = None,
        trace_id: str | None = None,
    ) -> DifyResult: ...


def make_row_caller(
    client: SupportsAsyncCall,
    lookups: SupportsCall,
    builder: PromptBuilder,
    **options: Any,
) -> Callable[[Mapping[str, Any]], Awaitable[RowOutcome]]:
    """The engine's row caller: one coroutine per row; ``options`` as :class:`RowCalls` takes them.

    ``app_mode`` (Dify's own, e.g. ``agent-chat``) lets the client pick streaming where required;
    ``workflow_id`` pins a published workflow version; ``outputs`` maps the answer to columns;
    ``trace_prefix`` starts every call's X-Trace-Id (see :mod:`airflow_dify.batch.trace`);
    ``user_per_row`` asks as ``<user>-<row>`` so a chat call that timed out is looked up, not
    re-paid (see :mod:`airflow_dify.batch.recovery`); ``citations_column`` takes RAG citations;
    ``files`` puts the row's file inputs in (uploaded once, before the call and its retries).
    ``lookups`` is the sync client: file uploads and chat recovery (rare) run through it in a
    worker thread, so the loop never blocks on them.
    """
    calls = RowCalls(lookups, builder, **options)

    async def call_row(row: Mapping[str, Any]) -> RowOutcome:
        p = await asyncio.to_thread(calls.prepare, row) if calls.needs_io(row) else calls.prepare(row)
        if isinstance(p, RowOutcome):
            return calls.with_prior(row, p)
        started = time.time()
        try:
            result = await client.call(calls.family, **calls.call_kwargs(p))
        except DifyError as err:
            found = await asyncio.to_thread(calls.recover, p, started) if calls.may_recover(err) else None
            return calls.with_prior(row, calls.failed(p, err, found))
        except Exception as exc:
            return calls.with_prior(row, calls.crashed(p, exc))
        return calls.with_prior(row, calls.finish(p, result))

    return call_row


__all__ = [
    "FAILED",
    "Prepared",
    "RowCalls",
    "make_row_caller",
    "outcome_from_error",
    "outcome_from_result",
    "with_outputs",
]
