"""What an app's form and system parameters allow file inputs: types, extensions, transfer
methods, number of files and upload size limits, read from GET /parameters.

:mod:`airflow_dify.batch.file_inputs` checks every file of a row against these before spending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_dify.batch.preflight import FILE_TYPES as FORM_FILE_TYPES

MB = 1024 * 1024
#: GET /parameters ``system_parameters`` key of the upload size limit (MB) of each file type;
#: Dify picks it by the file's extension, as :func:`~airflow_dify.batch.files.file_type` does.
SIZE_LIMIT_KEYS = {
    "image": "image_file_size_limit",
    "audio": "audio_file_size_limit",
    "video": "video_file_size_limit",
    "document": "file_size_limit",
    "custom": "file_size_limit",
}


@dataclass(frozen=True)
class FileRule:
    """What the app's form allows one file variable (``user_input_form``); None = no limit known."""

    kind: str | None = None  # "file" | "file-list"; None when the form does not say
    required: bool = False
    types: tuple[str, ...] = ()
    extensions: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ()
    max_files: int | None = None

    @classmethod
    def from_form(cls, kind: str, spec: Mapping[str, Any]) -> FileRule:
        extensions = spec.get("allowed_file_extensions")
        limit = spec.get("max_length") if kind == "file-list" else 1
        return cls(
            kind=kind,
            required=bool(spec.get("required")),
            types=tuple(str(t).lower() for t in spec.get("allowed_file_types") or ()),
            extensions=None if extensions is None else tuple(_dotless(e) for e in extensions),
            methods=tuple(str(m) for m in spec.get("allowed_file_upload_methods") or ()),
            max_files=int(limit) if isinstance(limit, int) and limit > 0 else None,
        )

    def accepts(self, natural: str, ext: str, method: str) -> str | None:
        """The type to send for a file of this ``natural`` type, or None when Dify would refuse it.

        Dify's check: a type outside ``allowed_file_types`` is refused unless it is sent as
        ``custom``, which needs the extension among ``allowed_file_extensions``.
        """
        if self.methods and method not in self.methods:
            return None
        custom_ok = self.extensions is not None and ext in self.extensions
        if (not self.types or natural in self.types) and (
            natural != "custom" or custom_ok or self.extensions is None
        ):
            return natural
        if "custom" in self.types and self.extensions is not None and ext in self.extensions:
            return "custom"
        return None

    def describe(self) -> str:
        parts = [f"types {', '.join(self.types) or 'any'}"]
        if self.extensions is not None and ("custom" in self.types or not self.types):
            parts.append(f"custom extensions {', '.join(self.extensions) or 'none'}")
        if self.methods:
            parts.append(f"transfer methods {', '.join(self.methods)}")
        return "; ".join(parts)


def _dotless(ext: Any) -> str:
    return str(ext).strip().lstrip(".").lower()


def file_rules(parameters: Mapping[str, Any]) -> dict[str, FileRule]:
    """variable -> FileRule for every file input of GET /parameters' ``user_input_form``."""
    rules: dict[str, FileRule] = {}
    for item in parameters.get("user_input_form") or []:
        if not isinstance(item, Mapping):
            continue
        for kind, spec in item.items():
            if kind in FORM_FILE_TYPES and isinstance(spec, Mapping) and spec.get("variable"):
                rules[str(spec["variable"])] = FileRule.from_form(str(kind), spec)
    return rules


def form_kinds(parameters: Mapping[str, Any]) -> dict[str, str]:
    """variable -> form type (``text-input``, ``file``, ...) of every input."""
    kinds: dict[str, str] = {}
    for item in parameters.get("user_input_form") or []:
        if isinstance(item, Mapping):
            for kind, spec in item.items():
                if isinstance(spec, Mapping) and spec.get("variable"):
                    kinds[str(spec["variable"])] = str(kind)
    return kinds


@dataclass(frozen=True)
class SizeLimits:
    """Upload size limits in bytes per file type, and files per run, from ``system_parameters``."""

    by_type: Mapping[str, int]
    max_files: int | None = None

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> SizeLimits:
        system = parameters.get("system_parameters") or {}
        by_type = {}
        for kind, key in SIZE_LIMIT_KEYS.items():
            value = system.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                by_type[kind] = int(value * MB)
        count = system.get("workflow_file_upload_limit")
        max_files = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None
        return cls(by_type, max_files)

    def key(self, kind: str) -> str:
        return SIZE_LIMIT_KEYS[kind]


__all__ = ["MB", "SIZE_LIMIT_KEYS", "FileRule", "SizeLimits", "file_rules", "form_kinds"]
