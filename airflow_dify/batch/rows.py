"""Turn a table row into what is sent to Dify, or into a failed outcome when it cannot be sent."""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_dify.batch.errors import RowError
from airflow_dify.batch.files import FileCell, fingerprints, parse_cell
from airflow_dify.batch.options import DEFAULT_MAX_PROMPT_CHARS, BatchOptions
from airflow_dify.client.models import MODE_FAMILY
from airflow_dify.json_codec import encoder
from airflow_dify.outcome import FAILED, HASH_KEY, RowOutcome
from airflow_dify.sql.dialects import InvalidText


@dataclass(frozen=True)
class Prompt:
    """A row ready to call: ``query`` (None for workflows) and ``inputs``; ``files``: the cells of
    ``file_columns`` (variable -> files), put into ``inputs`` in the call (uploaded if need be)."""

    row_id: Any
    query: str | None
    inputs: dict[str, Any]
    input_hash: str | None = None
    files: dict[str, FileCell] = field(default_factory=dict)


def _json_default(value: Any) -> Any:
    # numpy/pandas scalars (from the DataFrame path) hash like the Python value SQL would return.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return str(value)  # Decimal, UUID, ...: their exact text


_canonical = encoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True, default=_json_default
)


def _plain(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A dict the C encoder takes as an object (any other Mapping is copied into one)."""
    return mapping if type(mapping) is dict else dict(mapping)


def input_hash(app: Mapping[str, Any], query: str | None, inputs: Mapping[str, Any]) -> str:
    """Hex sha256 of the canonical JSON of what is sent: redo="changed" compares it with the stored one.

    Canonical = sorted keys, no whitespace, UTF-8; so the same request hashes the same from SQL
    rows, DataFrame rows, any Python version or machine.
    """
    payload = _canonical({"app": _plain(app), "query": query, "inputs": _plain(inputs)})
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _is_jinja(template: str) -> bool:
    return "{{" in template or "{%" in template


def _compile_template(template: str) -> Callable[[Mapping[str, Any]], str]:
    """Jinja when the template uses ``{{ }}``, else ``str.format`` (both with the row's columns)."""
    if _is_jinja(template):
        import jinja2

        compiled = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(
            template
        )
        return lambda row: compiled.render(**row)
    return lambda row: template.format_map(row)


def template_columns(template: str) -> list[str]:
    """Columns a template reads, so the source selects only those."""
    if _is_jinja(template):
        import jinja2
        from jinja2 import meta

        ast = jinja2.Environment(autoescape=False).parse(template)
        return sorted(meta.find_undeclared_variables(ast))
    names = []
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name:
            names.append(field_name.split(".")[0].split("[")[0])
    return list(dict.fromkeys(names))


def _text(value: Any, row_id: Any = None, column: str | None = None) -> Any:
    """Undecodable text read by the SQL source fails its row with a message naming row and column."""
    if isinstance(value, InvalidText):
        raise RowError("invalid_text", f"row {row_id!r}: column {column!r}: {value.message}; no call made")
    return value


class PromptBuilder:
    """Builds prompts for one batch; the same instance serves every row (template compiled once)."""

    def __init__(
        self,
        *,
        family: str,
        id_column: str,
        query_column: str | None = "prompt",
        query_template: str | None = None,
        input_columns: Mapping[str, str] | None = None,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        null_as: str | None = None,
        app_name: str | None = None,
        workflow_id: str | None = None,
        outputs: str | None = None,
        file_columns: Mapping[str, str] | None = None,
    ) -> None:
        self.family = family
        # What answers, as far as the hash is concerned: the family (not the exact mode, which
        # an app_mode setting and GET /info may spell differently), the app's name (another app
        # is "changed"), the pinned workflow version and the outputs fingerprint when set.
        identity = {"name": app_name, "workflow_id": workflow_id, "outputs": outputs}
        self.app: dict[str, Any] = {"family": family, **{k: v for k, v in identity.items() if v}}
        # Rows answered before the hash covered the app were hashed with the family alone: they
        # count as this app's answers (not re-billed) unless a version or outputs are now asked.
        self._legacy_app = {"family": family} if not (workflow_id or outputs or file_columns) else None
        self.id_column = id_column
        self.query_column = None if query_template else query_column
        self.query_template = query_template
        self.input_columns = dict(input_columns or {})
        self.file_columns = dict(file_columns or {})
        self.max_prompt_chars = max_prompt_chars
        self.null_as = null_as
        self._template = _compile_template(query_template) if query_template else None
        self._template_columns = template_columns(query_template) if query_template else []
        if family == "workflow" and not (self.input_columns or self.file_columns):
            raise ValueError("a workflow app needs input_columns (Dify input variable -> column)")

    @classmethod
    def for_options(
        cls, options: BatchOptions, app_mode: str, id_column: str, app_name: str | None = None
    ) -> PromptBuilder:
        """The builder for a run of ``options`` against an app of Dify mode ``app_mode``."""
        return cls(
            family=MODE_FAMILY[app_mode],
            app_name=app_name,
            workflow_id=options.workflow_id,
            outputs=options.outputs().fingerprint(),
            id_column=id_column,
            query_column=options.query_column,
            query_template=options.query_template,
            input_columns=options.input_columns,
            max_prompt_chars=options.max_prompt_chars,
            null_as=options.null_as,
            file_columns=options.file_columns,
        )

    @property
    def read_columns(self) -> list[str]:
        """Columns the SQL source must select (besides the id)."""
        cols = [*self.input_columns.values(), *self.file_columns.values()]
        if self.family != "workflow":
            if self.query_template:
                cols[:0] = template_columns(self.query_template)
            elif self.query_column:
                cols.insert(0, self.query_column)
        return list(dict.fromkeys(cols))

    def build(self, row: Mapping[str, Any]) -> Prompt:
        row_id = row[self.id_column]
        inputs = self._inputs(row, row_id)
        files = (
            {
                var: parse_cell(_text(row.get(col), row_id, col), row_id=row_id, column=col)
                for var, col in self.file_columns.items()
            }
            if self.file_columns
            else {}
        )
        sent = {**inputs, **files} if files else inputs
        query = self._query(row, row_id, sent) if self.family != "workflow" else None
        return Prompt(
            row_id=row_id,
            query=query,
            inputs=inputs,
            input_hash=input_hash(self.app, query, _hashed(inputs, files)),
            files=files,
        )

    def _value(self, row: Mapping[str, Any], row_id: Any, column: str, role: str) -> Any:
        """A column's value as sent; NULL fails the row (never the text "None") unless ``null_as``."""
        value = _text(row.get(column), row_id, column)
        if value is None:
            if self.null_as is None:
                raise RowError(
                    "null_value",
                    f"row {row_id!r}: column {column!r} ({role}) is NULL; no call made "
                    "(set null_as= to send a text instead)",
                )
            return self.null_as
        return value

    def _inputs(self, row: Mapping[str, Any], row_id: Any) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for var, col in self.input_columns.items():
            value = self._value(row, row_id, col, f"input {var!r}")
            if isinstance(value, (dt.date, dt.datetime)):
                value = value.isoformat()
            inputs[var] = value
            if isinstance(value, str) and len(value) > self.max_prompt_chars:
                raise RowError(
                    "prompt_too_long",
                    f"row {row_id!r}: column {col!r} has {len(value)} characters, over max_prompt_chars="
                    f"{self.max_prompt_chars}",
                )
        return inputs

    def _query(self, row: Mapping[str, Any], row_id: Any, inputs: dict[str, Any]) -> str | None:
        query: Any
        if self._template is not None:
            values = {k: _text(v, row_id, k) for k, v in row.items()}
            for col in self._template_columns:
                values[col] = self._value(row, row_id, col, "query_template")
            try:
                query = self._template(values)
            except Exception as exc:  # KeyError/ValueError (format), jinja2 UndefinedError and friends
                raise RowError("template_error", f"row {row_id!r}: query_template failed: {exc}") from None
            source = "query_template"
        else:
            column = self.query_column or ""
            query = _text(row.get(column), row_id, column)
            source = f"column {self.query_column!r}"
        if query is None or (isinstance(query, str) and not query.strip()):
            if self.family == "chat":
                kind = "NULL" if query is None else "empty"
                raise RowError("empty_prompt", f"row {row_id!r}: prompt ({source}) is {kind}; no call made")
        elif not isinstance(query, str):
            query = str(query)
        if query is not None and len(query) > self.max_prompt_chars:
            raise RowError(
                "prompt_too_long",
                f"row {row_id!r}: prompt ({source}) has {len(query)} characters, over max_prompt_chars="
                f"{self.max_prompt_chars}; no call made",
            )
        if self.family == "completion" and query is None and not inputs:
            raise RowError(
                "empty_prompt", f"row {row_id!r}: prompt ({source}) is empty and no inputs; no call made"
            )
        return query

    def current_hash(self, row: Mapping[str, Any]) -> str | None:
        """The input_hash this row would be sent with now; None when it cannot be sent.

        A stored hash from before the hash covered the app (family only) is returned as is when
        it matches this content, so upgrading never makes answered rows look edited.
        """
        try:
            prompt = self.build(row)
        except RowError:
            return None
        stored = str(row.get(HASH_KEY) or "").strip()
        legacy = self._legacy_app
        old = legacy is not None and stored not in ("", prompt.input_hash)
        if old and stored == input_hash(legacy or {}, prompt.query, _hashed(prompt.inputs, prompt.files)):
            return stored
        return prompt.input_hash


def _hashed(inputs: dict[str, Any], files: Mapping[str, FileCell]) -> dict[str, Any]:
    """What the input hash covers: the inputs, and the files as their URL/path texts or digests."""
    return {**inputs, **fingerprints(files)} if files else inputs


def failed_outcome(row_id: Any, code: str, message: str, *, attempts: int = 0) -> RowOutcome:
    return RowOutcome(
        row_id=row_id,
        status=FAILED,
        error=f"{code}: {message}"[:1000],
        error_code=code,
        attempts=attempts,
        answered_at=dt.datetime.now(dt.timezone.utc),
    )
