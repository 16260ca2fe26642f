"""Row claims on real SQLite, PostgreSQL and MySQL tables: overlapping runs never get the same row.

Each "run" here is a SqlTable with its own connection and owner, reading pages and writing
results the way the engine does; the claims are what keeps them apart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.outcome import SUCCEEDED, RowOutcome
from airflow_dify.sql.claims import ClaimOwner
from airflow_dify.sql.table import SqlTable
from tests import databases


class Db:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "claims.sqlite"
        self.table = f"c_{uuid.uuid4().hex[:10]}"
        self.ph = "?" if kind == "sqlite" else "%s"

    def connect(self) -> Any:
        if self.kind == "sqlite":
            import sqlite3

            return sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        return databases.connect(self.kind)

    def execute(self, sql: str, rows: list[tuple] | None = None) -> None:
        databases.run_sql(self.connect, sql, rows, many=rows is not None)

    def fetch(self, sql: str) -> list[tuple]:
        return databases.fetch_all(self.connect, sql)

    def make(self, n: int, id_type: str = "BIGINT") -> None:
        self.execute(f"CREATE TABLE {self.table} (id {id_type} PRIMARY KEY, prompt TEXT)")
        self.execute(
            f"INSERT INTO {self.table} (id, prompt) VALUES ({self.ph}, {self.ph})",
            [(i, f"p{i}") for i in range(1, n + 1)],
        )

    def run(self, owner: ClaimOwner | None = None, **kw: Any) -> SqlTable:
        table = SqlTable(self.connect, self.table, dialect=self.kind, owner=owner, write_backoff=0.0, **kw)
        table.prepare(["prompt"], lambda row: None)
        return table


@pytest.fixture(params=databases.params())
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    databases.require(request.param)
    d = Db(request.param, tmp_path)
    try:
        yield d
    finally:
        if d.kind != "sqlite":
            d.execute(f"DROP TABLE IF EXISTS {d.table}")


def _answer(table: SqlTable, taken: list[Any], stop_after: int | None = None, pause: float = 0.0) -> None:
    """Read pages, 'call' each row (record it) and write its result, like the engine."""
    for page in table.iter_chunks(7):
        for row in page:
            if stop_after is not None and len(taken) >= stop_after:
                return
            taken.append(row["id"])
            time.sleep(pause)
        table.write_results([RowOutcome(row_id=r["id"], status=SUCCEEDED, answer="a") for r in page])


def test_two_runs_at_once_share_the_rows_exactly(db: Db) -> None:
    db.make(200)
    runs = [db.run(), db.run()]
    taken: list[list[Any]] = [[], []]
    threads = [
        threading.Thread(target=_answer, args=(runs[i], taken[i]), kwargs={"pause": 0.001}) for i in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    both = Counter(taken[0] + taken[1])
    assert sorted(both) == list(range(1, 201)) and max(both.values()) == 1, both.most_common(3)
    assert all(taken), "each run should have done part of the table"
    assert runs[0].skipped_claimed + runs[1].skipped_claimed > 0  # they met on a page at least once
    assert db.fetch(f"SELECT COUNT(*) FROM {db.table} WHERE status = 'succeeded' AND claimed_by IS NULL") == [
        (200,)
    ]
    for r in runs:
        r.close()


def test_a_crashed_runs_claims_block_others_until_the_lease_ends(db: Db) -> None:
    db.make(30)
    crashed = db.run(lease_seconds=1.0)
    taken: list[Any] = []
    _answer(crashed, taken, stop_after=10)  # 7 written, then 3 claimed in the second page, never written
    other = db.run(lease_seconds=1.0)
    first = [r["id"] for page in other.iter_chunks(100) for r in page]
    assert first and not set(first) & set(taken)
    held = {8, 9, 10, 11, 12, 13, 14}  # the crashed run's second page
    assert not held & set(first) and other.skipped_claimed == len(held)
    time.sleep(1.2)  # the lease ends: nobody renews a crashed run's claims
    late = db.run(lease_seconds=1.0)
    assert {r["id"] for page in late.iter_chunks(100) for r in page} >= held


def test_the_next_try_of_the_same_task_takes_over_at_once(db: Db) -> None:
    db.make(20)
    first_try = ClaimOwner.for_task("dag", "task", "run-1", -1, 1)
    crashed = db.run(owner=first_try)
    taken: list[Any] = []
    _answer(crashed, taken, stop_after=10)
    retry = db.run(owner=ClaimOwner.for_task("dag", "task", "run-1", -1, 2))
    again = [r["id"] for page in retry.iter_chunks(100) for r in page]
    assert sorted(again) == list(range(8, 21)) and retry.skipped_claimed == 0
    other_run = db.run(owner=ClaimOwner.for_task("dag", "task", "run-2", -1, 1))
    assert [r for page in other_run.iter_chunks(100) for r in page] == []
    assert other_run.skipped_claimed == 13  # now held by the retry


def test_heartbeat_keeps_a_slow_runs_claims(db: Db) -> None:
    db.make(10)
    slow = db.run(lease_seconds=0.9)
    pages = slow.iter_chunks(10)
    mine = [r["id"] for r in next(pages)]
    for _ in range(6):  # 1.8 s: twice the lease, renewed every third of it
        time.sleep(0.3)
        slow.heartbeat()
    other = db.run(lease_seconds=0.9)
    assert [r for page in other.iter_chunks(10) for r in page] == [] and other.skipped_claimed == len(mine)
    slow.close()  # releases what it never wrote
    assert len([r for page in db.run().iter_chunks(10) for r in page]) == 10


@pytest.mark.parametrize("kind", databases.params(sqlite=False))
def test_text_and_uuid_ids_page_claim_and_shard(kind: str, tmp_path: Path) -> None:
    databases.require(kind)
    d = Db(kind, tmp_path)
    id_type = "UUID" if kind == "postgres" else "CHAR(36)"
    d.execute(f"CREATE TABLE {d.table} (id {id_type} PRIMARY KEY, prompt TEXT)")
    ids = sorted(str(uuid.uuid4()) for _ in range(60))
    d.execute(f"INSERT INTO {d.table} (id, prompt) VALUES ({d.ph}, {d.ph})", [(i, f"p{i}") for i in ids])
    try:
        job = ClaimOwner.named("uuid job")  # each run takes over the claims the last one left
        seen = [str(r["id"]) for page in d.run(job).iter_chunks(7) for r in page]
        assert sorted(seen) == ids and len(seen) == 60
        shards = [
            [str(r["id"]) for page in d.run(job).iter_chunks(9, redo="all", shard=(i, 3)) for r in page]
            for i in range(3)
        ]
        assert sorted(sum(shards, [])) == ids and all(shards)
    finally:
        d.execute(f"DROP TABLE IF EXISTS {d.table}")


def test_a_schema_query_inside_the_claim_transaction_does_not_end_it(tmp_path: Path) -> None:
    """The claim transaction holds SQLite's write lock from its page read to its UPDATE; a query
    made inside it (the status column lookup) once rolled it back, so two runs could read and
    claim the same page (a row asked twice)."""
    import sqlite3

    from airflow_dify.sql.connection import SqlConnection

    path = tmp_path / "tx.sqlite"
    db = SqlConnection(lambda: sqlite3.connect(path, check_same_thread=False), "sqlite")
    db.execute_commit("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    try:
        with db.transaction() as cur:
            db.query('PRAGMA table_info("t")')
            assert cur.connection.in_transaction
            other = sqlite3.connect(path, timeout=0.05)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        db.discard()
