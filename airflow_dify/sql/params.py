"""Bound parameters in the driver's own style, combined with the user's ``where_parameters``."""

from __future__ import annotations

from typing import Any

from airflow_dify.sql.dialects import Dialect
from airflow_dify.sql.errors import SqlTableError


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
        if self.style == "numeric" and user_params and isinstance(self.values, list):
            # :1..:k belong to the user: ours are numbered after them, so order does not matter.
            self.values.extend(user_params)
            self._user = None

    def add(self, value: Any) -> str:
        if self.named:
            key = f"_dify_p{len(self.values)}"
            if isinstance(self._user, dict) and key in self._user:
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

    def many(self, values: list[Any]) -> str:
        """Placeholders for ``IN (...)``: one per value, in order."""
        return ", ".join(self.add(v) for v in values)


__all__ = ["Params"]
