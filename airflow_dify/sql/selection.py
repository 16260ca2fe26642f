"""Which rows a run selects, as SQL: redo modes, the user's ``where``, shards, keyset pages.

Two layouts share the same queries. In place, the prompts table ``t`` also holds the results.
With a results table, ``t`` is the results table (keyed by the source id) joined to the source
``s``; the user's ``where`` is applied inside ``(SELECT * FROM source WHERE ...) s`` so its column
names can never be confused with the results table's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_dify.outcome import FAILED, REDO_MODES, check_shard
from airflow_dify.sql.dialects import Dialect
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.params import Params


@dataclass(frozen=True)
class Layout:
    """Quoted names of one batch's tables and columns.

    :param source: the prompts table or view (``s``; the same table as ``t`` in place).
    :param store: the table holding results and claims (``t``).
    :param q_id: the quoted id column (the same name in both tables).
    :param integer_ids: shard by ``id % count`` (else by a stable hash of the id's text).
    """

    source: str
    store: str
    q_id: str
    in_place: bool
    integer_ids: bool = True

    @property
    def read_alias(self) -> str:
        return "t" if self.in_place else "s"

    def from_clause(self, params: Params, where: str | None) -> str:
        if self.in_place:
            return f"{self.store} t"
        inner = f"SELECT * FROM {self.source}"
        if where is not None:
            inner += f" WHERE ({_check_where(where)})"
            params.add_user()
        return f"{self.store} t JOIN ({inner}) s ON s.{self.q_id} = t.{self.q_id}"


def _check_where(where: Any) -> str:
    if not isinstance(where, str) or not where.strip():
        raise SqlTableError("where: expected a non-empty SQL predicate string")
    return where


def check_redo(redo: str) -> None:
    """ValueError naming the modes when ``redo`` is not one of them."""
    if redo not in REDO_MODES:
        raise ValueError(f"redo: {redo!r} is not one of {list(REDO_MODES)}")


def status_terms(params: Params, redo: str, q_status: str | None) -> list[str]:
    """The status filter of ``redo`` (``q_status`` None: no status column yet, every row is to do)."""
    check_redo(redo)
    if q_status is None:
        return []
    if redo == "pending":
        return [f"{q_status} IS NULL"]
    if redo == "failed":
        return [f"({q_status} IS NULL OR {q_status} = {params.add(FAILED)})"]
    return []


def selection_terms(
    layout: Layout,
    dialect: Dialect,
    params: Params,
    *,
    redo: str,
    where: str | None,
    shard: Any,
    q_status: str | None,
) -> list[str]:
    """WHERE terms in text order (parameters are added as the text is built)."""
    terms = status_terms(params, redo, f"t.{q_status}" if q_status else None)
    if where is not None and layout.in_place:
        terms.append(f"({_check_where(where)})")
        params.add_user()
    if shard is not None:
        index, count = check_shard(shard)
        key = f"t.{layout.q_id}"
        m = dialect.modulo
        # ((x % n) + n) % n is a true modulo for negative values too (% truncates on every engine).
        value = key if layout.integer_ids else dialect.stable_hash(key)
        n1, n2, n3 = params.add(count), params.add(count), params.add(count)
        terms.append(f"(({value} {m} {n1}) + {n2}) {m} {n3} = {params.add(index)}")
    return terms


@dataclass(frozen=True)
class Selection:
    """Which rows a run asks for: the ``redo`` mode, the user's ``where`` and a shard."""

    redo: str = "failed"
    where: str | None = None
    where_parameters: Any = None
    shard: Any = None


def page_sql(
    layout: Layout,
    dialect: Dialect,
    select: Sequence[str],
    selection: Selection,
    q_status: str | None,
    last: Any = None,
    limit: int | None = None,
) -> tuple[str, Any]:
    """One keyset page (``limit`` None: a count over the whole selection)."""
    where = selection.where
    params = Params(dialect, selection.where_parameters)
    source = layout.from_clause(params, where)
    terms = selection_terms(
        layout, dialect, params, redo=selection.redo, where=where, shard=selection.shard, q_status=q_status
    )
    if last is not None:
        terms.append(f"t.{layout.q_id} > {params.add(last)}")
    sql = f"SELECT {', '.join(select)} FROM {source}" + (" WHERE " + " AND ".join(terms) if terms else "")
    if limit is not None:
        sql += f" ORDER BY t.{layout.q_id} LIMIT {params.add(limit)}"
    return sql, params.values


def only_ids_where(
    dialect: Dialect, q_id: str, ids: Sequence[Any], where: str | None, where_parameters: Any
) -> tuple[str, Any]:
    """A ``where`` and its parameters that keep, of the rows ``where`` selects, those in ``ids``.

    For running a batch on chosen rows (a pilot sample) through the normal selection: the ids are
    bound in the driver's style after the user's own parameters (named when those are a dict or
    the driver only has names), so the result is passed as ``where``/``where_parameters`` as is.
    """
    if not ids:
        raise SqlTableError("only_ids_where: expected at least one id")
    style = dialect.paramstyle
    values: Any
    if isinstance(where_parameters, dict) or (where_parameters is None and style == "named"):
        values = dict(where_parameters or {})
        marks = []
        for i, value in enumerate(ids):
            key = f"_dify_id{i}"
            if key in values:
                raise SqlTableError(f"where_parameters: the name {key!r} is reserved")
            values[key] = value
            marks.append(f"%({key})s" if style in ("format", "pyformat") else f":{key}")
    else:
        if where_parameters is not None and not isinstance(where_parameters, (list, tuple)):
            raise SqlTableError("where_parameters: expected a list, tuple or dict")
        values = [*(where_parameters or ()), *ids]
        first = len(values) - len(ids) + 1
        if style == "numeric":
            marks = [f":{first + i}" for i in range(len(ids))]
        else:
            marks = ["%s" if style in ("format", "pyformat") else "?"] * len(ids)
    test = f"{q_id} IN ({', '.join(marks)})"
    return (f"({_check_where(where)}) AND {test}" if where is not None else test), values


__all__ = [
    "Layout",
    "Selection",
    "check_redo",
    "only_ids_where",
    "page_sql",
    "selection_terms",
    "status_terms",
]
