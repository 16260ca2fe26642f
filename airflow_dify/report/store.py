"""The daily summary table: created when missing, replaced per source table in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from airflow_dify.report.usage import DailyUsage
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.dialects import quote_identifier
from airflow_dify.sql.params import Params

#: (column, PostgreSQL/ANSI type, SQLite type). SQLite keeps dates and prices as text: exact, sortable.
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("date", "DATE", "TEXT"),
    ("table_name", "VARCHAR(200)", "TEXT"),
    ("app", "VARCHAR(200)", "TEXT"),
    ("currency", "VARCHAR(8)", "TEXT"),
    ("row_count", "BIGINT", "INTEGER"),
    ("succeeded_count", "BIGINT", "INTEGER"),
    ("failed_count", "BIGINT", "INTEGER"),
    ("prompt_tokens", "BIGINT", "INTEGER"),
    ("completion_tokens", "BIGINT", "INTEGER"),
    ("total_tokens", "BIGINT", "INTEGER"),
    ("total_price", "NUMERIC(28,10)", "TEXT"),
    ("p50_latency_ms", "INTEGER", "INTEGER"),
    ("p95_latency_ms", "INTEGER", "INTEGER"),
    ("generated_at", "TIMESTAMP WITH TIME ZONE", "TEXT"),
)
_KEY = ("date", "table_name", "app", "currency")
_VALUE_FIELDS = [c for c, _, _ in SUMMARY_COLUMNS if c != "generated_at"]


class SummaryStore:
    """Reads and writes the summary table through the report's connection."""

    def __init__(self, db: SqlConnection, table: str) -> None:
        self.db = db
        self.table = table
        self._q = quote_identifier(table, "summary_table", qualified=True, dialect=db.dialect_name)

    def _c(self, name: str) -> str:
        return quote_identifier(name, "summary column", dialect=self.db.dialect_name)

    def _sqlite(self) -> bool:
        return self.db.dialect.name == "sqlite"

    def _date(self, day: dt.date) -> Any:
        return day.isoformat() if self._sqlite() else day

    def ensure(self) -> None:
        """CREATE TABLE IF NOT EXISTS, keyed by (date, table_name, app, currency)."""
        sqlite, mysql = self._sqlite(), self.db.dialect_name == "mysql"

        def kind(ansi: str, lite: str) -> str:
            if sqlite:
                return lite
            return "DATETIME(6)" if mysql and ansi.startswith("TIMESTAMP") else ansi  # naive UTC

        cols = ", ".join(f"{self._c(name)} {kind(ansi, lite)}" for name, ansi, lite in SUMMARY_COLUMNS)
        key = ", ".join(self._c(k) for k in _KEY)
        self.db.execute_commit(f"CREATE TABLE IF NOT EXISTS {self._q} ({cols}, PRIMARY KEY ({key}))")

    def _range(self, params: Params, table: str, since: dt.date | None, until: dt.date | None) -> str:
        terms = [f"{self._c('table_name')} = {params.add(table)}"]
        if since is not None:
            terms.append(f"{self._c('date')} >= {params.add(self._date(since))}")
        if until is not None:
            terms.append(f"{self._c('date')} < {params.add(self._date(until))}")
        return " AND ".join(terms)

    def replace(
        self, table: str, days: Sequence[DailyUsage], *, since: dt.date | None, until: dt.date | None
    ) -> None:
        """Delete ``table``'s rows in the range and insert ``days``, in one transaction."""
        now = dt.datetime.now(dt.timezone.utc)
        with self.db.lock:
            conn, dialect = self.db.get()
            delete = Params(dialect, None)
            delete_sql = f"DELETE FROM {self._q} WHERE {self._range(delete, table, since, until)}"
            insert = Params(dialect, None)
            marks = ", ".join(insert.add(None) for _ in SUMMARY_COLUMNS)
            names = ", ".join(self._c(c) for c, _, _ in SUMMARY_COLUMNS)
            insert_sql = f"INSERT INTO {self._q} ({names}) VALUES ({marks})"
            rows = [self._values(d, now) for d in days]
            try:
                cur = conn.cursor()
                try:
                    cur.execute(delete_sql, delete.values)
                    if rows:
                        cur.executemany(insert_sql, rows)
                finally:
                    cur.close()
                conn.commit()
            except Exception:
                self.db.rollback_quietly()
                raise

    def _values(self, d: DailyUsage, now: dt.datetime) -> list[Any]:
        sqlite = self._sqlite()
        values: list[Any] = []
        for name in _VALUE_FIELDS:
            value = getattr(d, name)
            if name == "date":
                value = self._date(value)
            elif name == "total_price" and sqlite:
                value = format(value, "f")  # exact text; sqlite3 cannot bind Decimal
            values.append(value)
        values.append(self.db.dialect.adapt("generated_at", now))
        return values

    def load(
        self, tables: list[str] | None, *, since: dt.date | None, until: dt.date | None
    ) -> list[DailyUsage]:
        with self.db.lock:
            params = Params(self.db.dialect, None)
            terms = []
            if tables:
                listed = ", ".join(params.add(t) for t in tables)
                terms.append(f"{self._c('table_name')} IN ({listed})")
            if since is not None:
                terms.append(f"{self._c('date')} >= {params.add(self._date(since))}")
            if until is not None:
                terms.append(f"{self._c('date')} < {params.add(self._date(until))}")
            names = ", ".join(self._c(c) for c in _VALUE_FIELDS)
            where = f" WHERE {' AND '.join(terms)}" if terms else ""
            order = ", ".join(self._c(k) for k in _KEY)
            rows = self.db.query(f"SELECT {names} FROM {self._q}{where} ORDER BY {order}", params.values)
        out = []
        for row in rows:
            d = DailyUsage(**dict(zip(_VALUE_FIELDS, row, strict=True)))
            if isinstance(d.date, str):
                d.date = dt.date.fromisoformat(d.date)
            d.total_price = Decimal(str(d.total_price))
            out.append(d)
        return out


__all__ = ["SUMMARY_COLUMNS", "SummaryStore"]
