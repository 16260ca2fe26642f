"""``POST /files/upload`` and the file inputs of generation calls, as Dify checks them.

The upload, in Dify's order (controllers/service_api/app/file.py, FileService.upload_file): the API
key, then the multipart body (exactly one ``file`` part: 400 ``no_file_uploaded`` /
``too_many_files``), its MIME type (415 ``unsupported_file_type``), its file name (400
``filename_not_exists_error``; ``/`` or ``\\`` in it: 400 ``invalid_param``), then the app's
enforced extensions (415) and the size limit of the file's type (413 ``file_too_large`` with an
empty message, as Dify sends it). ``user`` is optional: without it the file belongs to
``DEFAULT-USER``. The answer is 201 with Dify's record.

A generation call's file inputs (form entries of type ``file`` / ``file-list``) are checked like
Dify's ``file_factory.build_from_mapping``: the shape, the transfer method, a ``url`` for
``remote_url``, an ``upload_file_id`` of an upload of the same end user for ``local_file``, the
variable's allowed types, extensions and methods, and ``max_length``; a failure is 400
``invalid_param``.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
import uuid
from collections.abc import Mapping
from typing import Any

from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.auth import authenticate
from airflow_dify.testing.exchange import Reply, Request
from airflow_dify.testing.replies import Reject, json_reply
from airflow_dify.testing.state import Exchange, FakeState
from airflow_dify.testing.uploads import Upload, end_user_id, enforced_limits, limit_bytes

UPLOAD_PATH = "/files/upload"
DEFAULT_USER = "DEFAULT-USER"
FILE_TYPES = ("image", "document", "audio", "video", "custom")
TRANSFER_METHODS = ("remote_url", "local_file")
# Dify's constants (api/constants/__init__.py); the type of a file is the first list its extension is in.
_BY_EXTENSION = (
    ("image", frozenset({"jpg", "jpeg", "png", "webp", "gif", "svg"})),
    ("video", frozenset({"mp4", "mov", "mpeg", "webm"})),
    ("audio", frozenset({"mp3", "m4a", "wav", "webm", "amr", "mpga"})),
    (
        "document",
        frozenset(
            {"txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv"}
            | {"eml", "msg", "pptx", "xml", "epub"}
        ),
    ),
)
_SIZE_KEYS = {
    "image": "image_file_size_limit",
    "video": "video_file_size_limit",
    "audio": "audio_file_size_limit",
}
_BAD_REQUEST = "The browser (or proxy) sent a request that this server could not understand."


def extension_type(extension: str) -> str:
    """Dify's file type of an extension (``custom`` when it is in no list)."""
    for kind, extensions in _BY_EXTENSION:
        if extension in extensions:
            return kind
    return "custom"


class Part:
    """One part of a multipart body."""

    def __init__(self, headers: dict[str, str], data: bytes) -> None:
        self.headers, self.data = headers, data
        self.disposition = _params(headers.get("content-disposition", ""))

    @property
    def name(self) -> str | None:
        return self.disposition.get("name")

    @property
    def filename(self) -> str | None:
        return self.disposition.get("filename")

    @property
    def mime_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def _params(header: str) -> dict[str, str]:
    """``form-data; name="file"; filename="a.pdf"`` -> {name, filename} (quotes removed, %22 undone)."""
    out: dict[str, str] = {}
    for item in header.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip().lower()] = value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
    return out


def parse_multipart(content_type: str | None, body: bytes) -> list[Part]:
    """The parts of a ``multipart/form-data`` body; 400 when it is not one."""
    media, _, rest = (content_type or "").partition(";")
    boundary = (
        _params(f"x;{rest}").get("boundary") if media.strip().lower() == "multipart/form-data" else None
    )
    if not boundary:
        raise Reject(400, "no_file_uploaded", "Please upload your file.")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[Part] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        if not chunk.startswith(b"\r\n"):
            raise Reject(400, "bad_request", _BAD_REQUEST)
        head, sep, data = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            raise Reject(400, "bad_request", _BAD_REQUEST)
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        parts.append(Part(headers, data[:-2] if data.endswith(b"\r\n") else data))
    return parts


def upload_file(state: FakeState, request: Request, ex: Exchange) -> Reply:
    """Serve ``POST /files/upload``; refusals are raised as :class:`Reject`."""
    ex.auth, ex.app = authenticate(state, request.header("authorization"))
    app = ex.app
    parts = parse_multipart(request.header("content-type"), request.body)
    files = [p for p in parts if p.filename is not None]
    fields = {p.name: p.data.decode("utf-8", "replace") for p in parts if p.filename is None and p.name}
    user = fields.get("user") or DEFAULT_USER
    ex.body = {
        "user": fields.get("user"),
        "files": [{"name": p.filename, "size": len(p.data)} for p in files],
    }
    if not any(p.name == "file" for p in files):
        raise Reject(400, "no_file_uploaded", "Please upload your file.")
    if len(files) > 1:
        raise Reject(400, "too_many_files", "Only one file is allowed.")
    part = files[0]
    if not part.mime_type:
        raise Reject(415, "unsupported_file_type", "File type not allowed.")
    name = part.filename or ""
    if not name:
        raise Reject(400, "filename_not_exists_error", "The specified filename does not exist.")
    if "/" in name or "\\" in name:
        raise Reject(400, "invalid_param", "Filename contains invalid characters")
    extension = posixpath.splitext(name)[1].lstrip(".").lower()
    allowed = app.upload_extensions
    if allowed is not None and extension not in {e.lstrip(".").lower() for e in allowed}:
        raise Reject(415, "unsupported_file_type", "File type not allowed.")
    limits = enforced_limits(app)
    key = _SIZE_KEYS.get(extension_type(extension), "file_size_limit")
    if len(part.data) > limit_bytes(limits, key):
        raise Reject(413, "file_too_large", "")
    upload = Upload(
        id=str(uuid.uuid4()),
        app_id=app.id,
        user=user,
        name=name,
        size=len(part.data),
        extension=extension,
        mime_type=part.mime_type,
        created_by=end_user_id(app.id, user),
        created_at=int(time.time()),
        sha256=hashlib.sha256(part.data).hexdigest(),
    )
    state.uploads.add(upload)
    host = request.header("host") or "127.0.0.1"
    return json_reply(ex, 201, upload.body(f"http://{host}"))


# -- file inputs of generation calls ---------------------------------------------------------------
def check_file_inputs(state: FakeState, app: FakeApp, user: str, inputs: Mapping[str, Any]) -> None:
    """400 ``invalid_param`` for a file input Dify would refuse (see the module docstring)."""
    if not any(isinstance(item, dict) and item.get("type") in ("file", "file-list") for item in app.inputs):
        return  # the usual app: nothing to check (this runs on every generation call)
    for spec in app.form():
        kind, var = spec["type"], spec["variable"]
        value = inputs.get(var)
        if kind not in ("file", "file-list") or value in (None, "", []):
            continue
        if kind == "file":
            if not isinstance(value, dict):
                raise Reject(400, "invalid_param", f"{var} in input form must be a file")
            mappings = [value]
        else:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise Reject(400, "invalid_param", f"{var} in input form must be a list of files")
            limit = spec.get("max_length", 5)
            if limit and len(value) > limit:
                raise Reject(400, "invalid_param", f"Number of files exceeds the maximum limit {limit}")
            mappings = value
        for mapping in mappings:
            _check_file(state, app, user, spec, mapping)


def _check_file(state: FakeState, app: FakeApp, user: str, spec: Mapping[str, Any], mapping: dict) -> None:
    method = mapping.get("transfer_method")
    if not method:
        raise Reject(400, "invalid_param", "transfer_method is required in file mapping")
    if method not in TRANSFER_METHODS:
        raise Reject(400, "invalid_param", f"Invalid file transfer method: {method}")
    declared = mapping.get("type", "custom")
    if declared not in FILE_TYPES:
        raise Reject(400, "invalid_param", f"'{declared}' is not a valid FileType")
    if method == "remote_url":
        url = mapping.get("url") or mapping.get("remote_url")
        if not url or not isinstance(url, str):
            raise Reject(400, "invalid_param", "Invalid file url")
        name = posixpath.basename(url.split("?")[0])
    else:
        upload = _upload_of(state, app, user, mapping.get("upload_file_id"))
        name = upload.name
    extension = posixpath.splitext(name)[1].lower()
    if not _valid_with_config(declared, extension, method, spec):
        raise Reject(400, "invalid_param", f"File validation failed for file: {name}")


def _upload_of(state: FakeState, app: FakeApp, user: str, upload_id: Any) -> Upload:
    if not upload_id or not isinstance(upload_id, str):
        raise Reject(400, "invalid_param", "Invalid upload file id")
    try:
        uuid.UUID(upload_id)
    except ValueError:
        raise Reject(400, "invalid_param", "Invalid upload file id format") from None
    upload = state.uploads.get(upload_id)
    # A file belongs to the end user who uploaded it: for anyone else it does not exist.
    if upload is None or upload.app_id != app.id or upload.user != user:
        raise Reject(400, "invalid_param", "Invalid upload file")
    return upload


def _valid_with_config(declared: str, extension: str, method: str, spec: Mapping[str, Any]) -> bool:
    """Dify's ``_is_file_valid_with_config`` for a form variable's config (extensions with the dot)."""
    types = spec.get("allowed_file_types") or []
    if types and declared not in types and declared != "custom":
        return False
    extensions = spec.get("allowed_file_extensions")
    dotted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions or []}
    if declared == "custom" and extensions is not None and extension not in dotted:
        return False
    methods = spec.get("allowed_file_upload_methods") or []
    return not (methods and method not in methods)


__all__ = [
    "DEFAULT_USER",
    "UPLOAD_PATH",
    "check_file_inputs",
    "extension_type",
    "parse_multipart",
    "upload_file",
]
