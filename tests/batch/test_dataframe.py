"""The DataFrame path against a real FakeDify: same results as the SQL path, resume, redo='changed'."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_dify.batch.dataframe import FrameRows, answer_dataframe
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.rows import PromptBuilder
from airflow_dify.batch.run import run_batch
from airflow_dify.client import DifyClient
from airflow_dify.sql.table import SqlTable
from airflow_dify.testing import FakeApp, FakeDify, Fault, answer_text, make_usage, prompt_text

GENERATION_PATHS = ("/chat-messages", "/completion-messages", "/workflows/run")
RESULT_FIELDS = ["answer", "status", "prompt_tokens", "completion_tokens", "total_tokens", "currency"]


def generation_calls(fake: FakeDify) -> int:
    return sum(fake.calls(p) for p in GENERATION_PATHS)


@pytest.fixture
def client(fake_dify: FakeDify):
    with DifyClient(fake_dify.url, fake_dify.app("chat").key, pool_size=16) as c:
        yield c


def expected_hash(query: str | None, inputs: dict, family: str = "chat", app: str = "Fake Chatbot") -> str:
    """Computed independently: the family and the app's name (GET /info) are the app's identity."""
    canonical = json.dumps(
        {"app": {"family": family, "name": app}, "inputs": inputs, "query": query},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_ten_thousand_rows_match_the_sql_path_row_for_row(
    fake_dify: FakeDify, client: DifyClient, tmp_path: Path
) -> None:
    n = 10_000
    ids = np.arange(1, n + 1)
    prompts = [f"Ticket {i}: is 語 ✓ ok? " + "x" * (i % 23) for i in ids]
    langs = ["de" if i % 3 else "en" for i in ids]
    df = pd.DataFrame({"id": ids, "prompt": prompts, "lang": langs})
    kw = {"query_column": "prompt", "input_columns": {"language": "lang"}}

    out, summary = answer_dataframe(
        df, client, app_mode="chat", user="u", max_concurrency=8, chunk_size=700, **kw
    )
    assert generation_calls(fake_dify) == n
    assert summary.succeeded == n and summary.failed == 0 and summary.rows_selected == n
    assert list(df.columns) == ["id", "prompt", "lang"]  # the input frame is untouched

    # The SQL path on the same prompts, through the same runner.
    db = tmp_path / "prompts.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, prompt TEXT, lang TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", zip(ids.tolist(), prompts, langs, strict=True))
    builder = PromptBuilder(family="chat", id_column="id", **kw)

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db, check_same_thread=False)
        conn.execute(
            "PRAGMA synchronous=OFF"
        )  # a scratch file: an fsync per group commit only slows the test
        return conn

    table = SqlTable(
        connect,
        "t",
        dialect="sqlite",
        read_columns=builder.read_columns,
        current_hash=builder.current_hash,
    )
    options = BatchOptions(app_mode="chat", user="u", max_concurrency=8, chunk_size=700, **kw)
    sql_summary = run_batch(table, table, client, options)
    table.close()
    assert generation_calls(fake_dify) == 2 * n
    with sqlite3.connect(db) as conn:
        sql = pd.read_sql_query(
            f"SELECT id, {', '.join(RESULT_FIELDS)}, total_price, input_hash FROM t", conn
        )

    merged = out.merge(sql, on="id", suffixes=("_df", "_sql"), validate="one_to_one")
    assert len(merged) == n
    for col in RESULT_FIELDS + ["input_hash"]:
        assert merged[f"{col}_df"].astype(object).tolist() == merged[f"{col}_sql"].astype(object).tolist(), (
            col
        )
    assert [Decimal(p) for p in merged["total_price_sql"]] == merged["total_price_df"].tolist()
    assert all(isinstance(p, Decimal) for p in out["total_price"])
    assert sql_summary.to_dict()["total_price"] == summary.to_dict()["total_price"]
    assert sql_summary.total_tokens == summary.total_tokens == int(out["total_tokens"].sum())

    # And both equal what FakeDify computes for the prompt (answers are a pure function of it).
    row = out.iloc[41]
    inputs = {"language": row["lang"]}
    usage = make_usage(prompt_text(row["prompt"], inputs), answer_text(row["prompt"], inputs), 0)
    assert row["answer"] == answer_text(row["prompt"], inputs)
    assert row["total_price"] == Decimal(usage["total_price"])
    assert row["input_hash"] == expected_hash(row["prompt"], inputs)


def test_missing_prompts_fail_their_row_without_a_call_and_index_is_kept(
    fake_dify: FakeDify, client: DifyClient
) -> None:
    df = pd.DataFrame(
        {"prompt": ["a", None, float("nan"), "  ", "e"], "n": [1, 2, 3, 4, 5]},
        index=["r1", "r2", "r3", "r4", "r5"],
    )
    out, summary = answer_dataframe(df, client, app_mode="chat", chunk_size=2)
    assert generation_calls(fake_dify) == 2
    assert list(out.index) == list(df.index)
    assert out["status"].tolist() == ["succeeded", "failed", "failed", "failed", "succeeded"]
    assert out.loc["r2", "error"].startswith("empty_prompt: row 1: prompt (column 'prompt') is NULL")
    assert out.loc["r1", "answer"] == "Answer: a" and pd.isna(out.loc["r3", "answer"])
    assert str(out["total_tokens"].dtype) == "Int64" and str(out["answered_at"].dtype).endswith("UTC]")
    assert summary.error_codes == {"empty_prompt": 3}
    assert "status" not in df.columns


def test_resume_redo_failed_and_changed_on_a_returned_frame(fake_dify: FakeDify, client: DifyClient) -> None:
    df = pd.DataFrame({"prompt": [f"q{i}" for i in range(100)]})
    df.loc[7, "prompt"] = None
    first, _ = answer_dataframe(df, client, app_mode="chat", chunk_size=30)
    assert generation_calls(fake_dify) == 99

    fake_dify.reset()
    again, summary = answer_dataframe(first, client, app_mode="chat", redo="pending")
    assert generation_calls(fake_dify) == 0 and summary.processed == 0
    assert again["answer"].tolist() == first["answer"].tolist()

    edited = first.copy()
    edited.loc[[3, 50, 99], "prompt"] = ["new 3", "new 50", "new 99"]
    edited.loc[7, "prompt"] = "now filled"
    changed, summary = answer_dataframe(edited, client, app_mode="chat", redo="changed", chunk_size=30)
    queries = sorted(r.body["query"] for r in fake_dify.requests if r.path == "/chat-messages")
    assert queries == ["new 3", "new 50", "new 99", "now filled"]
    assert summary.succeeded == 4 and summary.rows_selected == 100
    for i in (3, 50, 99):
        assert changed.loc[i, "answer"] == f"Answer: new {i}"
        assert changed.loc[i, "input_hash"] == expected_hash(f"new {i}", {})
        assert changed.loc[i, "input_hash"] != first.loc[i, "input_hash"]
    untouched = changed.drop(index=[3, 7, 50, 99])
    assert untouched["message_id"].tolist() == first.drop(index=[3, 7, 50, 99])["message_id"].tolist()


def test_workflow_inputs_and_renamed_columns(fake_dify: FakeDify) -> None:
    df = pd.DataFrame({"q": ["x", "y"], "when": pd.to_datetime(["2026-01-02", "2026-01-03"])})
    with DifyClient(fake_dify.url, fake_dify.app("workflow").key) as wf:
        out, summary = answer_dataframe(
            df,
            wf,
            app_mode="workflow",
            input_columns={"question": "q", "day": "when"},
            result_columns={"answer": "result"},
        )
    assert summary.succeeded == 2 and "answer" not in out.columns
    body = next(r.body for r in fake_dify.requests if r.path == "/workflows/run")
    assert body["inputs"]["day"].startswith("2026-01-0")
    # One string output: the answer is that text, not {"result": ...}.
    assert out["result"][0].startswith("day=2026-01-02")


def test_sql_only_options_and_bad_frames_are_refused(client: DifyClient) -> None:
    builder = PromptBuilder(family="chat", id_column="__position__")
    rows = FrameRows(pd.DataFrame({"prompt": ["a"]}))
    rows.prepare(builder.read_columns, builder.current_hash)
    with pytest.raises(ValueError, match="where/shard"):
        rows.count_todo("failed", "x = 1", None, None)
    with pytest.raises(ValueError, match="no column"):
        answer_dataframe(pd.DataFrame({"text": ["a"]}), client, app_mode="chat")
    with pytest.raises(ValueError, match="app_mode"):
        answer_dataframe(pd.DataFrame({"prompt": ["a"]}), client, app_mode="agentic")
    with pytest.raises(ValueError, match="redo"):
        answer_dataframe(pd.DataFrame({"prompt": ["a"]}), client, app_mode="chat", redo="some")


def test_output_schema_gives_typed_frame_columns_and_keeps_bad_answers() -> None:
    def answer(query: str | None, inputs: dict) -> str:
        n = int((query or "0").split()[-1])
        return "not json" if n == 3 else json.dumps({"label": f"l{n}", "n": n, "ok": n % 2 == 0})

    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "n": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["label"],
    }
    df = pd.DataFrame({"prompt": [f"row {i}" for i in range(6)]})
    with FakeDify([FakeApp("chat", answer=answer)]) as fake, DifyClient(fake.url, fake.app("chat").key) as c:
        out, summary = answer_dataframe(df, c, app_mode="chat", output_schema=schema, max_failed_ratio=None)
        fake.reset()
        again, _ = answer_dataframe(out, c, app_mode="chat", output_schema=schema, redo="failed")
        assert fake.calls() == 1  # only the bad row is asked again
    assert summary.succeeded == 5 and summary.error_codes == {"invalid_output": 1}
    assert str(out["n"].dtype) == "Int64" and str(out["ok"].dtype) == "boolean"
    assert out["n"].tolist()[:3] == [0, 1, 2] and pd.isna(out.loc[3, "n"])
    assert out.loc[3, "answer"] == "not json" and "the answer is not JSON" in out.loc[3, "error"]
    assert out.loc[3, "total_price"] is not None  # paid for: kept
    assert again.loc[4, "label"] == "l4" and again["ok"].tolist()[:3] == [True, False, True]


def test_a_failed_re_run_never_replaces_an_answer_in_the_frame(
    fake_dify: FakeDify, client: DifyClient
) -> None:
    first, _ = answer_dataframe(pd.DataFrame({"prompt": ["a", "b", "c"]}), client, app_mode="chat")
    fake_dify.faults.add(Fault("status", status=400, code="invalid_param"))
    again, summary = answer_dataframe(first, client, app_mode="chat", redo="all", max_failed_ratio=None)
    assert summary.failed == 3
    assert again["answer"].tolist() == first["answer"].tolist() == ["Answer: a", "Answer: b", "Answer: c"]
    assert (
        again["status"].tolist() == ["succeeded"] * 3
        and again["total_price"].tolist() == first["total_price"].tolist()
    )
    assert all("invalid_param" in e for e in again["error"]) and again["attempts"].tolist() == [1, 1, 1]
