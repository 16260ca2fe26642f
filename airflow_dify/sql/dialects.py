"""SQL dialect details: identifiers, column types, locking, hashing, values.

Four dialects are known: ``sqlite``, ``postgres`` (psycopg 3 or psycopg2), ``mysql`` (MySQL 8 /
MariaDB 10.6+, mysqlclient or PyMySQL) and ``generic`` (any other DB-API driver, best effort:
ANSI types, ``LIMIT`` paging, the driver's paramstyle, optimistic claims).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_dify.sql.errors import SqlTableError

DIALECTS = ("sqlite", "postgres", "mysql", "generic")

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
#: PostgreSQL silently truncates longer names (NAMEDATALEN - 1): refuse them instead.
MAX_IDENT_LEN = 63
_QUOTE = {"mysql": "`"}


def identifier_parts(name: Any, setting: str, *, qualified: bool = False) -> list[str]:
    """The parts of a plain (optionally ``schema.``-qualified) name, or SqlTableError naming ``setting``.

    Only ``^[A-Za-z_][A-Za-z0-9_$]*$`` parts of at most 63 characters are allowed, so a quoted
    name can never break out of its quotes.
    """
    if not isinstance(name, str) or not name:
        raise SqlTableError(f"{setting}: expected a non-empty identifier string, got {type(name).__name__}")
    parts = name.split(".") if qualified else [name]
    if len(parts) > 2 or not all(_IDENT_RE.match(p) and len(p) <= MAX_IDENT_LEN for p in parts):
        shape = "[schema.]name" if qualified else "name"
        # repr() of a bad name is safe to show: it is configuration, not row data.
        raise SqlTableError(
            f"{setting}: invalid SQL identifier {name[:80]!r}; expected {shape} where each part matches "
            f"[A-Za-z_][A-Za-z0-9_$]* and is at most {MAX_IDENT_LEN} characters"
        )
    return parts


def quote_identifier(name: Any, setting: str, *, qualified: bool = False, dialect: str = "generic") -> str:
    """Validate ``name`` (see :func:`identifier_parts`) and quote it the dialect's way.

    Quoted names are case-sensitive on PostgreSQL: pass them as stored (usually lower case).
    """
    q = _QUOTE.get(dialect, '"')
    return ".".join(f"{q}{p}{q}" for p in identifier_parts(name, setting, qualified=qualified))


@dataclass(frozen=True)
class InvalidText:
    """A TEXT value on SQLite whose bytes are not valid UTF-8.

    sqlite3 would otherwise abort the whole page with ``OperationalError: Could not decode to
    UTF-8 column``; returning this marker lets the engine fail just that row with ``message``.
    """

    raw: bytes

    @property
    def message(self) -> str:
        try:
            self.raw.decode("utf-8")
            offset = -1
        except UnicodeDecodeError as exc:
            offset = exc.start
        return f"text is not valid UTF-8 ({len(self.raw)} bytes, first invalid byte at offset {offset})"

    def __repr__(self) -> str:
        return f"InvalidText(<{len(self.raw)} bytes>)"

    def __str__(self) -> str:
        return f"<invalid UTF-8: {len(self.raw)} bytes>"


def sqlite_text_factory(raw: bytes) -> str | InvalidText:
    """``sqlite3.Connection.text_factory`` that flags undecodable text instead of raising."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


# Logical result field -> column type; see ResultColumns for the field names.
_TYPES_POSTGRES = {
    "answer": "TEXT",
    "status": "VARCHAR(16)",
    "error": "TEXT",
    "prompt_tokens": "BIGINT",
    "completion_tokens": "BIGINT",
    "total_tokens": "BIGINT",
    "total_price": "NUMERIC(24,10)",
    "currency": "VARCHAR(8)",
    "latency_ms": "INTEGER",
    "message_id": "VARCHAR(64)",
    "conversation_id": "VARCHAR(64)",
    "answered_at": "TIMESTAMP WITH TIME ZONE",
    "attempts": "INTEGER",
    "input_hash": "VARCHAR(64)",  # hex sha256
    "workflow_id": "VARCHAR(64)",
    "trace_id": "VARCHAR(128)",
    # Claims: which run holds the row and until when (epoch seconds).
    "claimed_by": "VARCHAR(120)",
    "claimed_until": "DOUBLE PRECISION",
}
_TYPES_SQLITE = {
    **_TYPES_POSTGRES,
    **{k: "INTEGER" for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    # sqlite3 cannot bind Decimal and REAL would round: keep the exact decimal string.
    "total_price": "TEXT",
    "answered_at": "TEXT",  # ISO-8601 UTC, e.g. 2024-05-01T12:00:00.000000+00:00
    "claimed_until": "REAL",
}
_TYPES_MYSQL = {
    **_TYPES_POSTGRES,
    "answer": "LONGTEXT",  # TEXT holds only 64 KiB
    "error": "TEXT",
    "total_price": "DECIMAL(24,10)",
    "answered_at": "DATETIME(6)",  # naive UTC: DATETIME has no time zone
    "claimed_until": "DOUBLE",
}
_TYPES_GENERIC = {**_TYPES_POSTGRES, "answered_at": "TIMESTAMP"}
_TYPES = {"sqlite": _TYPES_SQLITE, "postgres": _TYPES_POSTGRES, "mysql": _TYPES_MYSQL}

#: Declared types (lower case, words) that can hold each kind of value without loss.
_TEXT = ("char", "text", "clob", "string", "varchar", "nvarchar", "character", "longtext", "mediumtext")
_INT = ("int", "integer", "bigint", "smallint", "mediumint", "numeric", "decimal", "number")
_KINDS: dict[str, tuple[str, ...]] = {
    "text": _TEXT,
    "int": _INT,
    "decimal": ("numeric", "decimal", "number", *_TEXT),  # text: SQLite keeps the exact string
    "time": ("timestamp", "datetime", *_TEXT),
    "float": ("double", "real", "float", "numeric", "decimal"),
}
FIELD_KINDS = {
    **dict.fromkeys(("answer", "status", "error", "currency", "message_id", "conversation_id"), "text"),
    **dict.fromkeys(("input_hash", "claimed_by", "workflow_id", "trace_id"), "text"),
    **dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "attempts"), "int"),
    "total_price": "decimal",
    "answered_at": "time",
    "claimed_until": "float",
}
_INTEGER_KEY = ("int", "integer", "bigint", "smallint", "mediumint", "serial", "bigserial", "tinyint")


def type_holds(fieldname: str, declared: str | None) -> bool:
    """Whether a column declared ``declared`` can hold what the provider writes to ``fieldname``.

    SQLite stores anything anywhere, but a declared ``INTEGER`` or ``BOOLEAN`` column says the
    user meant something else by that name: the same rule applies there.
    """
    if not declared:
        return True  # SQLite columns without a declared type take any value
    words = re.findall(r"[a-z]+", declared.lower())
    return any(w in _KINDS[FIELD_KINDS[fieldname]] for w in words)


def is_integer_type(declared: str | None) -> bool:
    """Integer key (shard by modulo)? Unknown types (generic engines) are taken as integers."""
    if declared is None:
        return True
    return any(w in _INTEGER_KEY for w in re.findall(r"[a-z]+", declared.lower()))


_CONN_TYPES = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres", "mysql": "mysql"}


def dialect_for(conn_type: str | None) -> str:
    """The dialect of an Airflow connection type (``generic`` for any other DB-API database)."""
    return _CONN_TYPES.get((conn_type or "").lower(), "generic")


def _driver_paramstyle(conn: Any) -> str:
    """The DB-API ``paramstyle`` of the module that made ``conn`` (for the generic dialect)."""
    module = sys.modules.get(type(conn).__module__.split(".")[0])
    style = getattr(module, "paramstyle", None)
    return style if style in ("qmark", "numeric", "named", "format", "pyformat") else "qmark"


@dataclass(frozen=True)
class Dialect:
    """What differs between databases: column types, placeholders, locking, value adaptation."""

    name: str
    paramstyle: str  # DB-API paramstyle of the driver: qmark | numeric | named | format | pyformat

    @classmethod
    def for_connection(cls, name: str, conn: Any) -> Dialect:
        if name == "sqlite":
            return cls(name, "qmark")
        if name in ("postgres", "mysql"):
            return cls(name, "format")
        return cls(name, _driver_paramstyle(conn))

    @property
    def column_types(self) -> dict[str, str]:
        return _TYPES.get(self.name, _TYPES_GENERIC)

    @property
    def names_case_insensitive(self) -> bool:
        # SQLite and MySQL match column names case-insensitively; generic engines often fold case.
        return self.name != "postgres"

    @property
    def modulo(self) -> str:
        # With format/pyformat drivers a literal % must be doubled or it is taken as a placeholder.
        return "%%" if self.paramstyle in ("format", "pyformat") else "%"

    @property
    def skip_locked(self) -> str:
        """Row-lock clause that passes over rows another transaction holds ("" where none)."""
        return " FOR UPDATE SKIP LOCKED" if self.name in ("postgres", "mysql") else ""

    @property
    def begin(self) -> str | None:
        """Statement that starts a claim transaction holding the write lock (SQLite only)."""
        return "BEGIN IMMEDIATE" if self.name == "sqlite" else None

    @property
    def transactional_ddl(self) -> bool:
        """Whether ``ALTER TABLE`` joins a transaction (and rolls back with it). MySQL commits each
        one on its own; a generic engine is not assumed to."""
        return self.name in ("sqlite", "postgres")

    def quote(self, name: str, setting: str, *, qualified: bool = False) -> str:
        return quote_identifier(name, setting, qualified=qualified, dialect=self.name)

    def stable_hash(self, expr: str) -> str:
        """SQL for ``int(md5(text(expr))[:8], 16)``: the same shard for a key on every run and engine."""
        if self.name == "postgres":
            return f"(('x' || substr(md5(CAST({expr} AS text)), 1, 8))::bit(32)::bigint)"
        if self.name == "mysql":
            return f"CAST(CONV(SUBSTRING(MD5(CAST({expr} AS CHAR)), 1, 8), 16, 10) AS UNSIGNED)"
        if self.name == "sqlite":
            return f"dify_md5_8(CAST({expr} AS TEXT))"  # registered on each connection
        raise SqlTableError("shards of a non-integer id need the sqlite, postgres or mysql dialect")

    def insert_ignore(self, table: str, columns: str, select: str) -> str:
        """``INSERT ... SELECT`` that skips keys already present (concurrent seeding is safe)."""
        if self.name == "mysql":
            return f"INSERT IGNORE INTO {table} ({columns}) {select}"
        return f"INSERT INTO {table} ({columns}) {select} ON CONFLICT DO NOTHING"

    def adapt(self, fieldname: str, value: Any) -> Any:
        """Turn a RowOutcome value into something this driver binds losslessly."""
        if value is None:
            return None
        if isinstance(value, Decimal) and self.name == "sqlite":
            return format(value, "f")  # plain notation, exact; never float
        if isinstance(value, dt.datetime):
            utc = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
            utc = utc.astimezone(dt.timezone.utc)
            if self.name == "sqlite":
                return utc.isoformat(timespec="microseconds")
            if self.name in ("generic", "mysql"):
                return utc.replace(tzinfo=None)  # a plain TIMESTAMP/DATETIME column holds naive UTC
            return utc
        return value


__all__ = [
    "DIALECTS",
    "Dialect",
    "InvalidText",
    "dialect_for",
    "identifier_parts",
    "is_integer_type",
    "quote_identifier",
    "sqlite_text_factory",
    "type_holds",
]
