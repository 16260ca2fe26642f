"""DifyClient.upload_file against FakeDify: the multipart body, Dify's errors, and its own retries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest

from airflow_dify.client import DifyClient, DifyConfigError
from airflow_dify.client.errors import DifyError
from airflow_dify.client.files import upload_request
from airflow_dify.client.transport import Request, Response, StreamedResponse
from airflow_dify.client.urllib3_transport import Urllib3Transport
from airflow_dify.testing import FakeApp, FakeDify
from tests.client.client_helpers import FAST, CountingPool

MakeClient = Callable[..., DifyClient]
#: Bytes that would break a careless multipart body: CRLFs, a fake delimiter, every byte value.
TRICKY = b"%PDF-1.7\r\n--boundary\r\n\r\n--\r\n" + bytes(range(256)) * 4 + b"\r\n"


def uploads_sent(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.path == "/files/upload"]


def test_uploads_one_file_as_the_user_and_returns_difys_record(
    fake_dify: FakeDify, make_client: MakeClient
) -> None:
    pool = CountingPool()
    client = make_client("workflow", pool=pool)
    record = client.upload_file('Scan "7" ä.pdf', TRICKY, "application/pdf", user="row-7")

    (upload,) = fake_dify.uploads
    assert upload.sha256 == hashlib.sha256(TRICKY).hexdigest() and upload.size == len(TRICKY)
    assert upload.name == 'Scan "7" ä.pdf' and upload.user == "row-7"
    assert record["id"] == upload.id and record["size"] == len(TRICKY)
    assert record["extension"] == "pdf" and record["mime_type"] == "application/pdf"
    assert record["created_by"] == upload.created_by and isinstance(record["created_at"], int)
    assert set(record) >= {"id", "name", "size", "extension", "mime_type", "created_by", "created_at"}
    (sent,) = uploads_sent(fake_dify)
    assert sent.status == 201 and sent.body["user"] == "row-7"
    assert pool.acquired == []  # not a generation: no permit from the pool


def test_the_body_is_multipart_with_one_file_part_and_the_user() -> None:
    body, content_type = upload_request("a.png", b"\x89PNG", "image/png", "u")
    boundary = content_type.split("boundary=")[1]
    assert content_type.startswith("multipart/form-data; boundary=airflow-dify-")
    assert body.count(f"--{boundary}".encode()) == 3 and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="user"\r\n\r\nu\r\n' in body
    assert b'name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n' in body


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("dir/a.pdf", b"x", "application/pdf", "u"), "without '/'"),
        (("a.pdf", "text", "application/pdf", "u"), "must be bytes"),
        (("a.pdf", b"x", "", "u"), "MIME type"),
        (("a.pdf", b"x", "application/pdf", " "), "user is required"),
    ],
)
def test_bad_arguments_fail_before_anything_is_sent(
    fake_dify: FakeDify, make_client: MakeClient, args: tuple, words: str
) -> None:
    name, data, mime, user = args
    with pytest.raises(DifyConfigError, match=words):
        make_client("workflow").upload_file(name, data, mime, user=user)
    assert uploads_sent(fake_dify) == []


def test_413_and_415_keep_difys_codes_with_a_message(make_client: MakeClient) -> None:
    app = FakeApp("workflow", upload_limits={"file_size_limit": 0.001}, upload_extensions=["pdf"])
    with FakeDify([app]) as fake, DifyClient(fake.url, app.key, retry=FAST) as client:
        with pytest.raises(DifyError) as big:
            client.upload_file("big.pdf", b"x" * 2048, "application/pdf", user="u")
        with pytest.raises(DifyError) as typed:
            client.upload_file("tool.exe", b"MZ", "application/octet-stream", user="u")
        attempts = len(uploads_sent(fake))
    assert (big.value.status, big.value.code) == (413, "file_too_large")
    assert "over the upload size limit" in str(big.value)  # Dify's own 413 message is empty
    assert (typed.value.status, typed.value.code) == (415, "unsupported_file_type")
    assert not big.value.retryable and attempts == 2  # refused once each, not retried


class FlakyTransport:
    """The real transport, but the first ``failures`` uploads get a 503 (no fault plan covers uploads)."""

    def __init__(self, failures: int) -> None:
        self.inner = Urllib3Transport(pool_size=2)
        self.failures = failures
        self.uploads = 0

    def send(self, request: Request) -> Response:
        if request.url.endswith("/files/upload"):
            self.uploads += 1
            if self.uploads <= self.failures:
                body = json.dumps({"code": "service_unavailable", "message": "down", "status": 503})
                return Response(503, {"Content-Type": "application/json"}, body.encode())
        return self.inner.send(request)

    def stream(self, request: Request) -> StreamedResponse:
        return self.inner.stream(request)

    def close(self) -> None:
        self.inner.close()


def test_a_503_upload_is_retried_and_uploads_once(fake_dify: FakeDify) -> None:
    transport = FlakyTransport(failures=2)
    app = fake_dify.app("workflow")
    with DifyClient(fake_dify.url, app.key, retry=FAST, transport=transport) as client:
        record = client.upload_file("a.pdf", b"%PDF-1.4", "application/pdf", user="u")
    assert transport.uploads == 3 and [u.id for u in fake_dify.uploads] == [record["id"]]


def test_without_user_dify_files_it_under_default_user(fake_dify: FakeDify) -> None:
    import urllib3

    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"
    )
    headers = {
        "Authorization": f"Bearer {fake_dify.app('chat').key}",
        "Content-Type": "multipart/form-data; boundary=b",
    }
    resp = urllib3.request("POST", f"{fake_dify.url}/files/upload", body=body, headers=headers)
    assert resp.status == 201 and fake_dify.uploads[0].user == "DEFAULT-USER"
