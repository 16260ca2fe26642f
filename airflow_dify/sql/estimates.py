"""Pilot estimates kept next to the usage ledger, so a report can put each projection beside what
the batch that followed really spent (the ledger entries of the same DAG run)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.params import Params
from airflow_dify.sql.schema import Schema

DEFAULT_ESTIMATES_TABLE = "dify_estimates"

#: Column -> (PostgreSQL, MySQL, SQLite) type.
_COLUMNS: dict[str, tuple[str, str, str]] = {
    "estimate_id": ("VARCHAR(32) PRIMARY KEY", "VARCHAR(32) PRIMARY KEY", "TEXT PRIMARY KEY"),
    "recorded_at": ("TIMESTAMP WITH TIME ZONE", "DATETIME(6)", "TEXT"),
    "dag_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "run_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "task_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "source_table": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "sampled": ("BIGINT", "BIGINT", "INTEGER"),
    "pending": ("BIGINT", "BIGINT", "INTEGER"),
    "projected_tokens": ("BIGINT", "BIGINT", "INTEGER"),
    "projected_price": ("NUMERIC(24,10)", "DECIMAL(24,10)", "TEXT"),
    "low": ("NUMERIC(24,10)", "DECIMAL(24,10)", "TEXT"),
    "high": ("NUMERIC(24,10)", "DECIMAL(24,10)", "TEXT"),
    "currency": ("VARCHAR(8)", "VARCHAR(8)", "TEXT"),
    "model": ("VARCHAR(16)", "VARCHAR(16)", "TEXT"),
    "confidence": ("DOUBLE PRECISION", "DOUBLE", "REAL"),
}
_INDEX = {"postgres": 0, "mysql": 1, "sqlite": 2}


@dataclass(frozen=True)
class StoredEstimate:
    """One pilot's projection for the rest of its table (prices exact)."""

    dag_id: str
    run_id: str
    task_id: str
    source_table: str
    projected_price: Decimal
    low: Decimal
    high: Decimal
    currency: str


class EstimateStore:
    """Appends and reads pilot estimates on one connection (the ledger's)."""

    def __init__(self, db: SqlConnection, table: str = DEFAULT_ESTIMATES_TABLE) -> None:
        self.db, self.table = db, table
        self.q_table = db.dialect.quote(table, "estimates_table", qualified=True)

    def ensure(self) -> None:
        index = _INDEX.get(self.db.dialect.name, 0)
        defs = ", ".join(f"{name} {types[index]}" for name, types in _COLUMNS.items())
        try:
            self.db.execute_commit(f"CREATE TABLE IF NOT EXISTS {self.q_table} ({defs})")
        except Exception as exc:
            brief = error_brief(exc)
            raise SqlTableError(f"estimates table {self.table!r}: cannot be created ({brief})") from exc

    def record(self, who: Mapping[str, Any], estimate: Mapping[str, Any]) -> None:
        """Append one estimate: ``who`` has dag_id, run_id, task_id, source_table; ``estimate`` is
        the estimate operator's XCom (prices as decimal strings)."""
        self.ensure()
        values = {
            "estimate_id": uuid.uuid4().hex,
            "recorded_at": dt.datetime.now(dt.timezone.utc),
            **{k: who.get(k) for k in ("dag_id", "run_id", "task_id", "source_table")},
            **{k: estimate.get(k) for k in ("sampled", "pending", "projected_tokens", "currency", "model")},
            "confidence": estimate.get("confidence"),
        }
        for name in ("projected_price", "low", "high"):
            raw = estimate.get(name)
            values[name] = None if raw is None else Decimal(str(raw))
        params = Params(self.db.dialect, None)
        adapt = self.db.dialect.adapt
        marks = ", ".join(params.add(adapt(name, values.get(name))) for name in _COLUMNS)
        self.db.execute_commit(
            f"INSERT INTO {self.q_table} ({', '.join(_COLUMNS)}) VALUES ({marks})", params.values
        )

    def load(self, limit: int = 20) -> list[StoredEstimate]:
        """The newest ``limit`` estimates with a price, oldest first; [] when none was recorded."""
        if Schema(self.db, self.db.dialect.name).columns(self.table) is None:
            return []
        params = Params(self.db.dialect, None)
        rows = self.db.query(
            f"SELECT dag_id, run_id, task_id, source_table, projected_price, low, high, currency "
            f"FROM {self.q_table} WHERE projected_price IS NOT NULL ORDER BY recorded_at DESC "
            f"LIMIT {params.add(int(limit))}",
            params.values,
        )
        out = [
            StoredEstimate(
                dag_id=r[0],
                run_id=r[1],
                task_id=r[2],
                source_table=r[3],
                projected_price=Decimal(str(r[4])),
                low=Decimal(str(r[5])),
                high=Decimal(str(r[6])),
                currency=r[7] or "",
            )
            for r in rows
        ]
        return out[::-1]


__all__ = ["DEFAULT_ESTIMATES_TABLE", "EstimateStore", "StoredEstimate"]
