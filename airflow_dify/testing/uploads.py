"""What FakeDify keeps of uploaded files, and the upload limits it advertises and enforces.

Dify's limits are the deployment's (``UPLOAD_*_FILE_SIZE_LIMIT``, in MB), served by GET /parameters
as ``system_parameters`` and applied by ``POST /files/upload`` by the file's extension. A
:class:`~airflow_dify.testing.apps.FakeApp` can change what it advertises (``upload_limits``), and
what the upload endpoint really enforces (``enforced_limits``, ``upload_extensions``), to play a
deployment whose limits are tighter than it says.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_dify.testing.apps import FakeApp

#: Dify's defaults (api/configs/feature: UPLOAD_*_FILE_SIZE_LIMIT, WORKFLOW_FILE_UPLOAD_LIMIT).
DEFAULT_SYSTEM_PARAMETERS: dict[str, float] = {
    "file_size_limit": 15,
    "image_file_size_limit": 10,
    "audio_file_size_limit": 50,
    "video_file_size_limit": 100,
    "workflow_file_upload_limit": 10,
}
#: The ``file_upload`` feature block of an app that did not set one.
DEFAULT_FILE_UPLOAD: dict[str, Any] = {
    "image": {
        "enabled": False,
        "number_limits": 3,
        "detail": "high",
        "transfer_methods": ["remote_url", "local_file"],
    }
}
#: A file input's form entry keys (Dify's VariableEntity), with the values of an app that set none.
FILE_FORM_DEFAULTS: dict[str, dict[str, Any]] = {
    "file": {"allowed_file_types": [], "allowed_file_extensions": [], "allowed_file_upload_methods": []},
    "file-list": {
        "allowed_file_types": [],
        "allowed_file_extensions": [],
        "allowed_file_upload_methods": [],
        "max_length": 5,
    },
}
MB = 1024 * 1024
#: Upload records kept (oldest dropped first), so a long benchmark does not grow the fake without end.
MAX_UPLOADS = 100_000


def advertised_limits(app: FakeApp) -> dict[str, Any]:
    """GET /parameters ``system_parameters``."""
    return {**DEFAULT_SYSTEM_PARAMETERS, **dict(app.upload_limits or {})}


def enforced_limits(app: FakeApp) -> dict[str, Any]:
    """The limits ``POST /files/upload`` applies: the advertised ones, unless ``enforced_limits`` differ."""
    return {**advertised_limits(app), **dict(app.enforced_limits or {})}


def file_upload_feature(app: FakeApp) -> dict[str, Any]:
    """GET /parameters ``file_upload``."""
    return dict(app.file_upload) if app.file_upload is not None else dict(DEFAULT_FILE_UPLOAD)


@dataclass(frozen=True)
class Upload:
    """One file uploaded, as Dify records it (``created_by`` is the end user's id, ``user`` the
    end-user name the upload was sent as); ``sha256`` lets tests compare what arrived."""

    id: str
    app_id: str
    user: str
    name: str
    size: int
    extension: str
    mime_type: str
    created_by: str
    created_at: int
    sha256: str

    def body(self, base_url: str) -> dict[str, Any]:
        """The 201 answer, in Dify's field order."""
        return {
            "id": self.id,
            "reference": None,
            "name": self.name,
            "size": self.size,
            "extension": self.extension,
            "mime_type": self.mime_type,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "preview_url": None,
            "source_url": f"{base_url}/files/{self.id}/file-preview?timestamp={self.created_at}"
            "&nonce=fake&sign=fake",
            "original_url": None,
            "user_id": None,
            "tenant_id": None,
            "conversation_id": None,
            "file_key": None,
        }


def end_user_id(app_id: str, user: str) -> str:
    """A stable end-user id per (app, user), like the EndUser row Dify creates on first sight."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-dify:{app_id}:{user}"))


class UploadStore:
    """Thread-safe uploads by id, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Upload] = {}

    def add(self, upload: Upload) -> None:
        with self._lock:
            self._by_id[upload.id] = upload
            if len(self._by_id) > MAX_UPLOADS:
                del self._by_id[next(iter(self._by_id))]

    def get(self, upload_id: str) -> Upload | None:
        with self._lock:
            return self._by_id.get(upload_id)

    def all(self) -> list[Upload]:
        with self._lock:
            return list(self._by_id.values())

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()


def limit_bytes(limits: Mapping[str, Any], key: str) -> int:
    return int(float(limits[key]) * MB)


__all__ = [
    "DEFAULT_FILE_UPLOAD",
    "FILE_FORM_DEFAULTS",
    "DEFAULT_SYSTEM_PARAMETERS",
    "Upload",
    "UploadStore",
    "advertised_limits",
    "end_user_id",
    "enforced_limits",
    "file_upload_feature",
    "limit_bytes",
]
