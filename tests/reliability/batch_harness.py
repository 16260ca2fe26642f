"""A real batch (SqlTable on SQLite + DifyClient + engine) against FakeDify, and its invariants."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import run_batch as _run_batch
from airflow_dify.batch.summary import BatchSummary
from airflow_dify.client import DifyClient, RetryPolicy
from airflow_dify.client.models import MODE_FAMILY
from airflow_dify.sql.claims import ClaimOwner
from airflow_dify.sql.table import SqlTable
from airflow_dify.testing import FakeDify

#: Every run of the harness (and the crash worker) is one job: a rerun resumes a crashed run's claims.
JOB = ClaimOwner.named("reliability")
FAST_RETRY = RetryPolicy(
    max_attempts=4, max_elapsed=30, initial_wait=0.05, max_wait=2.0, resend_maybe_billed=False
)
GENERATION = {"/chat-messages", "/completion-messages", "/workflows/run"}
#: FakeDify faults that did the work (billed) even though the client saw an error.
BILLED_FAULTS = {"billed_504", "stall", "truncated", "malformed", "workflow_status", "stream_break"}


def make_table(db_path: Path, n: int, prompt: Callable[[int], Any] = lambda i: f"prompt {i} ✓") -> None:
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, prompt TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(i, prompt(i)) for i in range(1, n + 1)])
        db.commit()


class _CountingClient:
    """The real client, calling ``after_call()`` once each row's call has returned."""

    def __init__(self, client: DifyClient, after_call: Callable[[], None]) -> None:
        self._client, self._after_call = client, after_call

    def info(self) -> Any:
        return self._client.info()

    def parameters(self) -> Any:
        return self._client.parameters()

    def call(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._client.call(*args, **kwargs)
        finally:
            self._after_call()


def run_batch(
    fake: FakeDify,
    db_path: Path,
    *,
    mode: str = "chat",
    auth: Any = None,
    retry: RetryPolicy = FAST_RETRY,
    timeout: tuple[float, float] = (2.0, 5.0),
    response_mode: str | None = None,
    concurrency: int = 4,
    after_call: Callable[[], None] | None = None,
    **run_kw: Any,
) -> BatchSummary:
    """The one batch path over table ``t`` (workflows get the prompt as input ``question``)."""
    workflow = MODE_FAMILY[mode] == "workflow"
    options = BatchOptions(
        app_mode=mode,
        user="reliability",
        response_mode=response_mode,
        max_concurrency=concurrency,
        chunk_size=5,
        input_columns={"question": "prompt"} if workflow else {},
        **run_kw,
    )
    client = DifyClient(fake.url, auth or fake.app(mode).key, timeout=timeout, retry=retry)
    table = SqlTable(lambda: sqlite3.connect(db_path), "t", dialect="sqlite", owner=JOB)
    try:
        caller = client if after_call is None else _CountingClient(client, after_call)
        return _run_batch(table, table, caller, options)
    finally:
        table.close()
        client.close()


def table_rows(db_path: Path) -> dict[int, dict[str, Any]]:
    with closing(sqlite3.connect(db_path)) as db:
        db.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM t")}


def prompt_of(record: Any) -> str:
    body = record.body or {}
    return body.get("query") or (body.get("inputs") or {}).get("question")


def work_done_per_prompt(fake: FakeDify) -> Counter[str]:
    """How many times Dify did (and billed) the work for each prompt."""
    return Counter(
        prompt_of(r)
        for r in fake.requests
        if r.path in GENERATION and (r.status == 200 and r.fault is None or r.fault in BILLED_FAULTS)
    )


def assert_invariants(
    fake: FakeDify, db_path: Path, n: int, max_attempts: int = FAST_RETRY.max_attempts
) -> None:
    rows = table_rows(db_path)
    assert len(rows) == n
    lost = [i for i, r in rows.items() if r["status"] not in ("succeeded", "failed")]
    assert not lost, f"rows without an outcome: {lost}"
    for r in rows.values():  # a row is complete: success has an answer, failure has an error
        assert (r["answer"] is not None) if r["status"] == "succeeded" else (r["error"] is not None), r
    twice = {p: c for p, c in work_done_per_prompt(fake).items() if c > 1}
    assert not twice, f"paid twice: {twice}"
    sent = Counter(prompt_of(r) for r in fake.requests if r.path in GENERATION)
    assert max(sent.values()) <= max_attempts, sent.most_common(3)
