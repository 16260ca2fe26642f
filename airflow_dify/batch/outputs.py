"""Answers as typed columns: workflow outputs or a JSON answer, mapped to columns, checked by a schema.

``output_columns`` maps an output name (a key of a workflow's ``data.outputs``, or of the JSON
object a chat/completion app answers; ``"scores.risk"`` reaches into objects) to a column.
``output_schema`` is a small JSON Schema subset (an object with typed ``properties``,
``required`` and ``enum``) that types the columns and validates every answer. An answer that does
not parse or validate fails its row with the field and the reason; its raw text stays in
``answer`` (it was paid for) and ``redo="failed"`` asks again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_dify.batch.errors import RowError

#: JSON Schema types a column can have.
KINDS = ("string", "integer", "number", "boolean", "array", "object")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_MISSING = object()


@dataclass(frozen=True)
class OutputField:
    """One output that lands in a column: where it is in the answer, and what it must be."""

    path: str
    column: str
    kind: str | None = None  # None: untyped (text, or JSON text for objects and arrays)
    required: bool = False
    enum: tuple[Any, ...] | None = None


def _schema_of(schema: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    """The property schema at ``path`` ("a.b" walks nested object properties)."""
    node: Any = schema
    for part in path.split("."):
        props = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(props, Mapping) or part not in props:
            return None
        node = props[part]
    return node if isinstance(node, Mapping) else None


def _check_schema(schema: Mapping[str, Any]) -> None:
    if schema.get("type", "object") != "object" or not isinstance(schema.get("properties"), Mapping):
        raise ValueError('output_schema must be {"type": "object", "properties": {...}}')
    for name, prop in schema["properties"].items():
        kind = prop.get("type") if isinstance(prop, Mapping) else None
        if kind not in KINDS:
            raise ValueError(
                f"output_schema property {name!r}: type must be one of {', '.join(KINDS)}, got {kind!r}"
            )
        if "enum" in prop and not isinstance(prop["enum"], list):
            raise ValueError(f"output_schema property {name!r}: enum must be a list")
    required = schema.get("required", [])
    unknown = [r for r in required if r not in schema["properties"]]
    if not isinstance(required, list) or unknown:
        raise ValueError(f"output_schema required names properties it does not have: {unknown}")


class OutputSpec:
    """The output columns of a batch (empty when neither option is given).

    :param output_columns: output name (path) -> column.
    :param output_schema: the JSON Schema subset above.
    """

    def __init__(
        self, output_columns: Mapping[str, str] | None, output_schema: Mapping[str, Any] | None
    ) -> None:
        self.schema = dict(output_schema) if output_schema else None
        if self.schema is not None:
            _check_schema(self.schema)
        names = dict(output_columns or {}) or {p: p for p in (self.schema or {}).get("properties", {})}
        required = set((self.schema or {}).get("required", []))
        self.fields: list[OutputField] = []
        for path, column in names.items():
            if not isinstance(path, str) or not path or not isinstance(column, str) or not column:
                raise ValueError(
                    f"output_columns: expected output name -> column name, got {path!r}: {column!r}"
                )
            prop = _schema_of(self.schema, path) if self.schema else None
            enum = tuple(prop["enum"]) if prop and "enum" in prop else None
            kind = prop.get("type") if prop else None
            self.fields.append(OutputField(path, column, kind, path in required, enum))

    def __bool__(self) -> bool:
        return bool(self.fields)

    def column_kinds(self) -> dict[str, str | None]:
        """column -> JSON type (None: untyped): what the sinks create."""
        return {f.column: f.kind for f in self.fields}

    def fingerprint(self) -> str | None:
        """What makes rows "changed" when it changes (part of ``input_hash``)."""
        if not self:
            return None
        text = json.dumps(
            {"columns": {f.path: f.column for f in self.fields}, "schema": self.schema}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def extract(self, row_id: Any, outputs: Any, answer: str | None) -> dict[str, Any]:
        """Column values from a workflow's ``outputs`` (or, when None, the JSON ``answer``).

        Raises RowError (code ``invalid_output``) naming the field and the reason.
        """
        obj = outputs if outputs is not None else parse_json_answer(row_id, answer)
        if not isinstance(obj, Mapping):
            raise RowError(
                "invalid_output", f"row {row_id!r}: the outputs are a {type(obj).__name__}, not an object"
            )
        obj = self._unwrap(obj)
        if self.schema is not None:
            self._validate_required(row_id, obj)
        values: dict[str, Any] = {}
        for f in self.fields:
            value = _get(obj, f.path)
            if value is _MISSING or value is None:
                if f.required:
                    raise RowError(
                        "invalid_output", f"row {row_id!r}: output {f.path!r} is required but missing"
                    )
                values[f.column] = None
                continue
            values[f.column] = _checked(row_id, f, value)
        return values

    def _unwrap(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """A workflow whose one output is an object (an LLM node's structured output): its fields."""
        first = self.fields[0].path.split(".")[0]
        if first not in obj and len(obj) == 1:
            (only,) = obj.values()
            if isinstance(only, Mapping):
                return only
        return obj

    def _validate_required(self, row_id: Any, obj: Mapping[str, Any]) -> None:
        assert self.schema is not None
        for name in self.schema.get("required", []):
            if obj.get(name) is None:
                raise RowError("invalid_output", f"row {row_id!r}: output {name!r} is required but missing")


def parse_json_answer(row_id: Any, answer: str | None) -> Any:
    """The JSON object in an answer: the whole text, or a fenced ```json block inside it."""
    text = (answer or "").strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise RowError(
            "invalid_output", f"row {row_id!r}: the answer is not JSON ({exc.msg} at character {exc.pos})"
        ) from None


def _plain(value: Any) -> Any:
    """Decimals (exact numbers parsed from JSON) shown as the numbers they are."""
    return float(value) if isinstance(value, Decimal) else str(value)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def _checked(row_id: Any, f: OutputField, value: Any) -> Any:
    """``value`` as the column stores it, or RowError when it is not what the schema says."""
    kind = f.kind
    ok = {
        None: True,
        "string": isinstance(value, str),
        "integer": isinstance(value, int)
        and not isinstance(value, bool)
        or isinstance(value, Decimal)
        and value == value.to_integral_value(),
        "number": isinstance(value, (int, Decimal, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, Mapping),
    }[kind]
    if not ok:
        shown = json.dumps(value, default=_plain)[:60]
        raise RowError("invalid_output", f"row {row_id!r}: output {f.path!r} must be {kind}, got {shown}")
    if f.enum is not None and value not in f.enum:
        raise RowError(
            "invalid_output", f"row {row_id!r}: output {f.path!r} is {value!r}, not one of {list(f.enum)}"
        )
    if kind == "integer":
        return int(value)
    if kind == "number":
        return value if isinstance(value, Decimal) else Decimal(str(value))
    return value


__all__ = ["KINDS", "OutputField", "OutputSpec", "parse_json_answer"]
