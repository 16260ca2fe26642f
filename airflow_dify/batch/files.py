"""What a file cell names, and which of Dify's file types it is.

A cell of a ``file_columns`` column holds one file or several: an ``http(s)://`` URL (Dify fetches
it: ``remote_url``), a local path or ``file://`` URL, an object-storage path (``s3://``, ``gs://``,
``abfs://``, ...) or the bytes themselves (a BLOB); several as a Python list or a JSON array text.
This module only parses and classifies (no I/O but :func:`open_location`); checking against the
app's limits and uploading are :mod:`airflow_dify.batch.file_inputs`.

The type is Dify's own rule (``standardize_file_type``): by extension first (image, video, audio,
document, in that order, so ``.webm`` is a video), else by MIME type, else ``custom``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import mimetypes
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from airflow_dify.batch.errors import RowError

#: Dify's file types, as ``inputs`` spell them.
FILE_TYPES = ("image", "document", "audio", "video", "custom")
REMOTE_URL = "remote_url"
LOCAL_FILE = "local_file"
TRANSFER_METHODS = (REMOTE_URL, LOCAL_FILE)

# Dify's constants (api/constants/__init__.py), checked in Dify's order.
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "svg"})
VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "mpeg", "webm"})
AUDIO_EXTENSIONS = frozenset({"mp3", "m4a", "wav", "webm", "amr", "mpga"})
DOCUMENT_EXTENSIONS = frozenset(
    {"txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv", "eml", "msg"}
    | {"pptx", "xml", "epub"}
)
_BY_EXTENSION = (
    ("image", IMAGE_EXTENSIONS),
    ("video", VIDEO_EXTENSIONS),
    ("audio", AUDIO_EXTENSIONS),
    ("document", DOCUMENT_EXTENSIONS),
)
#: MIME types ``mimetypes`` does not know everywhere (it reads the OS tables too).
_MIME = {
    "md": "text/markdown",
    "markdown": "text/markdown",
    "mdx": "text/markdown",
    "m4a": "audio/mp4",
    "amr": "audio/amr",
    "mpga": "audio/mpeg",
    "webp": "image/webp",
    "webm": "video/webm",
    "eml": "message/rfc822",
    "msg": "application/vnd.ms-outlook",
    "epub": "application/epub+zip",
    "svg": "image/svg+xml",
}
OCTET_STREAM = "application/octet-stream"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

#: Opens an object-storage path for reading (the Airflow layer passes ``ObjectStoragePath``'s).
Opener = Callable[[str], IO[bytes]]


def extension_of(name: str | None) -> str:
    """Lower-case extension without the dot ('' when none)."""
    ext = posixpath.splitext(name or "")[1]
    return ext[1:].lower() if ext else ""


def mime_of(name: str | None) -> str:
    """The MIME type a file name suggests; ``application/octet-stream`` when unknown."""
    ext = extension_of(name)
    if ext in _MIME:
        return _MIME[ext]
    guessed, _ = mimetypes.guess_type(f"x.{ext}") if ext else (None, None)
    return guessed or OCTET_STREAM


def file_type(name: str | None, mime: str | None = None) -> str:
    """Dify's type of a file: by extension, else by MIME type, else ``custom``."""
    ext = extension_of(name)
    for kind, extensions in _BY_EXTENSION:
        if ext in extensions:
            return kind
    mime = (mime or "").lower()
    for kind in ("image", "video", "audio"):
        if kind in mime:
            return kind
    if "text" in mime or "pdf" in mime:
        return "document"
    return "custom"


def sniff(data: bytes) -> str | None:
    """The extension the first bytes say (PDF, images, audio, video, Office files), or None."""
    head = data[:64]
    signatures = (
        (b"%PDF-", "pdf"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpg"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"ID3", "mp3"),
        (b"\x1aE\xdf\xa3", "webm"),
        (b"#!AMR", "amr"),
    )
    for magic, ext in signatures:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE"):
        return "webp" if head[8:12] == b"WEBP" else "wav"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "m4a" if brand == b"M4A " else "mov" if brand == b"qt  " else "mp4"
    if head[:2] == b"\xff\xfb" or head[:2] == b"\xff\xf3" or head[:2] == b"\xff\xf2":
        return "mp3"
    if head.startswith(b"PK\x03\x04"):
        return _office(data)
    text = data[:2048].lstrip()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "svg"
    return None


def _office(data: bytes) -> str | None:
    """docx/xlsx/pptx/epub are ZIP files; their first entry names tell them apart."""
    head = data[:4096]
    if b"mimetypeapplication/epub+zip" in head:
        return "epub"
    for marker, ext in ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx")):
        if marker in data[:65536]:
            return ext
    return None


@dataclass(frozen=True)
class FileSource:
    """One file a cell names.

    :param kind: ``url`` (sent as ``remote_url``), ``path`` (a local or object-storage path,
        uploaded) or ``bytes`` (uploaded).
    :param location: the URL or path as written (None for bytes).
    :param data: the bytes (``bytes`` only).
    :param digest: sha256 hex of ``data`` (``bytes`` only): the input hash and the upload cache key.
    """

    kind: str
    location: str | None = None
    data: bytes | None = None
    digest: str | None = None

    @property
    def name(self) -> str | None:
        """The file name the location ends with (None for bytes, or a URL without one)."""
        if self.location is None:
            return None
        if self.kind == "url":
            path = unquote(urlsplit(self.location).path)
        else:
            path = local_path(self.location) or _after_scheme(self.location)
        base = posixpath.basename(path.replace("\\", "/"))
        return base or None

    @property
    def label(self) -> str:
        """How messages name the file."""
        return self.location if self.location is not None else f"<{len(self.data or b'')} bytes>"

    def fingerprint(self) -> str:
        """What the input hash covers: the URL or path text, or a digest of the bytes."""
        return f"sha256:{self.digest}" if self.kind == "bytes" else f"{self.kind}:{self.location}"


def _after_scheme(location: str) -> str:
    match = _SCHEME.match(location)
    return urlsplit(location).path if match else location


def local_path(location: str) -> str | None:
    """The local file system path of ``location``, or None for URLs and object-storage paths."""
    match = _SCHEME.match(location)
    if match is None:
        return location
    if match.group(1).lower() == "file":
        return unquote(urlsplit(location).path)
    return None


def _source(value: Any, row_id: Any, column: str) -> FileSource:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise RowError(
                "invalid_file", f"row {row_id!r}: column {column!r} holds empty bytes; no call made"
            )
        return FileSource("bytes", data=data, digest=hashlib.sha256(data).hexdigest())
    if not isinstance(value, str):
        raise RowError(
            "invalid_file",
            f"row {row_id!r}: column {column!r} holds a {type(value).__name__}; a file is a URL, a path "
            "or bytes; no call made",
        )
    text = value.strip()
    if not text:
        raise RowError("invalid_file", f"row {row_id!r}: column {column!r} names an empty file; no call made")
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme in ("http", "https"):
        if not urlsplit(text).netloc:
            raise RowError(
                "invalid_file", f"row {row_id!r}: column {column!r}: {text!r} is not a URL; no call made"
            )
        return FileSource("url", location=text)
    return FileSource("path", location=text)


@dataclass(frozen=True)
class FileCell:
    """The files of one cell; ``many`` when it was written as a list (a JSON array), even of one."""

    sources: tuple[FileSource, ...] = ()
    many: bool = False

    def fingerprint(self) -> list[str] | str | None:
        """What the input hash covers for this cell."""
        prints = [source.fingerprint() for source in self.sources]
        if self.many:
            return prints
        return prints[0] if prints else None


def parse_cell(value: Any, *, row_id: Any, column: str) -> FileCell:
    """The files one cell names; none for NULL, an empty text or an empty list.

    RowError (``invalid_file``) names the row and column when the cell is no file at all.
    """
    if value is None:
        return FileCell()
    many = isinstance(value, (list, tuple)) or (isinstance(value, str) and value.strip().startswith("["))
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RowError(
                "invalid_file",
                f"row {row_id!r}: column {column!r} is not a JSON array of files: {exc}; no call made",
            ) from None
    if isinstance(value, str) and not value.strip():
        return FileCell()
    if isinstance(value, (list, tuple)):
        return FileCell(tuple(_source(item, row_id, column) for item in value), many)
    if many:
        raise RowError(
            "invalid_file", f"row {row_id!r}: column {column!r} is not a JSON array of files; no call made"
        )
    return FileCell((_source(value, row_id, column),))


def fingerprints(files: Mapping[str, FileCell]) -> dict[str, Any]:
    """variable -> what the input hash covers of its files (URL/path texts, digests of bytes)."""
    return {var: cell.fingerprint() for var, cell in files.items()}


def upload_name(source: FileSource, data: bytes, *, var: str, row_id: Any) -> str:
    """The file name sent with an upload: the location's (Dify refuses ``/`` and ``\\``), an
    extension sniffed from the bytes when it has none, ``<var>-<row id>.<ext>`` for bytes."""
    name = source.name
    if not name:
        name = _UNSAFE_NAME.sub("_", f"{var}-{row_id}").strip("._") or var
    if not extension_of(name):
        ext = sniff(data)
        name = f"{name}.{ext}" if ext else f"{name}.bin"
    return name.replace("\\", "_")


def check_file_columns(
    file_columns: Mapping[str, str], input_columns: Mapping[str, str], opener: Any = None
) -> None:
    """ValueError naming the problem with a ``file_columns`` setting."""
    for var, column in file_columns.items():
        if not isinstance(var, str) or not var.strip() or not isinstance(column, str) or not column.strip():
            raise ValueError(f"file_columns maps Dify input variable -> column name, got {var!r}: {column!r}")
    both = sorted(set(file_columns) & set(input_columns))
    if both:
        raise ValueError(f"{both} are in both input_columns and file_columns: a variable takes text or files")
    if opener is not None and not callable(opener):
        raise ValueError("file_opener must be callable: location -> binary file object")


def open_location(location: str, opener: Opener | None = None) -> IO[bytes]:
    """A binary file object for a path: local paths directly, object storage through ``opener``
    (else fsspec when installed). OSError/ImportError tell what is missing."""
    path = local_path(location)
    if path is not None:
        return open(os.path.expanduser(path), "rb")  # noqa: SIM115 - the caller closes it
    if opener is not None:
        return opener(location)
    try:
        fsspec = importlib.import_module("fsspec")  # optional, untyped
    except ImportError:
        raise ImportError(
            f"reading {location.split('://')[0]}:// paths needs Airflow's ObjectStoragePath (the operator "
            "passes it) or fsspec with that file system installed"
        ) from None
    handle: IO[bytes] = fsspec.open(location, "rb").open()
    return handle


__all__ = [
    "AUDIO_EXTENSIONS",
    "DOCUMENT_EXTENSIONS",
    "FILE_TYPES",
    "IMAGE_EXTENSIONS",
    "LOCAL_FILE",
    "REMOTE_URL",
    "TRANSFER_METHODS",
    "VIDEO_EXTENSIONS",
    "FileCell",
    "FileSource",
    "Opener",
    "check_file_columns",
    "extension_of",
    "file_type",
    "fingerprints",
    "local_path",
    "mime_of",
    "open_location",
    "parse_cell",
    "sniff",
    "upload_name",
]
