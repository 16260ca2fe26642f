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
from airflow_dify.sql.table import InvalidText, SqlTable, SqlWriteError

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
LOGGER = "airflow_dify.sql.table"


class Backend:
    def __init__(self, dialect: str, connect: Any, ph: str) -> None:
        self.dialect, self.connect, self.ph = dialect, connect, ph
        self.table = f"w_{uuid.uuid4().hex[:12]}"

    def execute(self, sql: str, params: Any = None) -> None:
        conn = self.connect()
        try:
            conn.cursor().execute(sql, params) if params is not None else conn.cursor().execute(sql)
            conn.commit()
        finally:
            conn.close()

    def records(self, sql: str) -> list[dict[str, Any]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def fetch(self, sql: str) -> list[tuple]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetchall()
        finally:
            conn.close()

    def make(self, n: int, extra_cols: str = "") -> SqlTable:
        """Table with ids 1..n, answer column present (constraints can target it), all columns added."""
        self.execute(
            f"CREATE TABLE {self.table} (id BIGINT PRIMARY KEY, prompt TEXT, answer TEXT{extra_cols})"
        )
        for i in range(1, n + 1):
            self.execute(f"INSERT INTO {self.table} (id, prompt) VALUES ({i}, 'p{i}')")
        table = SqlTable(self.connect, self.table, dialect=self.dialect, write_backoff=0.0)
        table.ensure_result_columns()
        return table


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite"
        yield Backend("sqlite", lambda: sqlite3.connect(path), "?")
        return
    import psycopg

    try:
        psycopg.connect(PG_DSN).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    backend = Backend("postgres", lambda: psycopg.connect(PG_DSN), "%s")
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
    assert value == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_failure_mid_chunk_writes_nothing_then_raises(db: Backend, caplog: pytest.LogCaptureFixture) -> None:
    table = db.make(5, extra_cols=" CHECK (answer IS NULL OR answer <> 'boom')")
    table.write_retries = 2
    chunk = [_ok(1), _ok(2), RowOutcome(row_id=3, status=SUCCEEDED, answer="boom"), _ok(4), _ok(5)]
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(SqlWriteError) as err:
        table.write_results(chunk)
    msg = str(err.value)
    assert f"table '{db.table}'" in msg and "chunk starting at id 1" in msg and "3 attempt(s)" in msg
    assert "boom" not in msg and "answer 1" not in msg  # no row values in the message
    assert err.value.__cause__ is not None
    retries = [r for r in caplog.records if "write attempt" in r.getMessage()]
    assert len(retries) == 2
    assert all("boom" not in r.getMessage() for r in retries)
    assert db.fetch(f"SELECT COUNT(*) FROM {db.table} WHERE status IS NOT NULL OR answer IS NOT NULL") == [
        (0,)
    ]
    # The connection is usable again afterwards.
    table.write_results([_ok(1), _ok(2)])
    assert table.count_todo(redo="pending") == 3


@pytest.mark.postgres
def test_value_too_long_for_varchar_on_postgres(tmp_path: Path) -> None:
    import psycopg

    db = Backend("postgres", lambda: psycopg.connect(PG_DSN), "%s")
    try:
        table = db.make(3)
        table.write_retries = 1
        with pytest.raises(SqlWriteError, match="SQLSTATE 22001") as err:
            table.write_results([_ok(1, currency="USD"), _ok(2, currency="DOLLARS-US")])
        assert "DOLLARS" not in str(err.value)
        assert db.fetch(f"SELECT COUNT(*) FROM {db.table} WHERE status IS NOT NULL") == [(0,)]
    finally:
        db.execute(f"DROP TABLE IF EXISTS {db.table}")


def test_sqlite_autocommit_connection_still_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "auto.sqlite"
    db = Backend("sqlite", lambda: sqlite3.connect(path, isolation_level=None), "?")
    table = db.make(3, extra_cols=" CHECK (answer IS NULL OR answer <> 'boom')")
    table.write_retries = 0
    with pytest.raises(SqlWriteError):
        table.write_results([_ok(1), _ok(2), RowOutcome(row_id=3, status=SUCCEEDED, answer="boom")])
    assert db.fetch(f"SELECT COUNT(*) FROM {db.table} WHERE status IS NOT NULL") == [(0,)]


def test_transient_write_failure_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
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
    assert len([r for r in caplog.records if "write attempt" in r.getMessage()]) == 2
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
