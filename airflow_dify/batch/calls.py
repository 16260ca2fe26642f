"""One row -> one Dify call -> one RowOutcome. Never raises: a failed call is a failed row."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, cast

from airflow_dify.batch.breaker import SYSTEMIC, classify, rejects_pinned_version
from airflow_dify.batch.errors import RowError
from airflow_dify.batch.file_inputs import FileInputs
from airflow_dify.batch.outputs import OutputSpec
from airflow_dify.batch.recovery import SupportsLookup, recover_chat, recover_lost, row_user
from airflow_dify.batch.rows import PromptBuilder, failed_outcome
from airflow_dify.batch.trace import for_try, row_trace_id, script_prefix
from airflow_dify.client.errors import DifyError
from airflow_dify.client.models import MODE_FAMILY, DifyResult
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


_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "total_price", "currency")


def _result_fields(result: DifyResult | None) -> dict[str, Any]:
    """What a Dify result (or the partial one of a failed run) contributes to a row's outcome."""
    if result is None:
        return {}
    fields = {name: getattr(result.usage, name) for name in _USAGE_FIELDS}
    fields["answer"] = result.answer
    fields["latency_ms"] = result.latency_ms
    fields["message_id"] = result.message_id or result.workflow_run_id
    fields["conversation_id"] = result.conversation_id
    fields["workflow_id"] = result.workflow_id
    fields["workflow_run_id"] = result.workflow_run_id
    return fields


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def outcome_from_result(
    row_id: Any, result: DifyResult, *, input_hash: str | None = None, trace_id: str | None = None
) -> RowOutcome:
    attempts = getattr(result, "attempts", 1) or 1
    return RowOutcome(
        row_id,
        SUCCEEDED,
        answered_at=_now(),
        attempts=attempts,
        input_hash=input_hash,
        trace_id=trace_id,
        earlier_maybe_billed=result.maybe_billed_retries,
        **_result_fields(result),
    )


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


def make_row_caller(
    client: SupportsCall,
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
) -> Callable[[Mapping[str, Any]], RowOutcome]:
    """``app_mode`` (Dify's own, e.g. ``agent-chat``) lets the client pick streaming where required.

    ``workflow_id`` pins a published workflow version; ``outputs`` maps the answer to columns;
    ``trace_prefix`` starts every call's X-Trace-Id (see :mod:`airflow_dify.batch.trace`);
    ``user_per_row`` asks as ``<user>-<row>`` so a chat call that timed out is looked up, not
    re-paid (see :mod:`airflow_dify.batch.recovery`); ``citations_column`` takes RAG citations;
    ``files`` puts the row's file inputs in (uploaded once, before the call and its retries).
    """
    prefix = trace_prefix or script_prefix()
    family = app_mode or builder.family
    version = {"workflow_id": workflow_id} if workflow_id else {}
    recovers = user_per_row and MODE_FAMILY.get(family) == "chat"

    def call_row(row: Mapping[str, Any]) -> RowOutcome:
        outcome = call(row)
        prior = row.get(STATUS_KEY)
        # Sinks keep a stored answer when its re-run fails: they need to know there was one.
        return outcome if prior is None else replace(outcome, prior_status=prior)

    def call(row: Mapping[str, Any]) -> RowOutcome:
        row_id = row[builder.id_column]
        try:
            prompt = builder.build(row)
        except RowError as exc:
            return failed_outcome(row_id, exc.code, str(exc))
        trace_id = row_trace_id(prefix, row_id)
        sender = row_user(user, row_id) if user_per_row else user
        taken = row.get(TAKEN_OVER_KEY)
        if recovers and isinstance(taken, TakenOver):
            found = recover_lost(cast(SupportsLookup, client), sender, taken, family=family)
            if found is not None:  # stored with the id its call carried, so its trace still finds it
                lost_trace = row_trace_id(for_try(prefix, taken.try_number), row_id)
                return finish(row_id, found, prompt.input_hash, lost_trace)
        if files is not None:
            try:
                prompt = replace(prompt, inputs=files.attach(prompt, user=sender))
            except RowError as exc:
                return failed_outcome(row_id, exc.code, str(exc))
            except DifyError as err:  # the upload failed (no generation call): classified like one
                return outcome_from_error(row_id, err, input_hash=prompt.input_hash)
        started = time.time()
        try:
            result = client.call(
                family,
                query=prompt.query,
                inputs=prompt.inputs,
                user=sender,
                response_mode=response_mode,
                trace_id=trace_id,
                **version,
            )
        except DifyError as err:
            found = None
            if recovers and err.maybe_billed:
                found = recover_chat(cast(SupportsLookup, client), sender, started, family=family)
            if found is not None:
                result = replace(found, attempts=err.attempts, maybe_billed_retries=err.maybe_billed_retries)
                return finish(row_id, result, prompt.input_hash, trace_id)
            outcome = outcome_from_error(row_id, err, input_hash=prompt.input_hash, trace_id=trace_id)
            if workflow_id and rejects_pinned_version(err):
                return replace(outcome, failure=SYSTEMIC, error_code="workflow_id_rejected")
            return outcome
        except Exception as exc:  # a bug must fail the row, not kill 999 other rows' results
            error = f"internal_error: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return RowOutcome(
                row_id,
                FAILED,
                error=error,
                error_code="internal_error",
                answered_at=_now(),
                input_hash=prompt.input_hash,
                trace_id=trace_id,
            )
        return finish(row_id, result, prompt.input_hash, trace_id)

    def finish(row_id: Any, result: DifyResult, input_hash: str | None, trace_id: str) -> RowOutcome:
        outcome = outcome_from_result(row_id, result, input_hash=input_hash, trace_id=trace_id)
        if workflow_id and outcome.workflow_id is None:
            outcome = replace(outcome, workflow_id=workflow_id)  # a chatflow's answer does not echo it
        if outputs:
            outcome = with_outputs(outcome, result, outputs)
        if citations_column:
            outcome = replace(
                outcome, outputs={**(outcome.outputs or {}), citations_column: list(result.citations)}
            )
        return outcome

    return call_row


__all__ = ["FAILED", "make_row_caller", "outcome_from_error", "outcome_from_result", "with_outputs"]
