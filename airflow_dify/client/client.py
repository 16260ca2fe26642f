"""DifyClient: the Airflow-free entry point for calling one Dify app.

Every generation attempt takes one permit from the rate-limit pool, is sent once, and settles
the tokens it really used; retries (tenacity) take new permits, so they spend from the same
budget. Workflow runs that Dify reports as failed, and broken streams, never silently re-run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from airflow_dify.client.auth import DifyAuth
from airflow_dify.client.core import ClientCore
from airflow_dify.client.errors import (
    DifyError,
    DifyRateLimitError,
    DifyResponseError,
    DifyStreamError,
    DifyTransportError,
)
from airflow_dify.client.exchange import Exchange, read_all
from airflow_dify.client.feedback import FEEDBACK_ENDPOINT, feedback_request
from airflow_dify.client.files import UPLOAD_ENDPOINT, UPLOAD_PATH, upload_failure, upload_request
from airflow_dify.client.generation import (
    RUN_LOOKUP,
    AttemptBook,
    Plan,
    aggregator,
    chat_plan,
    completion_plan,
    is_event_stream,
    ms,
    parse_result,
    plan_call,
    recoverable_run,
    run_path,
    run_record,
    run_status,
    stream_result,
    trace_headers,
    unrecoverable,
    workflow_plan,
)
from airflow_dify.client.models import AppInfo, DifyResult
from airflow_dify.client.responses import CallContext, json_body
from airflow_dify.client.retry import RetryPolicy, call_with_retries
from airflow_dify.client.streaming import iter_events
from airflow_dify.client.transport import Transport
from airflow_dify.client.urllib3_transport import Urllib3Transport
from airflow_dify.limits.base import RateLimitPool

log = logging.getLogger("airflow_dify.client")

#: What reading a stream's body can raise from the transport: the stream broke.
READ_FAILURES = (DifyTransportError, DifyResponseError)


class DifyClient(ClientCore):
    """Calls one Dify app's service API (chat, completion, workflow, info).

    :param base_url: the API base URL including ``/v1`` (e.g. ``https://api.dify.ai/v1``).
    :param auth: an :class:`ApiKeyAuth`, :class:`OAuth2ClientCredentials`, or the app key as a string.
    :param timeout: seconds, or (connect, read); blocking workflows can take minutes.
    :param verify_ssl: verify TLS certificates (only disable for a trusted internal host).
    :param pool_size: pooled connections kept per host; set it to at least the batch concurrency.
    :param retry: the :class:`RetryPolicy` (default: 5 attempts within 300 s).
    :param pool: the shared rate-limit pool; one permit per generation attempt.
    :param completion_token_estimate: tokens reserved per call before the real usage is known.
    :param stream_recovery_polls: after a workflow stream breaks, how many times to look the run up
        while it is still ``running`` (bounded; never re-runs it).
    :param transport: sends the HTTP requests (default: a :class:`Urllib3Transport` built from
        ``verify_ssl`` and ``pool_size``); closed with the client.
    """

    def __init__(
        self,
        base_url: str,
        auth: DifyAuth | str,
        *,
        timeout: float | tuple[float, float] = (10.0, 300.0),
        verify_ssl: bool = True,
        pool_size: int = 16,
        retry: RetryPolicy | None = None,
        pool: RateLimitPool | None = None,
        completion_token_estimate: int = 256,
        user_agent: str | None = None,
        stream_recovery_polls: int = 5,
        stream_recovery_interval: float = 2.0,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            auth,
            timeout=timeout,
            verify_ssl=verify_ssl,
            pool_size=pool_size,
            retry=retry,
            pool=pool,
            completion_token_estimate=completion_token_estimate,
            user_agent=user_agent,
            stream_recovery_polls=stream_recovery_polls,
            stream_recovery_interval=stream_recovery_interval,
        )
        self._transport = transport or Urllib3Transport(pool_size=pool_size, verify_ssl=verify_ssl)
        self._exchange = Exchange(
            self._transport, self.base_url, self.auth, timeout=timeout, user_agent=self.user_agent
        )

    # -- generation ------------------------------------------------------------------------------
    def chat(
        self,
        query: str,
        inputs: dict[str, Any] | None = None,
        *,
        user: str,
        conversation_id: str | None = None,  # None: every call starts a new conversation
        response_mode: str = "blocking",
        trace_id: str | None = None,
    ) -> DifyResult:
        """POST /chat-messages (chat, advanced-chat; agent apps need ``response_mode="streaming"``)."""
        return self._generate(chat_plan(query, inputs, user, conversation_id, response_mode), trace_id)

    def complete(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        user: str,
        query: str | None = None,
        response_mode: str = "blocking",
        trace_id: str | None = None,
    ) -> DifyResult:
        """POST /completion-messages (text generator apps)."""
        return self._generate(completion_plan(inputs, user, query, response_mode), trace_id)

    def run_workflow(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        user: str,
        workflow_id: str | None = None,  # runs that published version: POST /workflows/{id}/run
        response_mode: str = "blocking",
        trace_id: str | None = None,
    ) -> DifyResult:
        """POST /workflows/run (or /workflows/{id}/run); a status other than succeeded raises."""
        return self._generate(workflow_plan(inputs, user, workflow_id, response_mode), trace_id)

    def call(
        self,
        family: str,
        *,
        query: str | None = None,
        inputs: dict[str, Any] | None = None,
        user: str,
        response_mode: str | None = None,
        conversation_id: str | None = None,
        workflow_id: str | None = None,
        trace_id: str | None = None,
    ) -> DifyResult:
        """Dispatch by family ("chat" | "completion" | "workflow") or by Dify app mode.

        Streaming-only modes (agent-chat, agent) default to streaming, and so do workflows: only
        their streamed ``node_finished`` events carry the price (a blocking run has tokens only),
        and a broken stream is recovered by looking the run up, never by running it again.
        ``workflow_id`` pins a published version (a workflow's path; a chatflow's body field).
        """
        plan = plan_call(
            family,
            query=query,
            inputs=inputs,
            user=user,
            response_mode=response_mode,
            conversation_id=conversation_id,
            workflow_id=workflow_id,
        )
        return self._generate(plan, trace_id)

    # -- lookups (idempotent GETs: retried, but not drawn from the generation pool) -------------
    def info(self) -> AppInfo:
        """GET /info: the cheapest authenticated probe; tells the app's mode."""
        body = self._get("/info")
        tags = body.get("tags") or ()
        return AppInfo(
            name=str(body.get("name") or ""),
            mode=str(body.get("mode") or ""),
            description=body.get("description"),
            author_name=body.get("author_name"),
            tags=tuple(str(t) for t in tags) if isinstance(tags, (list, tuple)) else (),
        )

    def parameters(self) -> dict[str, Any]:
        """GET /parameters: the app's input form (variable names, required flags)."""
        return self._get("/parameters")

    def feedback(
        self, message_id: str, *, rating: str | None, user: str, content: str | None = None
    ) -> dict[str, Any]:
        """POST /messages/{id}/feedbacks as the ``user`` who asked; ``rating=None`` revokes. Nothing is
        billed, so it is retried (re-sent too) outside the pool; a 404 is about the message."""
        path, body = feedback_request(message_id, rating, user, content)
        ctx = self._ctx(FEEDBACK_ENDPOINT, hint_base_url_on_404=False)
        policy = replace(self.retry, resend_maybe_billed=True)
        return call_with_retries(
            policy, ctx.endpoint, lambda: json_body(self._exchange.send("POST", path, ctx, body=body), ctx)
        )

    def conversations(self, user: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """GET /conversations: the end user's conversations, most recently updated first."""
        query = urlencode({"user": user, "limit": int(limit)})
        return list(self._get(f"/conversations?{query}", self._ctx("conversations")).get("data") or [])

    def messages(self, conversation_id: str, user: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """GET /messages: the newest ``limit`` messages of a conversation, oldest first, with usage."""
        query = urlencode({"conversation_id": conversation_id, "user": user, "limit": int(limit)})
        ctx = self._ctx("messages", hint_base_url_on_404=False)
        return list(self._get(f"/messages?{query}", ctx).get("data") or [])

    def get_workflow_run(self, run_id: str) -> DifyResult:
        """GET /workflows/run/{id}; returned as-is (check ``.status``: it may be running or failed)."""
        return DifyResult.from_workflow(self._run_body(run_id))

    def _run_body(self, run_id: str) -> dict[str, Any]:
        """The run record in the blocking-response shape ``{workflow_run_id, data}``."""
        path = run_path(run_id)
        return run_record(self._get(path, self._ctx(RUN_LOOKUP, hint_base_url_on_404=False)), run_id)

    # -- internals ---------------------------------------------------------------------------------

    def _get(self, path: str, ctx: CallContext | None = None) -> dict[str, Any]:
        ctx = ctx or self._ctx(path.lstrip("/"))
        return call_with_retries(
            self.retry, ctx.endpoint, lambda: json_body(self._exchange.send("GET", path, ctx), ctx)
        )

    def _generate(self, plan: Plan, trace_id: str | None) -> DifyResult:
        ctx = self._ctx(plan.path.lstrip("/"))
        headers = trace_headers(trace_id)
        book = AttemptBook(plan.body, self.completion_token_estimate)

        def attempt() -> DifyResult:
            book.attempts += 1
            permit = self.pool.acquire(book.estimate)
            used: int | None = book.estimate
            try:
                started = time.perf_counter()
                if plan.streaming:
                    result = self._stream_attempt(plan, headers, ctx, started)
                else:
                    resp = self._exchange.send("POST", plan.path, ctx, body=plan.body, headers=headers)
                    result = parse_result(plan.family, json_body(resp, ctx), ms(started))
                result, used = book.succeeded(result)
                return result
            except DifyError as err:
                out, used = book.failed(err)
                if isinstance(err, DifyRateLimitError):
                    self.pool.throttled()  # the whole pool slows down, not just this thread
                if out is err:
                    raise
                raise out from err.__cause__
            finally:
                permit.settle(used)

        return call_with_retries(self.retry, ctx.endpoint, attempt)

    def _stream_attempt(
        self, plan: Plan, headers: dict[str, str] | None, ctx: CallContext, started: float
    ) -> DifyResult:
        resp = self._exchange.stream("POST", plan.path, ctx, body=plan.body, headers=headers)
        agg = aggregator(plan, ctx)
        try:
            if not is_event_stream(resp.headers):  # a gateway answered blocking
                return parse_result(plan.family, json_body(read_all(resp), ctx), ms(started))
            try:
                for event in iter_events(resp.iter_bytes()):
                    if agg.feed(event):
                        break
            except READ_FAILURES as exc:
                raise agg.broken(exc.code) from None
            return stream_result(agg, started)
        except DifyStreamError as err:
            run_id = recoverable_run(plan, agg, err)
            if run_id is None:
                raise
            return self._recover_run(run_id, err, ctx, started)
        finally:
            resp.close()

    def _recover_run(
        self, run_id: str, cause: DifyStreamError, ctx: CallContext, started: float
    ) -> DifyResult:
        """The stream broke after the run started: look it up instead of paying for a second run."""
        log.warning(
            "%s (%s); looking up run %s instead of re-running it", ctx.endpoint, cause.message, run_id
        )
        status = "running"
        for poll in range(self.stream_recovery_polls):
            if poll:
                time.sleep(self.stream_recovery_interval)
            try:
                body = self._run_body(run_id)
            except DifyError as err:
                raise unrecoverable(cause, run_id, f"looking it up failed: {err}") from None
            status = run_status(body)
            if status != "running":
                return parse_result("workflow", body, ms(started))
        raise unrecoverable(cause, run_id, f"still '{status}' after {self.stream_recovery_polls} look-ups")

    def close(self) -> None:
        self._transport.close()
        closer = getattr(self.auth, "close", None)
        if callable(closer):
            closer()

    def __enter__(self) -> DifyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DifyClient(base_url={self.base_url!r}, auth={self.auth!r})"

    def upload_file(self, name: str, data: bytes, mime: str, *, user: str) -> dict[str, Any]:
        """POST /files/upload (multipart) as ``user``: Dify's record of the file, whose ``id`` goes in
        ``inputs`` as ``upload_file_id`` of a call as the same user. Nothing is billed, so it is
        retried (re-sent too) outside the pool; 413/415 raise with code ``file_too_large`` /
        ``unsupported_file_type``."""
        body, content_type = upload_request(name, data, mime, user)
        ctx = self._ctx(UPLOAD_ENDPOINT)
        headers = {"Content-Type": content_type}
        policy = replace(self.retry, resend_maybe_billed=True)
        try:
            return call_with_retries(
                policy,
                ctx.endpoint,
                lambda: json_body(
                    self._exchange.send("POST", UPLOAD_PATH, ctx, body=body, headers=headers), ctx
                ),
            )
        except DifyError as err:
            raise upload_failure(err) from err.__cause__
