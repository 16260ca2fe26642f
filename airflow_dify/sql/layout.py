"""Where results live: columns the provider adds to the prompts table, or a results table.

Both are checked before the first call: a result-named column the provider did not create, or one
whose type cannot hold what will be written, stops the run with the two ways out. A results table
is created keyed by the source id (same type, primary key) and seeded with the ids the run may
select, so selecting, claiming and writing work the same as in place; the source stays read only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from airflow_dify.outcome import ResultColumns
from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.dialects import type_holds
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.output_types import OutputColumn, output_holds, output_type
from airflow_dify.sql.params import Params
from airflow_dify.sql.schema import Columns, Schema

log = logging.getLogger("airflow_dify.sql.table")
CLAIM_FIELDS = ("claimed_by", "claimed_until")
#: Result columns newer than the ownership registry: a table an earlier version answered lacks them.
ADDED_SINCE_REGISTRY = frozenset({"workflow_id", "trace_id"})


@dataclass(frozen=True)
class TableNames:
    """One batch's table and column names, as given and quoted for its dialect."""

    table: str
    results_table: str | None
    id_column: str
    columns: ResultColumns
    q_table: str
    q_store: str
    q_id: str
    q_result: dict[str, str]
    q_claim: dict[str, str]
    #: Typed columns answers are mapped into (see batch/outputs.py).
    outputs: tuple[OutputColumn, ...] = ()

    @property
    def store(self) -> str:
        return self.results_table or self.table

    def with_outputs(self, outputs: tuple[OutputColumn, ...]) -> TableNames:
        return replace(self, outputs=outputs)

    def wanted(self, claims: bool) -> list[tuple[str, str]]:
        """(field, column name) of every column the store needs; outputs are ``output:<name>``."""
        out = list(self.columns.items())
        out += [(f, f) for f in CLAIM_FIELDS] if claims else []
        return out + [(o.field, o.name) for o in self.outputs]

    def _output(self, field: str) -> OutputColumn | None:
        return next((o for o in self.outputs if o.field == field), None)

    def quoted(self, field: str) -> str:
        output = self._output(field)
        if output is not None:
            return output.quoted
        return self.q_claim[field] if field in CLAIM_FIELDS else self.q_result[field]

    def column_type(self, field: str, dialect: str, types: dict[str, str]) -> str:
        """The type a created column gets: the result field's, or the output's JSON type's."""
        output = self._output(field)
        return output_type(dialect, output.kind) if output is not None else types[field]

    def holds(self, field: str, declared: str | None) -> bool:
        """Whether an existing column of type ``declared`` can hold what ``field`` writes."""
        output = self._output(field)
        return output_holds(output.kind, declared) if output is not None else type_holds(field, declared)


class ResultStore:
    """The table that holds results and claims, made ready and kept honest.

    :param claims: whether the claim columns belong to the store.
    """

    def __init__(self, db: SqlConnection, schema: Schema, names: TableNames, claims: bool) -> None:
        self.db, self.schema, self.names, self.claims = db, schema, names, claims
        self._seeded: set[str] = set()
        #: Columns seen to exist: a column the batch needs is not dropped under it, so each page's
        #: check costs no schema query (one round trip per page on PostgreSQL and MySQL).
        self._present: set[str] = set()

    # -- what is there --------------------------------------------------------------------------
    def _columns(self) -> Columns | None:
        return self.schema.columns(self.names.store)

    def has(self, field: str) -> bool:
        name = field if field in CLAIM_FIELDS else getattr(self.names.columns, field)
        if name in self._present:
            return True
        cols = self._columns()
        found = cols is not None and cols.find(name) is not None
        if found:
            self._present.add(name)
        return found

    def has_claims(self) -> bool:
        cols = self._columns()
        return cols is not None and all(cols.find(f) is not None for f in CLAIM_FIELDS)

    def status_column(self) -> str | None:
        """The quoted status column, or None before it exists (every row is then to do)."""
        return self.names.q_result["status"] if self.has("status") else None

    # -- making it ready ----------------------------------------------------------------------
    def ensure(self) -> list[str]:
        """Columns or table created now (names); raises SqlTableError before any call otherwise."""
        self.schema.ensure_registry()
        if self.names.results_table is not None and self._columns() is None:
            return self._create_results_table()
        return self._ensure_columns()

    def _ensure_columns(self) -> list[str]:
        names = self.names
        with self.db.lock:
            cols = self._columns()
            if cols is None:
                raise SqlTableError(self.schema.missing_table_message(names.store, self._setting()))
            wanted = names.wanted(self.claims)
            owned = self.schema.owned(names.store)  # read after the columns: see _add_missing
            found_as = {c: cols.find(c) for _, c in wanted}
            present = [(f, c, found) for f, c in wanted if (found := found_as[c]) is not None]
            foreign = [(f, c, found) for f, c, found in present if found.lower() not in owned]
            if foreign and self._adoptable(cols, owned):
                log.info("table %s: adopting the result columns an earlier version created", names.store)
                self.schema.register(names.store, [found for _, _, found in present])
                foreign = []
            self._refuse(cols, foreign, [(f, found) for f, _, found in present])
            added = self._add_missing([(f, c) for f, c in wanted if found_as[c] is None])
        if added:
            log.info("table %s: added result columns %s", names.store, added)
        return added

    def _setting(self) -> str:
        return "results_table" if self.names.results_table else "table"

    def _adoptable(self, cols: Columns, owned: set[str]) -> bool:
        """Every result column exists and none is registered: made by a version before the registry."""
        columns = self.names.columns
        found = [cols.find(c) for f, c in columns.items() if f not in ADDED_SINCE_REGISTRY]
        return not owned and all(f is not None for f in found)

    def _refuse(
        self, cols: Columns, foreign: list[tuple[str, str, str]], present: list[tuple[str, str]]
    ) -> None:
        store = self.names.store
        if foreign:
            listed = ", ".join(f"{found} ({cols.type_of(found) or 'untyped'})" for _, _, found in foreign)
            renames = {f: f"dify_{c}" for f, c, _ in foreign if f not in CLAIM_FIELDS and ":" not in f}
            outputs = {f.split(":", 1)[1]: f"dify_{c}" for f, c, _ in foreign if f.startswith("output:")}
            how = f"result_columns={renames}" if renames else ""
            how += (" / " if how else "") + (f"output_columns mapping to {outputs}" if outputs else "")
            raise SqlTableError(
                f"table {store!r} already has column(s) the provider did not create: {listed}. It writes "
                f"only to columns it created, so nothing was called or written. Either rename the "
                f"columns ({how or 'result_columns='}) or write the results to a table of their own "
                f"(results_table={store.split('.')[-1] + '_dify'!r})."
            )
        wrong = [(f, found) for f, found in present if not self.names.holds(f, cols.type_of(found))]
        if wrong:
            listed = ", ".join(f"{found} is {cols.type_of(found)}" for _, found in wrong)
            raise SqlTableError(
                f"table {store!r}: column(s) cannot hold what the provider writes: {listed}. Nothing was "
                "called or written; drop or retype them, or use result_columns= / results_table=."
            )

    def _add_missing(self, missing: list[tuple[str, str]]) -> list[str]:
        """Create the ``missing`` (field, column) pairs, seen absent by the caller's one look."""
        names = self.names
        if not missing:
            return []
        # Registered before they exist: a concurrent run that sees a column sees it as ours.
        self.schema.register(names.store, [c for _, c in missing])
        if self.db.dialect.transactional_ddl and len(missing) > 1:
            try:  # one commit (one fsync on SQLite, one round trip each on PostgreSQL) for them all
                with self.db.transaction() as cur:
                    for field, _ in missing:
                        cur.execute(self._add_sql(field))
                return [c for _, c in missing]
            except Exception:  # noqa: BLE001 - rolled back whole; column by column says which and why
                log.debug("adding %d result columns at once failed; adding them one by one", len(missing))
        return self._add_one_by_one(missing)

    def _add_one_by_one(self, missing: list[tuple[str, str]]) -> list[str]:
        added: list[str] = []
        for field, name in missing:
            cols = self._columns()
            if cols is not None and cols.find(name) is not None:
                continue  # another run added it meanwhile
            try:
                self.db.execute_commit(self._add_sql(field))
                added.append(name)
            except Exception as exc:
                again = self._columns()
                if again is None or again.find(name) is None:  # not another task's concurrent add
                    raise SqlTableError(
                        f"table {self.names.store!r}: cannot add result column {name!r} ({error_brief(exc)})"
                    ) from exc
        return added

    def _add_sql(self, field: str) -> str:
        names, dialect = self.names, self.db.dialect
        kind = names.column_type(field, dialect.name, dialect.column_types)
        return f"ALTER TABLE {names.q_store} ADD COLUMN {names.quoted(field)} {kind}"

    def _create_results_table(self) -> list[str]:
        names, dialect = self.names, self.db.dialect
        source = self.schema.columns(names.table)
        if source is None:
            raise SqlTableError(self.schema.missing_table_message(names.table))
        id_type = key_type(self.db.dialect.name, source.type_of(names.id_column))
        wanted = names.wanted(self.claims)
        defs = [f"{names.q_id} {id_type} NOT NULL PRIMARY KEY"]
        defs += [
            f"{names.quoted(f)} {names.column_type(f, dialect.name, dialect.column_types)}" for f, _ in wanted
        ]
        try:
            self.db.execute_commit(f"CREATE TABLE IF NOT EXISTS {names.q_store} ({', '.join(defs)})")
        except Exception as exc:
            raise SqlTableError(
                f"results_table {names.store!r}: cannot be created ({error_brief(exc)})"
            ) from exc
        created = [c for _, c in wanted]
        self.schema.register(names.store, [names.id_column, *created])
        log.info("created results table %s for %s", names.store, names.table)
        return created

    def seed(self, where: str | None, where_parameters: Any) -> None:
        """Results table: add a row for every source id the selection may reach (once per filter)."""
        names = self.names
        if names.results_table is None or not self.has("status"):
            return
        key = repr((where, where_parameters))
        if key in self._seeded:
            return
        params = Params(self.db.dialect, where_parameters)
        inner = f"SELECT * FROM {names.q_table}"
        if where is not None:
            inner += f" WHERE ({where})"
            params.add_user()
        i = names.q_id
        select = (
            f"SELECT s.{i} FROM ({inner}) s WHERE s.{i} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {names.q_store} r WHERE r.{i} = s.{i})"
        )
        added = self.db.execute_commit(self.db.dialect.insert_ignore(names.q_store, i, select), params.values)
        self._seeded.add(key)
        if added > 0:
            log.info("results table %s: %s new source row(s)", names.store, f"{added:,}")


def key_type(dialect: str, declared: str | None) -> str:
    """A primary-key column type for the results table that holds the source id's values."""
    text = (declared or "").strip()
    lowered = text.lower()
    if dialect == "postgres":
        if lowered in ("character varying", "character", "user-defined", "array", ""):
            return "TEXT"
        return text.upper()
    if dialect == "mysql":
        if re.search(r"text|blob", lowered) or not lowered:
            return "VARCHAR(255)"  # MySQL cannot index TEXT without a length
        return text
    if dialect == "sqlite":
        return text  # an untyped key stays untyped
    return text or "VARCHAR(255)"


__all__ = ["CLAIM_FIELDS", "ResultStore", "TableNames", "key_type"]
