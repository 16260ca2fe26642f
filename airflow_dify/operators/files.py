"""Object-storage paths of ``file_columns``, read through Airflow's ``ObjectStoragePath``.

``s3://bucket/key``, ``gs://...``, ``abfs://...`` (and anything else fsspec knows) are opened with
the file system of the provider installed for that scheme; ``s3://aws_conn@bucket/key`` picks the
Airflow connection holding the credentials (without one, the scheme's default connection).
"""

from __future__ import annotations

from typing import IO

from airflow.sdk import ObjectStoragePath


def open_object_storage(location: str) -> IO[bytes]:
    """A binary file object for ``location`` (the caller closes it)."""
    handle: IO[bytes] = ObjectStoragePath(location).open("rb")
    return handle


__all__ = ["open_object_storage"]
