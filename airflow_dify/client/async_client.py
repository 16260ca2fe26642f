"""AsyncDifyClient: DifyClient's generation call as a coroutine, for the asyncio batch engine.

Same semantics as :meth:`DifyClient.call <airflow_dify.client.client.DifyClient.call>`: one
permit per attempt from the same pool (settled with the real usage), ``throttled()`` on 429,
retries under the same policy (tenacity's ``AsyncRetrying``, built once per policy and label),
streaming through the same SSE decoder and aggregators, a broken workflow stream looked up and
never re-run, one OAuth2 refresh on 401, secrets masked. What is shared lives in
:mod:`~airflow_dify.client.generation` and :mod:`~airflow_dify.client.exchange`; this module
only awaits. The sync client stays for the hook, the Test button, pre-flight and ``doctor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from airflow_dify.client.auth import DifyAuth
from airflow_dify.client.client import READ_FAILURES, DifyClient
from airflow_dify.client.core import ClientCore
from airflow_dify.client.errors import DifyError, DifyRateLimitError, DifyStreamError
from airflow_dify.client.exchange import AsyncExchange, aread_all
from airflow_dify.client.generation import (
    RUN_LOOKUP,
    AttemptBook,
    Plan,
    aggregator,
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
)
from airflow_dify.client.http1_transport import Http1Transport
from airflow_dify.client.models import DifyResult
from airflow_dify.client.responses import CallContext, json_body
from airflow_dify.client.retry import acall_with_retries
from airflow_dify.client.streaming import EventDecoder
from airflow_dify.client.transport import AsyncTransport
from airflow_dify.limits.base import (
    acquire_permit,
    report_throttled,
    settle_permit,
)

log = logging.getLogger("airflow_dify.client")


class AsyncDifyClient(ClientCore):
    """Generation calls to one Dify app as coroutines on one event loop.

    Takes :class:`~airflow_dify.client.client.DifyClient`'s parameters (see there); ``transport``
    is an :class:`~airflow_dify.client.transport.AsyncTransport` (default: the lean HTTP/1.1
    one, :class:`~airflow_dify.client.http1_transport.Http1Transport`, built from
    ``verify_ssl`` and ``pool_size``). Use it on one loop only, and :meth:`aclose` it there.
    """

    def __init__(
        self, base_url: str, auth: DifyAuth | str, *, transport: AsyncTransport | None = None, **settings: Any
    ) -> None:
        super().__init__(base_url, auth, **settings)
        self._transport = transport or Http1Transport(
            pool_size=self.settings["pool_size"], verify_ssl=self.settings["verify_ssl"]
        )
        self._exchange = AsyncExchange(
            self._transport, self.base_url, self.auth, timeout=self.timeout, user_agent=self.user_agent
        )

    @classmethod
    def twin(
        cls, client: DifyClient, *, pool_size: int | None = None, transport: AsyncTransport | None = None
    ) -> AsyncDifyClient:
        """The asyncio client with ``client``'s URL, auth, timeouts, TLS, pool and retry policy."""
        settings = dict(client.settings)
        if pool_size is not None:
            settings["pool_size"] = max(int(settings["pool_size"]), pool_size)
        return cls(client.base_url, client.auth, transport=transport, **settings)

    async def call(
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
        """:meth:`DifyClient.call <airflow_dify.client.client.DifyClient.call>`, awaited."""
        plan = plan_call(
            family,
            query=query,
            inputs=inputs,
            user=user,
            response_mode=response_mode,
            conversation_id=conversation_id,
            workflow_id=workflow_id,
        )
        return await self._generate(plan, trace_id)

    async def get_workflow_run(self, run_id: str) -> DifyResult:
        """GET /workflows/run/{id}; returned as-is (check ``.status``)."""
        return DifyResult.from_workflow(await self._run_body(run_id))

    async def aclose(self) -> None:
        """Close the transport's connections (on the loop that used them)."""
        await self._transport.close()

    def __repr__(self) -> str:
        return f"AsyncDifyClient(base_url={self.base_url!r}, auth={self.auth!r})"

    # -- internals ---------------------------------------------------------------------------------
    async def _run_body(self, run_id: str) -> dict[str, Any]:
        path = run_path(run_id)
        ctx = self._ctx(RUN_LOOKUP, hint_base_url_on_404=False)

        async def get() -> dict[str, Any]:
            return json_body(await self._exchange.send("GET", path, ctx), ctx)

        return run_record(await acall_with_retries(self.retry, ctx.endpoint, get), run_id)

    async def _generate(self, plan: Plan, trace_id: str | None) -> DifyResult:
        ctx = self._ctx(plan.path.lstrip("/"))
        headers = trace_headers(trace_id)
        book = AttemptBook(plan.body, self.completion_token_estimate)

        async def attempt() -> DifyResult:
            book.attempts += 1
            permit = await acquire_permit(self.pool, book.estimate)
            used: int | None = book.estimate
            try:
                started = time.perf_counter()
                if plan.streaming:
                    result = await self._stream_attempt(plan, headers, ctx, started)
                else:
                    resp = await self._exchange.send("POST", plan.path, ctx, body=plan.body, headers=headers)
                    result = parse_result(plan.family, json_body(resp, ctx), ms(started))
                result, used = book.succeeded(result)
                return result
            except DifyError as err:
                out, used = book.failed(err)
                if isinstance(err, DifyRateLimitError):
                    await report_throttled(self.pool)  # the whole pool slows down
                if out is err:
                    raise
                raise out from err.__cause__
            finally:
                await settle_permit(permit, used)

        return await acall_with_retries(self.retry, ctx.endpoint, attempt)

    async def _stream_attempt(
        self, plan: Plan, headers: dict[str, str] | None, ctx: CallContext, started: float
    ) -> DifyResult:
        resp = await self._exchange.stream("POST", plan.path, ctx, body=plan.body, headers=headers)
        agg = aggregator(plan, ctx)
        try:
            if not is_event_stream(resp.headers):  # a gateway answered blocking
                return parse_result(plan.family, json_body(await aread_all(resp), ctx), ms(started))
            decoder = EventDecoder()
            try:
                async with contextlib.aclosing(resp.aiter_bytes()) as chunks:
                    async for chunk in chunks:
                        if any(agg.feed(event) for event in decoder.feed(chunk)):
                            break
                    else:
                        for event in decoder.end():
                            if agg.feed(event):
                                break
            except READ_FAILURES as exc:
                raise agg.broken(exc.code) from None
            return stream_result(agg, started)
        except DifyStreamError as err:
            run_id = recoverable_run(plan, agg, err)
            if run_id is None:
                raise
            return await self._recover_run(run_id, err, ctx, started)
        finally:
            resp.close()

    async def _recover_run(
        self, run_id: str, cause: DifyStreamError, ctx: CallContext, started: float
    ) -> DifyResult:
        """The stream broke after the run started: look it up instead of paying for a second run."""
        log.warning(
            "%s (%s); looking up run %s instead of re-running it", ctx.endpoint, cause.message, run_id
        )
        status = "running"
        for poll in range(self.stream_recovery_polls):
            if poll:
                await asyncio.sleep(self.stream_recovery_interval)
            try:
                body = await self._run_body(run_id)
            except DifyError as err:
                raise unrecoverable(cause, run_id, f"looking it up failed: {err}") from None
            status = run_status(body)
            if status != "running":
                return parse_result("workflow", body, ms(started))
        raise unrecoverable(cause, run_id, f"still '{status}' after {self.stream_recovery_polls} look-ups")


__all__ = ["AsyncDifyClient"]
