"""File inputs of one row: checked against the app's limits, uploaded once, sent as Dify wants them.

For each ``file_columns`` variable the row's files (see :mod:`airflow_dify.batch.files`) become
``{"type", "transfer_method", "url" | "upload_file_id"}`` objects: URLs go as ``remote_url``
(Dify fetches them), the rest is read and uploaded with ``POST /files/upload`` under the row's
end user and goes as ``local_file``. A ``file`` variable takes one object, a ``file-list`` one
(and a cell written as a list) a list of them.

Everything that can be known before spending is checked first, for every file of the row, from
what pre-flight's GET /parameters said: the variable's allowed types, extensions, transfer methods
and number of files (``user_input_form``), and the size limits per type (``system_parameters``;
both read by :mod:`airflow_dify.batch.file_rules`).
A row that breaks one fails naming the row, column and file, with no upload and no call.

Uploads happen in the row's call, before the generation call, so the generation's own retries
(the client's policy) never upload again; the same bytes under the same end user are uploaded once
per run however many rows send them. Dify's 413/415 fail the row as ``file_too_large`` /
``unsupported_file_type`` with a message that says which file.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from airflow_dify.batch.errors import PreflightError, RowError
from airflow_dify.batch.file_rules import MB, SIZE_LIMIT_KEYS, FileRule, SizeLimits, file_rules, form_kinds
from airflow_dify.batch.files import (
    LOCAL_FILE,
    REMOTE_URL,
    FileCell,
    FileSource,
    Opener,
    extension_of,
    file_type,
    mime_of,
    open_location,
    upload_name,
)
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.preflight import FILE_TYPES as FORM_FILE_TYPES
from airflow_dify.client.errors import DifyError

#: Upload ids kept per run (same bytes, same end user: one upload).
MAX_CACHED_UPLOADS = 10_000


class SupportsUpload(Protocol):
    def upload_file(self, name: str, data: bytes, mime: str, *, user: str) -> Mapping[str, Any]: ...


class _HasFiles(Protocol):
    @property
    def row_id(self) -> Any: ...

    @property
    def inputs(self) -> dict[str, Any]: ...

    @property
    def files(self) -> Mapping[str, FileCell]: ...


@dataclass(frozen=True)
class _Staged:
    """One checked file, ready to send."""

    var: str
    column: str
    source: FileSource
    type: str
    method: str
    name: str
    data: bytes | None = None
    mime: str | None = None


class FileInputs:
    """Turns a row's file cells into Dify file inputs; one instance serves every row of a run.

    :param client: uploads (``POST /files/upload``); see :meth:`DifyClient.upload_file`.
    :param file_columns: variable -> column.
    :param rules: variable -> what the app's form allows (from GET /parameters).
    :param limits: size limits (from GET /parameters).
    :param opener: opens object-storage paths (``s3://``, ``gs://``, ...).
    """

    def __init__(
        self,
        client: SupportsUpload,
        file_columns: Mapping[str, str],
        *,
        rules: Mapping[str, FileRule] | None = None,
        limits: SizeLimits | None = None,
        opener: Opener | None = None,
    ) -> None:
        self.client = client
        self.file_columns = dict(file_columns)
        self.rules = dict(rules or {})
        self.limits = limits or SizeLimits({})
        self.opener = opener
        self._lock = threading.Lock()
        self._uploads: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        #: Uploads sent this run (not served from the cache).
        self.uploaded = 0

    @classmethod
    def for_app(
        cls,
        client: SupportsUpload,
        app: str,
        parameters: Mapping[str, Any],
        file_columns: Mapping[str, str],
        *,
        opener: Opener | None = None,
    ) -> FileInputs:
        """The file inputs of a run against an app whose GET /parameters answered ``parameters``;
        PreflightError when a ``file_columns`` variable is not a file input of the app."""
        if not callable(getattr(client, "upload_file", None)):
            raise PreflightError("file_columns needs a client that can upload files (DifyClient.upload_file)")
        kinds = form_kinds(parameters)
        wrong = {v: kinds[v] for v in file_columns if v in kinds and kinds[v] not in FORM_FILE_TYPES}
        if wrong:
            listed = ", ".join(f"{v!r} is a {k!r} input" for v, k in wrong.items())
            raise PreflightError(
                f"app {app!r}: file_columns maps variables that take no files ({listed}): map them with "
                "input_columns instead; no row was called"
            )
        return cls(
            client,
            file_columns,
            rules=file_rules(parameters),
            limits=SizeLimits.from_parameters(parameters),
            opener=opener,
        )

    @classmethod
    def for_options(
        cls, client: object, app: str, parameters: Mapping[str, Any], options: BatchOptions
    ) -> FileInputs | None:
        """The run's file inputs, None without ``file_columns``."""
        if not options.file_columns:
            return None
        uploader = cast(SupportsUpload, client)
        return cls.for_app(uploader, app, parameters, options.file_columns, opener=options.file_opener)

    # -- one row -------------------------------------------------------------------------------
    def attach(self, prompt: _HasFiles, *, user: str) -> dict[str, Any]:
        """The row's inputs with its files in them. Checks every file first (RowError, nothing
        sent), then uploads what must be (a DifyError from Dify names the file); raises nothing else."""
        try:
            return self._attach(prompt, user)
        except (RowError, DifyError):
            raise
        except Exception as exc:  # a bug must fail the row, not the run
            raise RowError(
                "internal_error", f"row {prompt.row_id!r}: file inputs: {type(exc).__name__}: {exc}"
            ) from exc

    def _attach(self, prompt: _HasFiles, user: str) -> dict[str, Any]:
        row_id = prompt.row_id
        staged: dict[str, list[_Staged]] = {}
        total = 0
        for var, column in self.file_columns.items():
            sources = prompt.files.get(var, FileCell()).sources
            rule = self.rules.get(var, FileRule())
            self._check_count(row_id, var, column, sources, rule)
            staged[var] = [self._stage(row_id, var, column, source, rule) for source in sources]
            total += len(sources)
        if self.limits.max_files is not None and total > self.limits.max_files:
            raise RowError(
                "too_many_files",
                f"row {row_id!r}: {total} files, over Dify's {self.limits.max_files} per run "
                "(GET /parameters system_parameters.workflow_file_upload_limit); no call made",
            )
        inputs = dict(prompt.inputs)
        for var, items in staged.items():
            if not items:
                continue  # NULL in an optional file input: the variable is left out
            payloads = [self._payload(row_id, item, user) for item in items]
            kind = self.rules.get(var, FileRule()).kind
            many = kind == "file-list" or (kind is None and prompt.files[var].many)
            inputs[var] = payloads if many else payloads[0]
        return inputs

    def _check_count(
        self, row_id: Any, var: str, column: str, sources: Sequence[FileSource], rule: FileRule
    ) -> None:
        where = f"row {row_id!r}: column {column!r}"
        if not sources and rule.required:
            raise RowError(
                "file_required", f"{where} has no file, but input {var!r} requires one; no call made"
            )
        if rule.max_files is not None and len(sources) > rule.max_files:
            what = "one file" if rule.kind == "file" else f"at most {rule.max_files} files"
            raise RowError(
                "too_many_files",
                f"{where} names {len(sources)} files, but input {var!r} takes {what}; no call made",
            )

    def _stage(self, row_id: Any, var: str, column: str, source: FileSource, rule: FileRule) -> _Staged:
        where = f"row {row_id!r}: column {column!r}"
        method = REMOTE_URL if source.kind == "url" else LOCAL_FILE
        name = source.name
        data: bytes | None = None
        if source.kind == "url":
            natural = file_type(name, mime_of(name) if extension_of(name) else None)
            if natural == "custom" and not extension_of(name) and len(rule.types) == 1:
                natural = rule.types[0]  # e.g. an image CDN URL without an extension
            name = name or source.location or ""
        else:
            complete = True
            if source.kind == "bytes":
                data = source.data or b""
            else:
                data, complete = self._read(where, source, name)
            name = upload_name(source, data, var=var, row_id=row_id)
            natural = file_type(name, mime_of(name))
            self._check_size(where, source, natural, len(data), complete)
        sent = rule.accepts(natural, extension_of(name), method)
        if sent is None:
            how = "a URL" if method == REMOTE_URL else "an uploaded file"
            ext = extension_of(name)
            what = f"{_article(natural)} {natural} file" + (f" (.{ext})" if ext else "")
            raise RowError(
                "unsupported_file_type",
                f"{where}: file {source.label!r} is {what} sent as {how}, which input {var!r} does not "
                f"accept ({rule.describe()}); no call made",
            )
        mime = mime_of(name) if data is not None else None
        return _Staged(var, column, source, sent, method, name, data, mime)

    def _read(self, where: str, source: FileSource, name: str | None) -> tuple[bytes, bool]:
        """The file's bytes, and whether they are all of it: no more than one byte past the
        limit that can apply is read, so a huge object is never downloaded to be refused."""
        location = source.location or ""
        if extension_of(name):
            limit = self.limits.by_type.get(file_type(name, mime_of(name)))
        else:  # the type (and so the limit) is known once the first bytes are sniffed
            limit = (
                max(self.limits.by_type.values())
                if len(self.limits.by_type) == len(SIZE_LIMIT_KEYS)
                else None
            )
        try:
            with open_location(location, self.opener) as handle:
                data = handle.read() if limit is None else handle.read(limit + 1)
        except (OSError, ImportError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise RowError(
                "file_unreadable", f"{where}: cannot read file {location!r}: {reason}; no call made"
            ) from None
        except Exception as exc:  # object storage clients raise their own errors (botocore, ...)
            raise RowError(
                "file_unreadable",
                f"{where}: cannot read file {location!r}: {type(exc).__name__}: {exc}; no call made",
            ) from None
        data = bytes(data)
        if not data:
            raise RowError("invalid_file", f"{where}: file {location!r} is empty; no call made")
        return data, limit is None or len(data) <= limit

    def _check_size(self, where: str, source: FileSource, natural: str, size: int, complete: bool) -> None:
        limit = self.limits.by_type.get(natural)
        if limit is None or size <= limit:
            return
        shown = _mb(size) if complete else f"larger than {_mb(limit)}"
        raise RowError(
            "file_too_large",
            f"{where}: file {source.label!r} is {shown}, over Dify's {_mb(limit)} limit for {natural} files "
            f"(GET /parameters system_parameters.{self.limits.key(natural)}); no call made",
        )

    # -- sending -------------------------------------------------------------------------------
    def _payload(self, row_id: Any, item: _Staged, user: str) -> dict[str, Any]:
        if item.method == REMOTE_URL:
            return {"type": item.type, "transfer_method": REMOTE_URL, "url": item.source.location}
        upload_id = self._upload(row_id, item, user)
        return {"type": item.type, "transfer_method": LOCAL_FILE, "upload_file_id": upload_id}

    def _upload(self, row_id: Any, item: _Staged, user: str) -> str:
        assert item.data is not None and item.mime is not None
        digest = item.source.digest or hashlib.sha256(item.data).hexdigest()
        key = (user, digest)
        with self._lock:
            known = self._uploads.get(key)
            if known is not None:
                return known
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # two rows sending the same bytes as one user: one upload
            with self._lock:
                known = self._uploads.get(key)
            if known is not None:
                return known
            try:
                upload_id = self._send(row_id, item, user)
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            with self._lock:
                self.uploaded += 1
                self._uploads[key] = upload_id
                if len(self._uploads) > MAX_CACHED_UPLOADS:
                    self._uploads.popitem(last=False)
        return upload_id

    def _send(self, row_id: Any, item: _Staged, user: str) -> str:
        assert item.data is not None and item.mime is not None
        try:
            answer = self.client.upload_file(item.name, item.data, item.mime, user=user)
        except DifyError as err:
            raise upload_error(err, row_id, item.column, item.source, item.name, len(item.data)) from None
        upload_id = str(answer.get("id") or "")
        if not upload_id:
            raise RowError(
                "upload_failed",
                f"row {row_id!r}: column {item.column!r}: Dify accepted {item.name!r} but returned no id",
            )
        return upload_id


def upload_error(
    err: DifyError, row_id: Any, column: str, source: FileSource, name: str, size: int
) -> DifyError:
    """The upload's error, saying which row, column and file; never "maybe billed" (uploads are free)."""
    where = f"row {row_id!r}: column {column!r}: file {source.label!r} ({name}, {_mb(size)})"
    if err.code == "file_too_large":
        why = "Dify refused the upload as too large (its limit is tighter than GET /parameters said)"
    elif err.code == "unsupported_file_type":
        why = "Dify refused the file type"
    else:
        why = f"the upload failed: {err.message or err.code}"
    return err.evolve(message=f"{where}: {why}; no generation call made", maybe_billed=False)


def _mb(size: int) -> str:
    return f"{size / MB:.2f} MB" if size < 10 * MB else f"{size / MB:.1f} MB"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


__all__ = ["FileInputs", "SupportsUpload", "upload_error"]
