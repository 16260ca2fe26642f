"""SqlTable schema checks and reads against real SQLite and PostgreSQL.

PostgreSQL cases are marked ``postgres`` and fail (not skip) when 127.0.0.1:5432 is unreachable.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.outcome import ResultColumns, RowOutcome
from airflow_dify.sql.layout import CLAIM_FIELDS
from airflow_dify.sql.table import STATUS_KEY, SqlTable, SqlTableError
from tests import databases

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"


@dataclass
class Backend:
    dialect: str
    table: str
    connect: Any
    ph: str  # positional placeholder
    named: str  # named placeholder template, {} = name

    def execute(self, sql: str, params: Any = None, many: bool = False) -> None:
        databases.run_sql(self.connect, sql, params, many=many)

    def fetch(self, sql: str) -> list[tuple]:
        return databases.fetch_all(self.connect, sql)

    def make(self, ids: list[int], extra_cols: str = "") -> None:
        """Create the test table with an integer id, a prompt and ``extra_cols``; insert ``ids``."""
        self.execute(f"CREATE TABLE {self.table} (id BIGINT PRIMARY KEY, prompt TEXT{extra_cols})")
        self.execute(
            f"INSERT INTO {self.table} (id, prompt) VALUES ({self.ph}, {self.ph})",
            [(i, f"prompt {i}") for i in ids],
            many=True,
        )


def _backend(dialect: str, tmp_path: Path) -> Iterator[Backend]:
    table = f"t_{uuid.uuid4().hex[:12]}"
    if dialect == "sqlite":
        path = tmp_path / "db.sqlite"
        yield Backend("sqlite", table, lambda: sqlite3.connect(path), "?", ":{}")
        return
    databases.require(dialect)
    backend = Backend(dialect, table, lambda: databases.connect(dialect), "%s", "%({})s")
    try:
        yield backend
    finally:
        backend.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(params=databases.params())
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, tmp_path)


def table_for(db: Backend, **kwargs: Any) -> SqlTable:
    kwargs.setdefault("write_backoff", 0.0)
    return SqlTable(db.connect, db.table, dialect=db.dialect, **kwargs)


# -- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"table": "t; DROP TABLE x"}, "table"),
        ({"table": 'a"b'}, "table"),
        ({"table": "a.b.c"}, "table"),
        ({"table": "x" * 64}, "table"),
        ({"table": ""}, "table"),
        ({"id_column": "id--"}, "id_column"),
        ({"id_column": "1id"}, "id_column"),
        ({"read_columns": ["prompt", 'a"b']}, "read_columns[1]"),
        ({"columns": ResultColumns(answer="a b")}, "result_columns.answer"),
        ({"columns": ResultColumns(status="s); DROP TABLE t; --")}, "result_columns.status"),
    ],
)
def test_bad_identifiers_are_rejected_naming_the_setting(kwargs: dict, setting: str) -> None:
    kwargs = {"table": "t", **kwargs}
    table = kwargs.pop("table")
    with pytest.raises(SqlTableError, match="^" + re.escape(setting) + ": "):
        SqlTable(lambda: None, table, dialect="sqlite", **kwargs)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(SqlTableError, match="dialect"):
        SqlTable(lambda: None, "t", dialect="oracle")
    with pytest.raises(SqlTableError, match="read_columns"):
        SqlTable(lambda: None, "t", dialect="sqlite", read_columns="prompt")
    with pytest.raises(SqlTableError, match="result_columns"):
        SqlTable(lambda: None, "t", dialect="sqlite", columns=ResultColumns(answer="error"))
    # Accepted shapes: schema-qualified, $ and underscores, exactly 63 characters.
    SqlTable(lambda: None, "public.my_table$1", dialect="postgres", id_column="_" + "x" * 62)


def test_missing_table_and_columns_are_named(db: Backend) -> None:
    with pytest.raises(SqlTableError, match=rf"table: '{db.table}' does not exist"):
        table_for(db).validate()
    db.make([1])
    table_for(db).validate()
    with pytest.raises(SqlTableError, match=r"id_column='key'.*read_columns\[1\]='lang'"):
        table_for(db, id_column="key", read_columns=["prompt", "lang"]).validate()


def test_schema_qualified_table(db: Backend) -> None:
    db.make([1, 2])
    schema = {"sqlite": "main", "postgres": "public", "mysql": "test"}[db.dialect]
    table = SqlTable(db.connect, f"{schema}.{db.table}", dialect=db.dialect)
    table.validate()
    assert table.count_todo() == 2


def test_null_and_duplicate_ids_are_reported(db: Backend) -> None:
    db.execute(f"CREATE TABLE {db.table} (id BIGINT, prompt TEXT)")
    rows = [(1, "a"), (2, "b"), (2, "c"), (5, "d"), (5, "e"), (5, "f"), (None, "g"), (None, "h")]
    db.execute(f"INSERT INTO {db.table} VALUES ({db.ph}, {db.ph})", rows, many=True)
    with pytest.raises(SqlTableError) as err:
        table_for(db).check_unique_ids()
    msg = str(err.value)
    assert "2 row(s) with NULL id" in msg
    assert "2 id value(s) used by more than one row (e.g. 2)" in msg
    db.execute(f"DELETE FROM {db.table} WHERE id IS NULL OR prompt IN ('c', 'e', 'f')")
    table_for(db).check_unique_ids()


def test_ensure_result_columns_is_idempotent(db: Backend) -> None:
    db.make([1, 2])
    table = table_for(db)
    added = table.ensure_result_columns()
    all_names = [c for _, c in ResultColumns().items()]
    assert added == [*all_names, *CLAIM_FIELDS]
    assert table.ensure_result_columns() == []
    assert set(all_names) <= set(table.existing_columns())
    renamed = table_for(db, columns=ResultColumns.with_overrides({"answer": "reply", "status": "state"}))
    assert renamed.ensure_result_columns() == ["reply", "state"]
    if db.dialect == "postgres":
        types = dict(
            db.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_name = '{db.table}'"
            )
        )
        assert types["total_price"] == "numeric"
        assert types["answered_at"] == "timestamp with time zone"
        assert types["total_tokens"] == "bigint"
        assert types["status"] == "character varying"


@pytest.mark.parametrize(
    ("user_columns", "named"),
    [
        (", answer INTEGER", ["answer (int"]),
        (", status BOOLEAN", ["status (bool", "status (tinyint"]),  # MySQL's BOOLEAN is tinyint(1)
        (", status VARCHAR(10), error TEXT", ["status (", "error ("]),
    ],
)
def test_result_named_columns_the_provider_did_not_create_stop_the_run(
    db: Backend, user_columns: str, named: list[str]
) -> None:
    db.make([1, 2, 3], extra_cols=user_columns)
    before = db.fetch(f"SELECT * FROM {db.table} ORDER BY id")
    with pytest.raises(SqlTableError) as err:
        table_for(db).ensure_result_columns()
    message = str(err.value).lower()
    assert any(n in message for n in named) and all(f"{n.split()[0]} (" in message for n in named), message
    assert "result_columns=" in message and "results_table=" in message
    assert db.fetch(f"SELECT * FROM {db.table} ORDER BY id") == before  # nothing added or written
    assert [c.lower() for c in table_for(db).existing_columns()] == [
        "id",
        "prompt",
        *(c.split()[0].lower() for c in user_columns.strip(", ").split(", ")),
    ]


def test_columns_made_by_an_earlier_version_are_adopted(db: Backend) -> None:
    db.make([1])
    for field, name in ResultColumns().items():  # every result column, none in the registry
        kind = (
            "BIGINT"
            if field in ("prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "attempts")
            else "TEXT"
        )
        db.execute(f"ALTER TABLE {db.table} ADD COLUMN {name} {kind}")
    assert table_for(db).ensure_result_columns() == list(CLAIM_FIELDS)


# -- selection ----------------------------------------------------------------------------------


def _ids(table: SqlTable, chunk_size: int = 1000, **kwargs: Any) -> list[int]:
    return [row["id"] for chunk in table.iter_chunks(chunk_size, **kwargs) for row in chunk]


def test_without_status_column_every_row_is_todo(db: Backend) -> None:
    db.make([3, 1, 2])
    table = table_for(db)
    assert table.count_todo(redo="pending") == 3
    chunks = list(table.iter_chunks(10))
    assert chunks == [[{"id": i, "prompt": f"prompt {i}", STATUS_KEY: None} for i in (1, 2, 3)]]


def test_redo_modes(db: Backend) -> None:
    db.make(list(range(1, 7)))
    table = table_for(db)
    table.ensure_result_columns()
    db.execute(f"UPDATE {db.table} SET status = 'succeeded' WHERE id IN (1, 2)")
    db.execute(f"UPDATE {db.table} SET status = 'failed' WHERE id = 3")
    expected = {"pending": [4, 5, 6], "failed": [3, 4, 5, 6], "all": [1, 2, 3, 4, 5, 6]}
    for redo, ids in expected.items():
        assert table.count_todo(redo=redo) == len(ids), redo
        assert _ids(table, 2, redo=redo) == ids, redo
    rows = [row for chunk in table.iter_chunks(10, redo="all") for row in chunk]
    assert [r[STATUS_KEY] for r in rows[:3]] == ["succeeded", "succeeded", "failed"]
    modes = r"\['pending', 'failed', 'all', 'changed'\]"
    with pytest.raises(ValueError, match=rf"redo: 'everything' is not one of {modes}"):
        table.count_todo(redo="everything")
    with pytest.raises(ValueError, match="redo"):
        table.iter_chunks(10, redo="none")  # raised at the call, not at the first next()


def test_where_with_positional_and_named_parameters(db: Backend) -> None:
    db.make(list(range(1, 21)))
    table = table_for(db)
    table.ensure_result_columns()
    db.execute(f"UPDATE {db.table} SET status = 'failed' WHERE id IN (2, 15)")
    where = f"id BETWEEN {db.ph} AND {db.ph}"
    assert table.count_todo(where=where, where_parameters=[10, 15]) == 6
    assert _ids(table, 4, where=where, where_parameters=(10, 15), shard=(0, 5)) == [10, 15]
    named = f"id <= {db.named.format('hi')} OR prompt = {db.named.format('p')}"
    params = {"hi": 3, "p": "prompt 20"}
    assert _ids(table, 2, where=named, where_parameters=params) == [1, 2, 3, 20]
    assert _ids(table, 2, redo="pending", where=named, where_parameters=params) == [1, 3, 20]
    assert table.count_todo(where=named, where_parameters=params, shard=(0, 2)) == 2
    # The user's OR stays inside its parentheses: it cannot widen the status filter.
    db.execute(f"UPDATE {db.table} SET status = 'succeeded' WHERE id = 1")
    assert _ids(table, 5, redo="pending", where=named, where_parameters=params) == [3, 20]
    with pytest.raises(SqlTableError, match="where_parameters"):
        table.count_todo(where="id > 1", where_parameters="1")


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 1000])
def test_keyset_chunks_cover_every_row_exactly_once(db: Backend, chunk_size: int) -> None:
    ids = [i * 3 - 100 for i in range(150)]  # sparse and partly negative
    db.make(ids)
    table = table_for(db)
    table.ensure_result_columns()
    seen: list[int] = []
    for chunk in table.iter_chunks(chunk_size, redo="pending"):
        assert 1 <= len(chunk) <= chunk_size
        seen += [row["id"] for row in chunk]
        # Mark the chunk done before the next page: the status filter must not shift the pages.
        table.write_results([RowOutcome(row_id=row["id"], status="succeeded") for row in chunk])
    assert seen == sorted(ids)
    assert table.count_todo(redo="pending") == 0


def test_chunks_are_read_lazily_page_by_page(db: Backend) -> None:
    db.make(list(range(1, 11)))
    chunks = table_for(db).iter_chunks(4)
    assert [r["id"] for r in next(chunks)] == [1, 2, 3, 4]
    # Rows inserted after the first page was read still show up: pages are separate queries,
    # so the table is never loaded whole.
    db.execute(f"INSERT INTO {db.table} (id, prompt) VALUES (100, 'late'), (101, 'later')")
    db.execute(f"DELETE FROM {db.table} WHERE id = 6")
    rest = [r["id"] for chunk in chunks for r in chunk]
    assert rest == [5, 7, 8, 9, 10, 100, 101]


def test_shards_partition_the_ids_exactly(db: Backend) -> None:
    ids = list(range(-40, 41)) + [997, 1000, 123456789, -123456789]
    db.make(ids)
    table = table_for(db)
    for count in range(1, 9):
        parts = [set(_ids(table, 16, shard=(index, count))) for index in range(count)]
        assert set().union(*parts) == set(ids), count
        assert all(not (a & b) for a, b in combinations(parts, 2)), count
        for index, part in enumerate(parts):
            assert all(i % count == index for i in part)  # Python % is the true modulo
            assert table.count_todo(shard=(index, count)) == len(part)
    for bad in [(3, 3), (-1, 2), (0, 0), (1.0, 2), "0/2", (True, 2)]:
        with pytest.raises(ValueError, match="shard"):
            table.count_todo(shard=bad)


def test_emoji_and_cjk_read_back_exactly(db: Backend) -> None:
    text = "naïve café 😀👩‍👩‍👧 你好，世界 こんにちは \u200b\t\n end"
    db.make([1])
    db.execute(f"UPDATE {db.table} SET prompt = {db.ph} WHERE id = 1", [text])
    rows = next(table_for(db).iter_chunks(5))
    assert rows[0]["prompt"] == text


def test_concurrent_ensure_result_columns_both_succeed(db: Backend) -> None:
    # Shards of one batch start together and each adds the missing columns: the loser of a race
    # must see the column as present, not fail.
    db.make([1])
    tables = [table_for(db) for _ in range(3)]
    results: list[Any] = [None] * len(tables)

    def run(i: int) -> None:
        try:
            results[i] = tables[i].ensure_result_columns()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tables))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(isinstance(r, list) for r in results), results
    all_names = [c for _, c in ResultColumns().items()]
    assert sorted(sum(results, [])) == sorted([*all_names, *CLAIM_FIELDS])  # each added exactly once
    assert set(all_names) <= set(table_for(db).existing_columns())


def _traced_prompts(path: Path, rows: int) -> tuple[Any, list[str]]:
    """A SQLite ``prompts`` table of ``rows`` rows, and a connect() whose statements are recorded."""
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE prompts (id INTEGER PRIMARY KEY, prompt TEXT)")
        setup.executemany("INSERT INTO prompts VALUES (?, ?)", [(i, f"p{i}") for i in range(1, rows + 1)])
    setup.close()
    statements: list[str] = []

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.set_trace_callback(statements.append)
        return conn

    return connect, statements


def test_a_fresh_table_gets_all_its_result_columns_in_one_commit(tmp_path: Path) -> None:
    """A first run used to pay two commits (two fsyncs on SQLite) and a schema query per added
    column: ~35 ms before the first call on a fresh SQLite table, more round trips on a server."""
    connect, statements = _traced_prompts(tmp_path / "fresh.db", rows=0)
    table = SqlTable(connect, "prompts", dialect="sqlite")
    try:
        added = table.ensure_result_columns()
        wanted = [c for _, c in ResultColumns().items()] + list(CLAIM_FIELDS)
        assert sorted(added) == sorted(wanted)
        assert set(wanted) <= set(table.existing_columns())
        commits = [s for s in statements if s.strip().upper() == "COMMIT"]
        assert len(commits) <= 3, commits  # the registry table, its rows, then every ALTER at once
        assert len([s for s in statements if "table_info" in s]) <= 3
    finally:
        table.close()


def test_a_column_added_by_another_run_meanwhile_is_not_added_twice(db: Backend) -> None:
    """Between our look at the table and our ALTERs another run adds one of the columns: the
    all-at-once transaction fails and rolls back whole, and the columns are then added one by one,
    the other run's left as it is (each column exists once, the run goes on)."""
    db.make([1])
    table = table_for(db)
    store = table._store
    real_columns = store.schema.columns
    calls = {"n": 0}

    def columns_then_race(name: str) -> Any:
        found = real_columns(name)
        calls["n"] += 1
        if calls["n"] == 1:  # the one look ensure takes: the other run adds "answer" right after
            other = table_for(db)
            other._store.schema.register(db.table, ["answer"])
            db.execute(f"ALTER TABLE {db.table} ADD COLUMN answer TEXT")
            other.close()
        return found

    store.schema.columns = columns_then_race  # type: ignore[method-assign]
    try:
        added = table.ensure_result_columns()
    finally:
        store.schema.columns = real_columns  # type: ignore[method-assign]
    wanted = [c for _, c in ResultColumns().items()] + list(CLAIM_FIELDS)
    assert calls["n"] > 2  # the race happened where it was meant to
    assert "answer" not in added
    assert sorted(added) == sorted(c for c in wanted if c != "answer")
    existing = [c.lower() for c in table.existing_columns()]
    assert all(existing.count(c) == 1 for c in wanted)
    table.write_results([RowOutcome(row_id=1, status="succeeded", answer="kept")])
    assert db.fetch(f"SELECT answer FROM {db.table} WHERE id = 1") == [("kept",)]
    table.close()


@pytest.mark.postgres
def test_generic_dialect_uses_the_driver_paramstyle(tmp_path: Path) -> None:
    # psycopg declares paramstyle "pyformat": the generic dialect must find it and double its %.
    for db in _backend("postgres", tmp_path):
        db.make(list(range(-5, 6)))
        table = table_for(db)
        generic = SqlTable(db.connect, db.table, dialect="generic")
        assert generic.ensure_result_columns()  # ANSI types
        sql = f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{db.table}'"
        assert dict(db.fetch(sql))["answered_at"] == "timestamp without time zone"
        ids = _ids(generic, 3, shard=(1, 2), where="id <> %(x)s", where_parameters={"x": 3})
        assert ids == [-5, -3, -1, 1, 5]
        generic.write_results([RowOutcome(row_id=1, status="failed")])
        assert table.count_todo(redo="pending") == 10


@pytest.mark.parametrize("claims", [False, True])
def test_later_pages_ask_the_schema_nothing(tmp_path: Path, claims: bool) -> None:
    """The columns a page needs were found once; no page pays a schema query again (on
    PostgreSQL and MySQL each one is a round trip to information_schema)."""
    connect, statements = _traced_prompts(tmp_path / "pages.db", rows=50)
    table = SqlTable(connect, "prompts", dialect="sqlite", claims=claims)
    try:
        table.ensure_result_columns()
        chunks = table.iter_chunks(5)
        assert len(next(chunks)) == 5
        statements.clear()
        assert sum(len(chunk) for chunk in chunks) == 45
        assert len([s for s in statements if s.startswith("SELECT t.")]) == 10  # 9 pages, then the end
        assert [s for s in statements if "table_info" in s] == []
    finally:
        table.close()
