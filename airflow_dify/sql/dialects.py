"""SQL dialect details: identifiers, column types, parameters, values.

Only three dialects are known: ``sqlite``, ``postgres`` (psycopg 3 or psycopg2) and ``generic``
(any other DB-API driver, best effort: ANSI types, ``LIMIT`` paging, the driver's paramstyle).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_dify.sql.errors import SqlTableError

DIALECTS = ("sqlite", "postgres", "generic")

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
#: PostgreSQL silently truncates longer names (NAMEDATALEN - 1): refuse them instead.
MAX_IDENT_LEN = 63


def quote_identifier(name: Any, setting: str, *, qualified: bool = False) -> str:
    """Validate ``name`` and return it double-quoted, or raise SqlTableError naming ``setting``.

    Only plain names are allowed (``^[A-Za-z_][A-Za-z0-9_$]*$``, at most 63 characters), so the
    quoted form can never break out of its quotes. With ``qualified``, one ``schema.`` prefix is
    allowed. Quoted names are case-sensitive on PostgreSQL: pass them as stored (usually lower).
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
    return ".".join(f'"{p}"' for p in parts)


@dataclass(frozen=True)
class InvalidText:
    """A TEXT value on SQLite whose bytes are not valid UTF-8.

    sqlite3 would otherwise abort the whole page with ``OperationalError: Could not decode to
    UTF-8 column``; returning this marker lets the engine fail just that row with ``message``.
    """

    raw: bytes = field(repr=False)

    @property
    def message(self) -> str:
        try:
            self.raw.decode("utf-8")
            offset = -1
        except UnicodeDecodeError as exc:
            offset = exc.start
        return f"text is not valid UTF-8 ({len(self.raw)} bytes, first invalid byte at offset {offset})"

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
}
_TYPES_SQLITE = {
    **_TYPES_POSTGRES,
    **{k: "INTEGER" for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    # sqlite3 cannot bind Decimal and REAL would round: keep the exact decimal string.
    "total_price": "TEXT",
    "answered_at": "TEXT",  # ISO-8601 UTC, e.g. 2024-05-01T12:00:00.000000+00:00
}
_TYPES_GENERIC = {**_TYPES_POSTGRES, "total_price": "NUMERIC(24,10)", "answered_at": "TIMESTAMP"}


def _driver_paramstyle(conn: Any) -> str:
    """The DB-API ``paramstyle`` of the module that made ``conn`` (for the generic dialect)."""
    module = sys.modules.get(type(conn).__module__.split(".")[0])
    style = getattr(module, "paramstyle", None)
    return style if style in ("qmark", "numeric", "named", "format", "pyformat") else "qmark"


@dataclass(frozen=True)
class Dialect:
    """What differs between databases: column types, placeholders, value adaptation."""

    name: str
    paramstyle: str  # DB-API paramstyle of the driver: qmark | numeric | named | format | pyformat

    @classmethod
    def for_connection(cls, name: str, conn: Any) -> Dialect:
        if name == "sqlite":
            return cls(name, "qmark")
        if name == "postgres":
            return cls(name, "format")
        return cls(name, _driver_paramstyle(conn))

    @property
    def column_types(self) -> dict[str, str]:
        return {"sqlite": _TYPES_SQLITE, "postgres": _TYPES_POSTGRES}.get(self.name, _TYPES_GENERIC)

    @property
    def names_case_insensitive(self) -> bool:
        # SQLite matches even quoted names case-insensitively; generic engines often fold case.
        return self.name != "postgres"

    @property
    def modulo(self) -> str:
        # With format/pyformat drivers a literal % must be doubled or it is taken as a placeholder.
        return "%%" if self.paramstyle in ("format", "pyformat") else "%"

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
            if self.name == "generic":
                return utc.replace(tzinfo=None)  # plain TIMESTAMP column holds naive UTC
            return utc
        return value


class Params:
    """Builds our own placeholders in the same style as the user's ``where_parameters``.

    Positional when the user gave a list/tuple/None, named when a dict, so both combine in one
    statement. Placeholders must be added in the order they appear in the SQL text.
    """

    def __init__(self, dialect: Dialect, user_params: Any) -> None:
        self.named = isinstance(user_params, dict)
        if user_params is not None and not isinstance(user_params, (list, tuple, dict)):
            raise SqlTableError("where_parameters: expected a list, tuple or dict")
        self.style = dialect.paramstyle
        if self.named and self.style == "numeric":
            raise SqlTableError("where_parameters: this driver's paramstyle has no named form; pass a list")
        if not self.named and self.style == "named":
            raise SqlTableError("where_parameters: this driver uses named parameters; pass a dict")
        self._user = user_params
        self.values: Any = {} if self.named else []
        if self.style == "numeric" and user_params:
            # :1..:k belong to the user: ours are numbered after them, so order does not matter.
            self.values.extend(user_params)
            self._user = None

    def add(self, value: Any) -> str:
        if self.named:
            key = f"_dify_p{len(self.values)}"
            if key in self._user:
                raise SqlTableError(f"where_parameters: the name {key!r} is reserved")
            self.values[key] = value
            return f"%({key})s" if self.style in ("format", "pyformat") else f":{key}"
        self.values.append(value)
        if self.style == "numeric":
            return f":{len(self.values)}"
        return "%s" if self.style in ("format", "pyformat") else "?"

    def add_user(self) -> None:
        """Splice the user's parameters in at the current position of the SQL text."""
        if self._user is None:
            return
        if self.named:
            self.values.update(self._user)
        else:
            self.values.extend(self._user)
