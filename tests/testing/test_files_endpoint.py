"""FakeDify's POST /files/upload and the file inputs of generation calls, over real HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from airflow_dify.testing import FakeApp, FakeDify
from airflow_dify.testing.files import parse_multipart

FORM = [
    {
        "variable": "doc",
        "type": "file",
        "allowed_file_types": ["document"],
        "allowed_file_upload_methods": ["local_file"],
    },
    {"variable": "pics", "type": "file-list", "allowed_file_types": ["image"], "max_length": 2},
    {
        "variable": "any",
        "type": "file",
        "allowed_file_types": ["custom"],
        "allowed_file_extensions": [".zip"],
    },
]


@pytest.fixture
def fake() -> Iterator[FakeDify]:
    app = FakeApp("workflow", inputs=FORM, upload_limits={"image_file_size_limit": 0.001})
    with FakeDify([app]) as fake:
        yield fake


def post(fake: FakeDify, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {fake.app('workflow').key}", "Content-Type": content_type}
    resp = urllib3.request("POST", f"{fake.url}{path}", body=body, headers=headers)
    return resp.status, json.loads(resp.data)


def multipart(*parts: tuple[str, str | None, str | None, bytes]) -> tuple[bytes, str]:
    out = b""
    for name, filename, mime, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        head = f"--XyZ\r\nContent-Disposition: {disposition}\r\n" + (
            f"Content-Type: {mime}\r\n" if mime else ""
        )
        out += head.encode() + b"\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n", "multipart/form-data; boundary=XyZ"


def upload(
    fake: FakeDify, name: str, data: bytes, mime: str = "application/pdf", user: str = "u"
) -> tuple[int, Any]:
    return post(
        fake, "/files/upload", *multipart(("user", None, None, user.encode()), ("file", name, mime, data))
    )


def test_parses_parts_exactly() -> None:
    body, content_type = multipart(
        ("user", None, None, b"u"), ("file", "a.bin", "application/x", b"\r\n--XY\r\n")
    )
    user, file = parse_multipart(content_type, body)
    assert (user.name, user.filename, user.data) == ("user", None, b"u")
    assert (file.name, file.filename, file.mime_type, file.data) == (
        "file",
        "a.bin",
        "application/x",
        b"\r\n--XY\r\n",
    )


@pytest.mark.parametrize(
    ("parts", "status", "code"),
    [
        ([("user", None, None, b"u")], 400, "no_file_uploaded"),
        (
            [("file", "a.pdf", "application/pdf", b"1"), ("file2", "b.pdf", "application/pdf", b"2")],
            400,
            "too_many_files",
        ),
        ([("file", "a.pdf", None, b"1")], 415, "unsupported_file_type"),
        ([("file", "", "application/pdf", b"1")], 400, "filename_not_exists_error"),
        ([("file", "a\\b.pdf", "application/pdf", b"1")], 400, "invalid_param"),
        ([("file", "big.png", "image/png", b"x" * 2000)], 413, "file_too_large"),
    ],
)
def test_refused_uploads_get_difys_codes(fake: FakeDify, parts: list, status: int, code: str) -> None:
    got, body = post(fake, "/files/upload", *multipart(*parts))
    assert (got, body["code"], body["status"]) == (status, code, status)
    if code == "file_too_large":
        assert body["message"] == ""  # as Dify sends it
    assert fake.uploads == []


def test_not_multipart_is_no_file(fake: FakeDify) -> None:
    assert post(fake, "/files/upload", b"{}", "application/json")[1]["code"] == "no_file_uploaded"


def test_get_is_not_allowed(fake: FakeDify) -> None:
    resp = urllib3.request(
        "GET", f"{fake.url}/files/upload", headers={"Authorization": f"Bearer {fake.app('workflow').key}"}
    )
    assert resp.status == 405


def test_parameters_advertise_the_file_inputs_and_limits(fake: FakeDify) -> None:
    resp = urllib3.request(
        "GET", f"{fake.url}/parameters", headers={"Authorization": f"Bearer {fake.app('workflow').key}"}
    )
    body = json.loads(resp.data)
    doc, pics, _ = body["user_input_form"]
    assert doc["file"]["allowed_file_types"] == ["document"] and doc["file"][
        "allowed_file_upload_methods"
    ] == ["local_file"]
    assert pics["file-list"]["max_length"] == 2
    assert body["system_parameters"]["image_file_size_limit"] == 0.001
    assert body["system_parameters"]["file_size_limit"] == 15  # Dify's default
    assert body["file_upload"]["image"]["enabled"] is False


def run(fake: FakeDify, inputs: dict[str, Any], user: str = "u") -> tuple[int, Any]:
    body = json.dumps({"inputs": inputs, "user": user, "response_mode": "blocking"}).encode()
    return post(fake, "/workflows/run", body, "application/json")


def test_generation_takes_files_the_user_uploaded(fake: FakeDify) -> None:
    status, doc = upload(fake, "a.pdf", b"%PDF")
    assert status == 201
    pics = [{"type": "image", "transfer_method": "remote_url", "url": "https://x.org/1.png"}]
    status, body = run(
        fake,
        {
            "doc": {"type": "document", "transfer_method": "local_file", "upload_file_id": doc["id"]},
            "pics": pics,
        },
    )
    assert status == 200 and body["data"]["status"] == "succeeded"
    assert fake.requests[-1].body["inputs"]["doc"]["upload_file_id"] == doc["id"]  # the log keeps inputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"doc": [{"type": "document"}]}, "doc in input form must be a file"),
        ({"pics": {"type": "image"}}, "pics in input form must be a list of files"),
        ({"doc": {"type": "document"}}, "transfer_method is required"),
        ({"doc": {"type": "document", "transfer_method": "base64x"}}, "Invalid file transfer method"),
        ({"doc": {"type": "pdf", "transfer_method": "local_file"}}, "is not a valid FileType"),
        (
            {"doc": {"type": "document", "transfer_method": "local_file", "upload_file_id": "nope"}},
            "Invalid upload file id format",
        ),
        (
            {
                "doc": {
                    "type": "document",
                    "transfer_method": "local_file",
                    "upload_file_id": str(uuid.uuid4()),
                }
            },
            "Invalid upload file",
        ),
        (
            {"doc": {"type": "document", "transfer_method": "remote_url", "url": "https://x.org/a.pdf"}},
            "File validation failed for file: a.pdf",
        ),
        ({"pics": [{"type": "image", "transfer_method": "remote_url"}]}, "Invalid file url"),
        (
            {"pics": [{"type": "document", "transfer_method": "remote_url", "url": "https://x.org/a.pdf"}]},
            "File validation failed",
        ),
        (
            {
                "pics": [
                    {"type": "image", "transfer_method": "remote_url", "url": f"https://x.org/{i}.png"}
                    for i in range(3)
                ]
            },
            "exceeds the maximum limit 2",
        ),
        (
            {"any": {"type": "custom", "transfer_method": "remote_url", "url": "https://x.org/a.exe"}},
            "File validation failed",
        ),
    ],
)
def test_file_inputs_dify_would_refuse_are_invalid_param(fake: FakeDify, inputs: dict, message: str) -> None:
    status, body = run(fake, inputs)
    assert (status, body["code"]) == (400, "invalid_param") and message in body["message"], body
    assert fake.billing == []


def test_another_users_upload_does_not_exist_for_a_call(fake: FakeDify) -> None:
    _, doc = upload(fake, "a.pdf", b"%PDF", user="alice")
    status, body = run(
        fake,
        {"doc": {"type": "document", "transfer_method": "local_file", "upload_file_id": doc["id"]}},
        user="bob",
    )
    assert (status, body["message"]) == (400, "Invalid upload file")
    _, zipped = upload(fake, "a.zip", b"PK\x03\x04", "application/zip", user="bob")
    status, _ = run(
        fake,
        {"any": {"type": "custom", "transfer_method": "local_file", "upload_file_id": zipped["id"]}},
        user="bob",
    )
    assert status == 200
