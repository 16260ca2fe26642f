"""What a table looks like (columns and their declared types) and which columns the provider owns.

The provider writes only to columns it created. It records each one in a registry table,
``airflow_dify_columns``, in the same database: a pre-existing ``status`` or ``answer`` column
that is not in the registry belongs to the user and is never written. A registry (rather than
column comments) works the same on every engine, including SQLite, and survives the column
being renamed back and forth by nobody but us.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.dialects import identifier_parts
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.params import Params

log = logging.getLogger(__name__)

REGISTRY = "airflow_dify_columns"


@dataclass(frozen=True)
class Columns:
    """A table's columns as the database reports them: name -> declared type (None if unknown)."""

    types: dict[str, str | None]
    case_insensitive: bool

    def find(self, name: str) -> str | None:
        """The column's name as stored, or None."""
        if name in self.types:
            return name
        if self.case_insensitive:
            lowered = name.lower()
            return next((c for c in self.types if c.lower() == lowered), None)
        return None

    def type_of(self, name: str) -> str | None:
        found = self.find(name)
        return self.types.get(found) if found is not None else None

    def other_case(self, name: str) -> str | None:
        """A column spelled like ``name`` in another case (PostgreSQL folds unquoted names)."""
        lowered = name.lower()
        return next((c for c in self.types if c.lower() == lowered and c != name), None)


class Schema:
    """Introspection on one connection: columns of tables and views, the ownership registry."""

    def __init__(self, db: SqlConnection, dialect: str) -> None:
        self.db = db
        self.dialect = dialect

    def columns(self, table: str) -> Columns | None:
        """Columns of ``table`` (``schema.name`` allowed; views too), or None when it does not exist."""
        parts = identifier_parts(table, "table", qualified=True)
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        try:
            rows = self._describe(schema, name)
        except Exception as exc:
            raise SqlTableError(f"table {table!r}: cannot be inspected ({error_brief(exc)})") from exc
        if not rows:
            return None
        insensitive = self.db.dialect.names_case_insensitive
        return Columns({str(n): (str(t) if t else None) for n, t in rows}, insensitive)

    def _describe(self, schema: str | None, name: str) -> list[tuple[Any, Any]]:
        if self.dialect == "sqlite":
            prefix = f'"{schema}".' if schema else ""
            return [(r[1], r[2]) for r in self.db.query(f'PRAGMA {prefix}table_info("{name}")')]
        if self.dialect in ("postgres", "mysql"):
            current = "current_schema()" if self.dialect == "postgres" else "DATABASE()"
            type_col = "data_type" if self.dialect == "postgres" else "column_type"
            params = Params(self.db.dialect, None)
            schema_sql = params.add(schema) if schema else current
            sql = (
                f"SELECT column_name, {type_col} FROM information_schema.columns "
                f"WHERE table_schema = {schema_sql} AND table_name = {params.add(name)} "
                "ORDER BY ordinal_position"
            )
            return [(r[0], r[1]) for r in self.db.query(sql, params.values)]
        q = self.db.dialect.quote(f"{schema}.{name}" if schema else name, "table", qualified=True)
        try:
            names = self.db.column_names(f"SELECT * FROM {q} WHERE 1=0")
        except Exception:  # noqa: BLE001 - generic engines: a failing probe means "no such table"
            return []
        return [(n, None) for n in names]

    def missing_table_message(self, table: str, setting: str = "table") -> str:
        """Why ``table`` cannot be found, with a case hint where the engine folds names."""
        parts = identifier_parts(table, setting, qualified=True)
        hint = ""
        if self.dialect == "postgres":
            lowered = ".".join(p.lower() for p in parts)
            if lowered != table and self.columns(lowered) is not None:
                hint = (
                    f"; a table {lowered!r} exists: PostgreSQL folds unquoted names to lower case when "
                    f"they are created, so pass {setting}={lowered!r}"
                )
        return f"{setting}: {table!r} does not exist or cannot be read{hint}"

    def require(self, table: str, wanted: Sequence[tuple[str, str]] = ()) -> Columns:
        """The table's columns; SqlTableError naming the table or each missing ``(setting, name)``."""
        cols = self.columns(table)
        if cols is None:
            raise SqlTableError(self.missing_table_message(table))
        missing = [(setting, name) for setting, name in wanted if cols.find(name) is None]
        if missing:
            listed = ", ".join(f"{setting}={name!r}" for setting, name in missing)
            hints = [f"{n!r} exists as {cols.other_case(n)!r}" for _, n in missing if cols.other_case(n)]
            hint = (
                f" ({'; '.join(hints)}: PostgreSQL folds unquoted names to lower case, pass them as stored)"
            )
            raise SqlTableError(f"table {table!r} has no column(s): {listed}{hint if hints else ''}")
        return cols

    def check_unique(self, table: str, q_table: str, id_column: str, q_id: str) -> None:
        """SqlTableError when the id column has NULLs or duplicates (named with an example)."""
        nulls = self.db.query(f"SELECT COUNT(*) FROM {q_table} WHERE {q_id} IS NULL")[0][0]
        groups = (
            f"SELECT {q_id} AS k FROM {q_table} WHERE {q_id} IS NOT NULL GROUP BY {q_id} HAVING COUNT(*) > 1"
        )
        dupes = self.db.query(f"SELECT COUNT(*) FROM ({groups}) d")[0][0]
        if not nulls and not dupes:
            return
        problems = [f"{nulls} row(s) with NULL id"] if nulls else []
        if dupes:
            # No MIN(): it does not exist for every key type (PostgreSQL's uuid).
            example = self.db.query(f"{groups} ORDER BY k LIMIT 1")[0][0]
            problems.append(f"{dupes} id value(s) used by more than one row (e.g. {example!r})")
        raise SqlTableError(
            f"table {table!r}: id_column {id_column!r} must be unique and non-NULL; found "
            + " and ".join(problems)
        )

    # -- ownership --------------------------------------------------------------------------------
    def _registry(self) -> str:
        return self.db.dialect.quote(REGISTRY, "registry")

    def ensure_registry(self) -> None:
        q = self._registry()
        self.db.execute_commit(
            f"CREATE TABLE IF NOT EXISTS {q} (table_name VARCHAR(200) NOT NULL, "
            "column_name VARCHAR(64) NOT NULL, created_at VARCHAR(40), PRIMARY KEY (table_name, column_name))"
        )

    def owned(self, table: str) -> set[str]:
        """Columns of ``table`` the provider created (lower case: compared case-insensitively)."""
        params = Params(self.db.dialect, None)
        sql = f"SELECT column_name FROM {self._registry()} WHERE table_name = {params.add(table)}"
        return {str(r[0]).lower() for r in self.db.query(sql, params.values)}

    def register(self, table: str, columns: Sequence[str]) -> None:
        """Record ``columns`` of ``table`` as created by the provider (repeats are ignored)."""
        if not columns:
            return
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with self.db.transaction() as cur:
            for name in columns:
                params = Params(self.db.dialect, None)
                values = f"VALUES ({params.add(table)}, {params.add(name.lower())}, {params.add(now)})"
                sql = self.db.dialect.insert_ignore(
                    self._registry(), "table_name, column_name, created_at", values
                )
                cur.execute(sql, params.values)


__all__ = ["REGISTRY", "Columns", "Schema"]
