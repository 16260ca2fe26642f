"""``POST /files/upload``: one file as ``multipart/form-data``, built by hand (RFC 7578).

Dify takes exactly one part named ``file`` (with a file name and a MIME type, or it answers 400
``filename_not_exists_error`` / 415 ``unsupported_file_type``) and a ``user`` field: the file
then belongs to that end user, and only calls as the same user can send its id. An upload is
not billed, and a second upload of the same file only leaves an unused copy: it is safe to
re-send after a timeout. Its 201 answer is ``{id, name, size, extension, mime_type, created_by,
created_at, ...}``; 413 ``file_too_large`` comes with an empty message, so the codes say it.
"""

from __future__ import annotations

import uuid

from airflow_dify.client.errors import DifyConfigError, DifyError

UPLOAD_PATH = "/files/upload"
#: The endpoint as retries and errors name it.
UPLOAD_ENDPOINT = "files/upload"
#: What an HTTP status of an upload means when the body does not say (a proxy's HTML page).
STATUS_CODES = {413: "file_too_large", 415: "unsupported_file_type"}
_MESSAGES = {
    "file_too_large": "the file is over the upload size limit of Dify (or of a proxy in front of it)",
    "unsupported_file_type": "Dify does not accept this file type",
}


def _quoted(value: str) -> str:
    # RFC 7578 4.2: percent-encode the quote and line breaks; UTF-8 goes as it is (Werkzeug reads it).
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def upload_request(name: str, data: bytes, mime: str, user: str) -> tuple[bytes, str]:
    """(body, Content-Type) of one upload; DifyConfigError names the bad argument."""
    if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name:
        raise DifyConfigError(f"an upload needs a file name without '/' or '\\' (got {name!r})")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DifyConfigError(f"an upload's data must be bytes (got {type(data).__name__})")
    if not isinstance(mime, str) or "/" not in mime:
        raise DifyConfigError(f"an upload needs a MIME type such as 'application/pdf' (got {mime!r})")
    if not isinstance(user, str) or not user.strip():
        raise DifyConfigError("user is required: the end user whose calls will send the file")
    content = bytes(data)
    boundary = f"airflow-dify-{uuid.uuid4().hex}"
    while boundary.encode() in content:  # practically never; but then the part would end early
        boundary = f"airflow-dify-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="user"\r\n\r\n'
        f"{user}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{_quoted(name)}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def upload_failure(err: DifyError) -> DifyError:
    """The upload's error with Dify's code even when a proxy answered 413/415 in HTML, and a
    message when Dify's is empty (its 413 is)."""
    code = STATUS_CODES.get(err.status or 0)
    if code is None:
        return err
    message = err.message
    if not message or message == f"HTTP {err.status}":
        message = _MESSAGES[code]
    elif err.code != code:  # a proxy's page: say what it means, keep what it said
        message = f"{_MESSAGES[code]}: {message}"
    return err.evolve(code=code, message=message, retryable=False)


__all__ = ["UPLOAD_ENDPOINT", "UPLOAD_PATH", "upload_failure", "upload_request"]
