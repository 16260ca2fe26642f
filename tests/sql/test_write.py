"""SqlTable write-back against real SQLite and PostgreSQL: atomic chunks, retries, exact values.

PostgreSQL cases are marked ``postgres`` and fail (not skip) when 127.0.0.1:5432 is unreachable.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.outcome import FAILED, SUCCEEDED, RowOutcome
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.ledger import LedgerContext
from airflow_dify.sql.schema import Schema
from airflow_dify.sql.table import InvalidText, SqlTable, SqlWriteError
from tests import databases

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
LOGGER = "airflow_dify.sql.table"


def own(connect: Any, dialect: str, table: str, columns: list[str]) -> None:
    """Record ``columns`` of ``table`` as created by the provider (the registry it keeps)."""
    db = SqlConnection(connect, dialect)
    try:
        schema = Schema(db, dialect)
        schema.ensure_registry()
        schema.register(table, columns)
    finally:
        db.discard()


class Backend:
    def __init__(self, dialect: str, connect: Any, ph: str) -> None:
        self.dialect, self.connect, self.ph = dialect, connect, ph
        self.table = f"w_{uuid.uuid4().hex[:12]}"

    def execute(self, sql: str, params: Any = None) -> None:
        databases.run_sql(self.connect, sql, params)

    def records(self, sql: str) -> list[dict[str, Any]]:
        rows, names = databases.run_sql(self.connect, sql, fetch=True)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def fetch(self, sql: str) -> list[tuple]:
        return databases.fetch_all(self.connect, sql)

    def make(self, n: int, extra_cols: str = "", ledger: str | None = None) -> SqlTable:
        """Table with ids 1..n and an answer column (so constraints can target it) registered as the
        provider's own, as if it had created it; all result columns added."""
        self.execute(
            f"CREATE TABLE {self.table} (id BIGINT PRIMARY KEY, prompt TEXT, answer TEXT{extra_cols})"
        )
        for i in range(1, n + 1):
            self.execute(f"INSERT INTO {self.table} (id, prompt) VALUES ({i}, 'p{i}')")
        own(self.connect, self.dialect, self.table, ["answer"])
        table = SqlTable(
            self.connect,
            self.table,
            dialect=self.dialect,
            write_backoff=0.0,
            ledger_table=ledger,
            ledger_context=LedgerContext(dag_id="d", run_id="r", task_id="t", try_number=1),
        )
        table.ensure_result_columns()
        if table._ledger is not None:
            table._ledger.ensure()
        return table


@pytest.fixture(params=databases.params())
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "sqlite":
        path = tmp_path / "db.sqlite"
        yield Backend("sqlite", lambda: sqlite3.connect(path), "?")
        return
    databases.require(kind)
    backend = Backend(kind, lambda: databases.connect(kind), "%s")
    try:
        yield backend
    finally:
        backend.execute(f"DROP TABLE IF EXISTS {backend.table}")


def _ok(i: int, **kw: Any) -> RowOutcome:
    return RowOutcome(row_id=i, status=SUCCEEDED, answer=f"answer {i}", **kw)


def test_full_outcome_round_trips_exactly(db: Backend) -> None:
    table = db.make(3)
    when = dt.datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    text = "答案：😀 naïve — 你好 こんにちは 👩‍👩‍👧"
    prices = [Decimal("0.0000435"), Decimal("12345678901234.0123456789"), Decimal("0E-7")]
    outcomes = [
        RowOutcome(
            row_id=1,
            status=SUCCEEDED,
            answer=text,
            prompt_tokens=2**40,
            completion_tokens=7,
            total_tokens=2**40 + 7,
            total_price=prices[0],
            currency="USD",
            latency_ms=1234,
            message_id="9da23599-e713-473b-982c-4328d4f5c78a",
            conversation_id="45701982-8118-4bc5-8e9b-64562b4555f2",
            answered_at=when,
            attempts=2,
        ),
        _ok(2, total_price=prices[1]),
        RowOutcome(
            row_id=3, status=FAILED, error="400 invalid_param: bad", total_price=prices[2], attempts=3
        ),
    ]
    table.write_results(outcomes)
    rows = db.records(
        f"SELECT id, answer, status, error, prompt_tokens, completion_tokens, total_tokens, total_price, "
        "currency, latency_ms, message_id, conversation_id, answered_at, attempts "
        f"FROM {db.table} ORDER BY id"
    )
    first = rows[0]
    assert first["answer"] == text
    assert (first["status"], first["error"]) == (SUCCEEDED, None)
    assert (first["prompt_tokens"], first["completion_tokens"], first["total_tokens"]) == (
        2**40,
        7,
        2**40 + 7,
    )
    assert (first["currency"], first["latency_ms"]) == ("USD", 1234)
    assert (first["message_id"], first["conversation_id"]) == (
        outcomes[0].message_id,
        outcomes[0].conversation_id,
    )
    assert first["attempts"] == 2
    for row, price in zip(rows, prices, strict=True):
        stored = row["total_price"]
        # Exact: SQLite keeps the decimal string, PostgreSQL NUMERIC returns a Decimal.
        assert isinstance(stored, str if db.dialect == "sqlite" else Decimal)
        assert Decimal(stored) == price
    answered = first["answered_at"]
    if db.dialect == "sqlite":
        assert answered == "2024-05-01T12:30:15.123456+00:00"  # ISO-8601, normalised to UTC
        answered = dt.datetime.fromisoformat(answered)
    if db.dialect == "mysql":  # DATETIME has no zone: the provider writes naive UTC
        assert answered.tzinfo is None
        answered = answered.replace(tzinfo=dt.timezone.utc)
    assert answered == when
    assert answered.utcoffset() == dt.timedelta(0) or db.dialect == "postgres"
    assert (rows[2]["status"], rows[2]["error"]) == (FAILED, "400 invalid_param: bad")
    assert table.count_todo(redo="failed") == 1
    assert table.count_todo(redo="pending") == 0


def test_naive_answered_at_is_taken_as_utc(db: Backend) -> None:
    table = db.make(1)
    table.write_results([_ok(1, answered_at=dt.datetime(2024, 1, 2, 3, 4, 5))])
    value = db.fetch(f"SELECT answered_at FROM {db.table}")[0][0]
    if db.dialect == "sqlite":
        value = dt.datetime.fromisoformat(value)
    if db.dialect == "mysql":
        value = value.replace(tzinfo=dt.timezone.utc)
    assert value == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_one_unstorable_row_never_costs_the_others(db: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """A CHECK constraint refuses row 3: the other four answers are saved in the same write, row 3
    is stored as failed with the database's reason, and its usage and price are kept."""
    table = db.make(5, extra_cols=" CHECK (answer IS NULL OR answer <> 'boom')")
    boom = RowOutcome(row_id=3, status=SUCCEEDED, answer="boom", total_tokens=9, total_price=Decimal("0.5"))
    chunk = [_ok(1), _ok(2), boom, _ok(4), _ok(5)]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table.write_results(chunk)
    rows = {
        r["id"]: r
        for r in db.records(f"SELECT id, status, answer, error, total_tokens, total_price FROM {db.table}")
    }
    assert [rows[i]["answer"] for i in (1, 2, 4, 5)] == ["answer 1", "answer 2", "answer 4", "answer 5"]
    assert all(rows[i]["status"] == SUCCEEDED for i in (1, 2, 4, 5))
    assert rows[3]["status"] == FAILED and rows[3]["answer"] is None
    assert "could not be stored" in rows[3]["error"]
    assert rows[3]["total_tokens"] == 9 and Decimal(str(rows[3]["total_price"])) == Decimal("0.5")
    assert all("boom" not in r.getMessage() and "answer 1" not in r.getMessage() for r in caplog.records)
    assert table.unsaved == []
    # The connection is usable again afterwards.
    table.write_results([_ok(3)])
    assert table.count_todo(redo="failed") == 0


@pytest.mark.postgres
def test_value_too_long_for_varchar_on_postgres(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    db = Backend("postgres", lambda: psycopg.connect(PG_DSN), "%s")
    try:
        table = db.make(3)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            table.write_results([_ok(1, currency="USD"), _ok(2, currency="DOLLARS-US")])
        rows = {r["id"]: r for r in db.records(f"SELECT id, status, currency, error FROM {db.table}")}
        assert rows[1]["status"] == SUCCEEDED and rows[1]["currency"] == "USD"
        assert rows[2]["status"] == FAILED and "SQLSTATE 22001" in rows[2]["error"]
        assert all("DOLLARS" not in r.getMessage() for r in caplog.records)
    finally:
        db.execute(f"DROP TABLE IF EXISTS {db.table}")


@pytest.mark.postgres
def test_nul_byte_answer_is_stored_sanitised_on_postgres() -> None:
    """PostgreSQL text cannot hold NUL: the paid answer is kept without it, and the row says so."""
    import psycopg

    db = Backend("postgres", lambda: psycopg.connect(PG_DSN), "%s")
    try:
        table = db.make(3)
        table.write_results([_ok(1), RowOutcome(row_id=2, status=SUCCEEDED, answer="a\x00b\x00c"), _ok(3)])
        rows = {r["id"]: r for r in db.records(f"SELECT id, status, answer, error FROM {db.table}")}
        assert [rows[i]["status"] for i in (1, 2, 3)] == [SUCCEEDED] * 3
        assert rows[2]["answer"] == "abc" and "2 NUL character(s) removed from answer" in rows[2]["error"]
        assert rows[1]["answer"] == "answer 1" and rows[3]["answer"] == "answer 3"
    finally:
        db.execute(f"DROP TABLE IF EXISTS {db.table}")


def test_a_failed_rerun_never_replaces_an_answer(db: Backend) -> None:
    table = db.make(2)
    table.write_results([_ok(1, total_price=Decimal("0.25"), input_hash="h1"), _ok(2)])
    failed = RowOutcome(
        row_id=1, status=FAILED, error="429 rate_limit_error: quota", attempts=4, prior_status=SUCCEEDED
    )
    table.write_results([failed, RowOutcome(row_id=2, status=FAILED, error="400 bad")])
    rows = {r["id"]: r for r in db.records(f"SELECT * FROM {db.table}")}
    kept = rows[1]
    assert kept["status"] == SUCCEEDED and kept["answer"] == "answer 1" and kept["input_hash"] == "h1"
    assert Decimal(str(kept["total_price"])) == Decimal("0.25")
    assert kept["error"] == "429 rate_limit_error: quota" and kept["attempts"] == 4
    assert rows[2]["status"] == FAILED and rows[2]["answer"] is None  # no answer to keep: replaced


def test_a_rerun_answer_that_fails_its_schema_is_stored_raw_with_its_price(db: Backend) -> None:
    """The new answer was asked for and paid for: stored with its price and the reason, not dropped."""
    table = db.make(1)
    table.write_results([_ok(1, total_price=Decimal("0.25"))])
    invalid = RowOutcome(
        row_id=1,
        status=FAILED,
        answer="not json",
        error="invalid_output: row 1: the answer is not JSON",
        error_code="invalid_output",
        total_price=Decimal("0.125"),
        prior_status=SUCCEEDED,
    )
    table.write_results([invalid])
    (row,) = db.records(f"SELECT status, answer, error, total_price FROM {db.table}")
    assert row["status"] == FAILED and row["answer"] == "not json" and "not JSON" in row["error"]
    assert Decimal(str(row["total_price"])) == Decimal("0.125")


def test_sqlite_autocommit_connection_still_saves_the_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "auto.sqlite"
    db = Backend("sqlite", lambda: sqlite3.connect(path, isolation_level=None), "?")
    table = db.make(3, extra_cols=" CHECK (answer IS NULL OR answer <> 'boom')")
    table.write_results([_ok(1), _ok(2), RowOutcome(row_id=3, status=SUCCEEDED, answer="boom")])
    statuses = dict(db.fetch(f"SELECT id, status FROM {db.table}"))
    assert statuses == {1: SUCCEEDED, 2: SUCCEEDED, 3: FAILED}


def test_a_table_that_takes_no_write_at_all_raises(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    db = Backend("sqlite", lambda: sqlite3.connect(path), "?")
    table = db.make(2)
    db.execute(
        f"CREATE TRIGGER never BEFORE UPDATE ON {db.table} BEGIN SELECT RAISE(ABORT, 'read only'); END"
    )
    with pytest.raises(SqlWriteError, match="one by one too") as err:
        table.write_results([_ok(1), _ok(2)])
    assert "answer" not in str(err.value) and err.value.__cause__ is not None


def test_a_write_that_fails_once_is_written_in_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real trigger calling a real SQL function that aborts the first two UPDATE transactions.
    path = tmp_path / "flaky.sqlite"
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        return 1 if calls["n"] <= 2 else 0

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.create_function("flaky", 0, flaky)
        return conn

    db = Backend("sqlite", connect, "?")
    table = db.make(4)
    db.execute(
        f"CREATE TRIGGER flaky_t BEFORE UPDATE ON {db.table} WHEN NEW.id = 1 AND flaky() "
        "BEGIN SELECT RAISE(ABORT, 'transient'); END"
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table.write_results([_ok(1), _ok(2), _ok(3)])
    assert len([r for r in caplog.records if "one by one" in r.getMessage()]) == 1
    assert db.fetch(f"SELECT id FROM {db.table} WHERE status = 'succeeded' ORDER BY id") == [(1,), (2,), (3,)]


@pytest.mark.postgres
def test_broken_postgres_connection_is_reopened(caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    app = f"sqltable-{uuid.uuid4().hex[:8]}"
    db = Backend("postgres", lambda: psycopg.connect(PG_DSN, application_name=app), "%s")
    try:
        table = db.make(2)
        table.write_results([_ok(1)])
        pids = db.fetch(
            f"SELECT pid FROM pg_stat_activity WHERE application_name = '{app}' AND pid <> pg_backend_pid()"
        )
        assert pids, "the SqlTable connection should be visible"
        for (pid,) in pids:
            db.execute(f"SELECT pg_terminate_backend({int(pid)})")
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            table.write_results([_ok(2)])  # the first attempt hits the dead connection; the retry reconnects
        assert len([r for r in caplog.records if "write attempt" in r.getMessage()]) == 1
        assert table.count_todo(redo="pending") == 0
    finally:
        db.execute(f"DROP TABLE IF EXISTS {db.table}")


def test_unknown_ids_are_logged_not_fatal(db: Backend, caplog: pytest.LogCaptureFixture) -> None:
    table = db.make(2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table.write_results([_ok(1), _ok(99)])
    assert any("1 of 2 result rows matched no id" in r.getMessage() for r in caplog.records)
    assert table.count_todo(redo="pending") == 1
    table.write_results([])  # an empty chunk is a no-op


def test_non_utf8_text_is_flagged_per_row(tmp_path: Path) -> None:
    path = tmp_path / "bytes.sqlite"
    db = Backend("sqlite", lambda: sqlite3.connect(path), "?")
    table = db.make(3)
    # Bytes stored as TEXT that are not UTF-8 (e.g. a Latin-1 export): plain sqlite3 would raise
    # "Could not decode to UTF-8 column" and abort the whole page.
    db.execute(f"UPDATE {db.table} SET prompt = CAST(X'63616674e920ff' AS TEXT) WHERE id = 2")
    with pytest.raises(sqlite3.OperationalError, match="Could not decode"):
        db.fetch(f"SELECT prompt FROM {db.table}")
    rows = [row for chunk in table.iter_chunks(2) for row in chunk]
    assert [r["id"] for r in rows] == [1, 2, 3]
    bad = rows[1]["prompt"]
    assert isinstance(bad, InvalidText)
    assert bad.raw == b"caft\xe9 \xff"
    assert bad.message == "text is not valid UTF-8 (7 bytes, first invalid byte at offset 4)"
    assert "caf" not in repr(bad)
    assert rows[0]["prompt"] == "p1" and rows[2]["prompt"] == "p3"


def test_ledger_entries_share_the_fate_of_the_group_and_survive_a_row_that_cannot_be_stored(
    db: Backend,
) -> None:
    """A CHECK refuses row 3's answer: the group falls back to row by row. Rows 1, 2, 4 and their
    entries commit together; row 3 is stored as failed with its price, and its paid call is in the
    ledger at Dify's price; a maybe-billed retry and an unbilled refusal are recorded as such."""
    book = f"l_{uuid.uuid4().hex[:10]}"
    table = db.make(5, extra_cols=" CHECK (answer IS NULL OR answer <> 'boom')", ledger=book)
    try:
        paid = [Decimal("0.0012345"), Decimal("0.002"), Decimal("0.0031"), Decimal("0.004")]
        outcomes = [
            _ok(1, total_price=paid[0], message_id="m1", total_tokens=10),
            _ok(2, total_price=paid[1], message_id="m2", total_tokens=10, earlier_maybe_billed=1),
            RowOutcome(row_id=3, status=SUCCEEDED, answer="boom", total_price=paid[2], message_id="m3"),
            _ok(4, total_price=paid[3], message_id="m4", total_tokens=10),
            RowOutcome(row_id=5, status=FAILED, error="400 invalid_param: x", error_code="invalid_param"),
        ]
        table.write_results(outcomes)
        status = dict(db.fetch(f"SELECT id, status FROM {db.table}"))
        entries = db.records(f"SELECT row_id, message_id, total_price, outcome, error_code FROM {book}")
    finally:
        table.close()
        db.execute(f"DROP TABLE IF EXISTS {book}")
    assert status == {1: "succeeded", 2: "succeeded", 3: "failed", 4: "succeeded", 5: "failed"}
    by_row = sorted((e["row_id"], e["outcome"], e["message_id"]) for e in entries)
    assert by_row == [
        ("1", "succeeded", "m1"),
        ("2", "maybe_billed", None),
        ("2", "succeeded", "m2"),
        ("3", "succeeded", "m3"),  # the call succeeded and was paid; only storing its answer failed
        ("4", "succeeded", "m4"),
    ]
    total = sum((Decimal(str(e["total_price"])) for e in entries if e["total_price"] is not None), Decimal(0))
    assert total == sum(paid, Decimal(0))
