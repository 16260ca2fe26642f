"""Typed output columns in SQL: the column type per JSON type and dialect, and the value to bind.

``None`` is an untyped output (no schema): text, or JSON text for objects and arrays.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

#: Prefix of an output column's field key, next to the result fields ("answer", "status", ...).
OUTPUT_FIELD = "output:"

_TYPES: dict[str, dict[str | None, str]] = {
    "sqlite": {"integer": "BIGINT", "number": "NUMERIC", "boolean": "BOOLEAN"},
    "postgres": {
        "integer": "BIGINT",
        "number": "NUMERIC",
        "boolean": "BOOLEAN",
        "array": "JSONB",
        "object": "JSONB",
    },
    "mysql": {
        "string": "LONGTEXT",
        None: "LONGTEXT",
        "integer": "BIGINT",
        "number": "DOUBLE",
        "boolean": "BOOLEAN",
    },
    "generic": {"integer": "BIGINT", "number": "NUMERIC", "boolean": "BOOLEAN"},
}
_TYPES["mysql"].update({"array": "JSON", "object": "JSON"})
#: Declared-type words that can hold each JSON type.
_HOLDS: dict[str | None, tuple[str, ...]] = {
    None: ("text", "char", "varchar", "clob", "string", "longtext", "mediumtext", "json", "jsonb"),
    "string": ("text", "char", "varchar", "clob", "string", "longtext", "mediumtext"),
    "integer": ("int", "integer", "bigint", "numeric", "decimal", "number"),
    "number": ("numeric", "decimal", "number", "double", "real", "float"),
    "boolean": ("bool", "boolean", "tinyint", "int", "integer"),
    "array": ("json", "jsonb", "text", "longtext"),
    "object": ("json", "jsonb", "text", "longtext"),
}


@dataclass(frozen=True)
class OutputColumn:
    """One output column of a table: its name, JSON type (None: untyped) and quoted name."""

    name: str
    kind: str | None
    quoted: str

    @property
    def field(self) -> str:
        return OUTPUT_FIELD + self.name


def output_type(dialect: str, kind: str | None) -> str:
    return _TYPES.get(dialect, _TYPES["generic"]).get(kind, "TEXT")


def output_holds(kind: str | None, declared: str | None) -> bool:
    """Whether a column declared ``declared`` can hold outputs of JSON type ``kind``."""
    if not declared:
        return True
    return any(w in _HOLDS[kind] for w in re.findall(r"[a-z]+", declared.lower()))


def output_placeholder(dialect: str, kind: str | None, placeholder: str) -> str:
    """JSON text must be cast into a PostgreSQL JSONB column."""
    if dialect == "postgres" and kind in ("array", "object"):
        return f"CAST({placeholder} AS JSONB)"
    return placeholder


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def output_value(dialect: str, kind: str | None, value: Any) -> Any:
    """What the driver binds for an output value (already checked against ``kind``)."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_number)
    if kind is None:
        return value if isinstance(value, str) else json.dumps(value, default=_number)
    if kind == "boolean" and dialect == "sqlite":
        return int(value)
    if isinstance(value, Decimal) and dialect in ("sqlite", "mysql"):
        return float(value)
    return value


__all__ = [
    "OUTPUT_FIELD",
    "OutputColumn",
    "output_holds",
    "output_placeholder",
    "output_type",
    "output_value",
]
