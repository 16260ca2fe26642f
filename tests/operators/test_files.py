"""Documents and images in bulk: file inputs through real dag.test() runs against FakeDify, on
SQLite, PostgreSQL and MySQL/MariaDB.

URLs go as ``remote_url``; local PDFs, BLOBs and object-storage paths are uploaded once
(``POST /files/upload``) under the row's user and go as ``local_file``; what GET /parameters says
an app refuses fails its row without a call, and FakeDify's own 413/415 (a deployment tighter than
it advertises) fail only the row whose file it refused.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_dify.testing import FakeApp, FakeDify, Fault
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

PHOTO = {
    "variable": "photo",
    "type": "file",
    "allowed_file_types": ["image"],
    "allowed_file_upload_methods": ["remote_url", "local_file"],
}
INVOICE = {
    "variable": "invoice",
    "type": "file",
    "allowed_file_types": ["document"],
    "allowed_file_upload_methods": ["local_file", "remote_url"],
}
PAGES = {
    "variable": "pages",
    "type": "file-list",
    "allowed_file_types": ["document", "image"],
    "max_length": 3,
}
SCAN = {"variable": "scan", "type": "file", "allowed_file_types": ["image", "document"]}
BLOB_TYPES = {"sqlite": "BLOB", "postgres": "BYTEA", "mysql": "LONGBLOB"}
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


def pdf(text: str, pad: int = 0) -> bytes:
    """A small but well-formed one-page PDF showing ``text`` (``pad`` bytes of comment make it bigger)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n" + (b"%" + b"p" * (pad - 2) + b"\n" if pad > 2 else b"")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDify]:
    apps = [
        FakeApp("workflow", name="Claims reader", inputs=[PHOTO, INVOICE]),
        FakeApp(
            "chat",
            name="Contract checker",
            inputs=[INVOICE],
            upload_limits={"file_size_limit": 0.05},  # advertised: 51 KiB documents
            enforced_limits={"file_size_limit": 0.02},  # enforced: 20 KiB (413 for what is between)
            upload_extensions=["pdf", "txt", "png"],  # .md is a document, but refused here (415)
        ),
        FakeApp("advanced-chat", name="Page reader", inputs=[PAGES]),
        FakeApp("completion", name="Scan reader", inputs=[SCAN]),
    ]
    with FakeDify(apps) as fake:
        yield fake


def use_app(fake: FakeDify, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "dify", "host": fake.url, "password": fake.app(mode).key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))


def generations(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path != "/files/upload"]


def upload_requests(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.path == "/files/upload"]


def photo_url(i: int) -> str:
    return f"https://img.example.com/claims/{i}.{('jpg', 'png', 'webp')[i % 3]}"


def test_fifty_image_urls_and_twenty_local_pdfs_send_the_right_files_once(
    sql_db: SqlDb, fake: FakeDify, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, "workflow", monkeypatch)
    invoices = {i: tmp_path / f"invoice-{i}.pdf" for i in range(51, 71)}
    for i, path in invoices.items():
        path.write_bytes(pdf(f"Invoice {i}: total {i * 10} EUR"))
    table = unique_table("claims")
    rows = [(i, photo_url(i), None) for i in range(1, 51)] + [(i, None, str(p)) for i, p in invoices.items()]
    sql_db.create_prompts(table, rows, "id INTEGER PRIMARY KEY, photo_url TEXT, invoice_path TEXT")
    # The generation calls of four PDF rows get a 503 first: each is retried by the client.
    fake.faults.add(Fault("status", path="/workflows/run", status=503, on=[58, 62, 66, 70]))
    dag_id = f"files_bulk_{sql_db.kind}"
    try:
        state, summary = run_batch_dag(
            dag_id,
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            file_columns={"photo": "photo_url", "invoice": "invoice_path"},
            max_concurrency=4,
        )
        stored = {r["id"]: r for r in sql_db.records(f"SELECT id, status, error, answer FROM {table}")}
    finally:
        sql_db.drop(table)
    assert state == "success" and summary["succeeded"] == 70 and summary["failed"] == 0, summary
    assert all(r["status"] == "succeeded" and r["error"] is None and r["answer"] for r in stored.values())

    uploads = fake.uploads
    by_name = {u.name: u for u in uploads}
    assert len(uploads) == 20 and sorted(by_name) == sorted(p.name for p in invoices.values())
    for path in invoices.values():
        upload = by_name[path.name]
        assert upload.sha256 == sha(path.read_bytes()) and upload.size == path.stat().st_size
        assert upload.mime_type == "application/pdf" and upload.user == f"airflow-{dag_id}"
    assert [r.status for r in upload_requests(fake)] == [201] * 20  # one upload per file, no repeat

    calls = generations(fake)
    failed = [r for r in calls if r.status == 503]
    answered = [r for r in calls if r.status == 200]
    assert len(failed) == 4 and len(answered) == 70 and len(calls) == 74
    expected: dict[str, dict[str, Any]] = {}
    for i in range(1, 51):
        expected[f"url:{i}"] = {
            "photo": {"type": "image", "transfer_method": "remote_url", "url": photo_url(i)}
        }
    for path in invoices.values():
        upload_id = by_name[path.name].id
        expected[f"id:{upload_id}"] = {
            "invoice": {"type": "document", "transfer_method": "local_file", "upload_file_id": upload_id}
        }

    def key(inputs: dict[str, Any]) -> str:
        if "photo" in inputs:
            return f"url:{inputs['photo']['url'].rsplit('/', 1)[1].split('.')[0]}"
        return f"id:{inputs['invoice']['upload_file_id']}"

    seen = {key(r.body["inputs"]): r.body["inputs"] for r in answered}
    assert seen == expected  # every row once, with exactly its files (NULL inputs left out)
    # The faulted calls were PDF rows' (a retry may be faulted again): each retry sent the same
    # upload id, and no file was uploaded again.
    sent_ids = Counter(
        r.body["inputs"]["invoice"]["upload_file_id"] for r in calls if "invoice" in r.body["inputs"]
    )
    faulted = Counter(r.body["inputs"]["invoice"]["upload_file_id"] for r in failed)
    assert sum(faulted.values()) == 4 and all(sent_ids[i] == n + 1 for i, n in faulted.items())
    assert all(n == 1 for i, n in sent_ids.items() if i not in faulted)
    assert all(r.body["user"] == f"airflow-{dag_id}" for r in calls)


def test_oversize_and_unsupported_files_fail_their_rows_only(
    sql_db: SqlDb, fake: FakeDify, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, "chat", monkeypatch)
    files = {
        "small.pdf": pdf("fine"),
        "huge.pdf": pdf("too big for what Dify advertises", pad=80_000),
        "mid.pdf": pdf("fits the advertised limit, not the enforced one", pad=30_000),
        "tool.exe": b"MZ\x90\x00 not a document",
        "notes.md": b"# Notes\nA markdown document the deployment refuses.\n",
        "photo.png": PNG,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    cells = {
        1: str(tmp_path / "small.pdf"),
        2: str(tmp_path / "huge.pdf"),
        3: str(tmp_path / "tool.exe"),
        4: str(tmp_path / "mid.pdf"),
        5: str(tmp_path / "notes.md"),
        6: "https://docs.example.com/contract-6.pdf",
        7: str(tmp_path / "photo.png"),
        8: str(tmp_path / "missing.pdf"),
    }
    table = unique_table("contracts")
    sql_db.create_prompts(
        table,
        [(i, f"Check contract {i}", cell) for i, cell in cells.items()],
        "id INTEGER PRIMARY KEY, prompt TEXT, contract TEXT",
    )
    try:
        state, summary = run_batch_dag(
            f"files_refused_{sql_db.kind}",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            file_columns={"invoice": "contract"},
            max_failed_ratio=1.0,
        )
        stored = {r["id"]: r for r in sql_db.records(f"SELECT id, status, error, total_tokens FROM {table}")}
    finally:
        sql_db.drop(table)
    assert state == "success" and summary["succeeded"] == 2 and summary["failed"] == 6, summary
    assert stored[1]["status"] == stored[6]["status"] == "succeeded"
    errors = {i: r["error"] for i, r in stored.items() if r["status"] == "failed"}
    assert set(errors) == {2, 3, 4, 5, 7, 8}
    assert errors[2].startswith("file_too_large: row 2: column 'contract': file ")
    assert "huge.pdf" in errors[2] and "over Dify's 0.05 MB limit for document files" in errors[2]
    assert errors[3].startswith("unsupported_file_type: row 3: column 'contract'")
    assert "tool.exe" in errors[3] and "a custom file (.exe)" in errors[3] and "types document" in errors[3]
    assert errors[4].startswith("413 file_too_large: row 4: column 'contract'")
    assert "mid.pdf" in errors[4] and "too large" in errors[4] and "no generation call made" in errors[4]
    assert (
        errors[5].startswith("415 unsupported_file_type: row 5: column 'contract'")
        and "notes.md" in errors[5]
    )
    assert errors[7].startswith("unsupported_file_type: row 7") and "an image file (.png)" in errors[7]
    assert errors[8].startswith("file_unreadable: row 8: column 'contract': cannot read file")
    assert all(stored[i]["total_tokens"] is None for i in errors)  # nothing was billed for them

    # Caught before upload: no upload, no call; refused by FakeDify (413/415): no generation call.
    assert sorted((r.body["files"][0]["name"], r.status) for r in upload_requests(fake)) == [
        ("mid.pdf", 413),
        ("notes.md", 415),
        ("small.pdf", 201),
    ]
    sent = [r.body["inputs"]["invoice"] for r in generations(fake)]
    assert sorted(sent, key=lambda f: f["transfer_method"]) == [
        {"type": "document", "transfer_method": "local_file", "upload_file_id": fake.uploads[0].id},
        {
            "type": "document",
            "transfer_method": "remote_url",
            "url": "https://docs.example.com/contract-6.pdf",
        },
    ]


def test_a_file_list_input_takes_three_files_per_row_as_the_rows_own_user(
    sql_db: SqlDb, fake: FakeDify, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, "advanced-chat", monkeypatch)
    rows = []
    for i in range(1, 6):
        first, second = tmp_path / f"r{i}-p1.pdf", tmp_path / f"r{i}-p2.pdf"
        first.write_bytes(pdf(f"row {i} page 1"))
        second.write_bytes(pdf(f"row {i} page 2"))
        pages = [str(first), f"file://{second}", f"https://img.example.com/r{i}/p3.png"]
        if i == 5:
            pages.append("https://img.example.com/one-too-many.png")
        rows.append((i, f"Summarise the pages of row {i}", json.dumps(pages)))
    table = unique_table("pages")
    sql_db.create_prompts(table, rows, "id INTEGER PRIMARY KEY, prompt TEXT, pages TEXT")
    dag_id = f"files_list_{sql_db.kind}"
    try:
        state, summary = run_batch_dag(
            dag_id,
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            file_columns={"pages": "pages"},
            user_per_row=True,
            max_failed_ratio=0.5,
        )
        stored = {r["id"]: r for r in sql_db.records(f"SELECT id, status, error FROM {table}")}
    finally:
        sql_db.drop(table)
    assert state == "success" and summary["succeeded"] == 4 and summary["failed"] == 1, summary
    assert stored[5]["error"] == (
        "too_many_files: row 5: column 'pages' names 4 files, but input 'pages' takes at most 3 files; "
        "no call made"
    )
    uploads = {u.id: u for u in fake.uploads}
    assert len(uploads) == 8
    calls = generations(fake)
    assert len(calls) == 4
    for call in calls:
        i = int(call.body["query"].rsplit(" ", 1)[1])
        user = call.body["user"]
        assert user == f"airflow-{dag_id}-{i}"  # user_per_row: each row's own end user
        first, second, third = call.body["inputs"]["pages"]
        assert first["type"] == second["type"] == "document" and third == {
            "type": "image",
            "transfer_method": "remote_url",
            "url": f"https://img.example.com/r{i}/p3.png",
        }
        for item, name in ((first, f"r{i}-p1.pdf"), (second, f"r{i}-p2.pdf")):
            upload = uploads[item["upload_file_id"]]
            assert item["transfer_method"] == "local_file"
            assert upload.name == name and upload.user == user  # uploaded as the user who sends it
            assert upload.sha256 == sha((tmp_path / name).read_bytes())


def test_bytes_in_a_blob_column_are_uploaded_and_an_edited_blob_is_changed(
    sql_db: SqlDb, fake: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, "completion", monkeypatch)
    blobs = {i: (PNG + bytes([i])) if i % 2 else pdf(f"scan {i}") for i in range(1, 7)}
    table = unique_table("scans")
    sql_db.create_prompts(
        table,
        [(i, f"Read scan {i}", blobs[i]) for i in blobs],
        f"id INTEGER PRIMARY KEY, prompt TEXT, scan {BLOB_TYPES[sql_db.kind]}",
    )
    kwargs: dict[str, Any] = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "file_columns": {"scan": "scan"},
        "redo": "changed",
    }
    try:
        state, summary = run_batch_dag(f"files_blob_{sql_db.kind}", **kwargs)
        assert state == "success" and summary["succeeded"] == 6, summary
        first_uploads = list(fake.uploads)
        first_calls = generations(fake)

        fake.reset()
        state, summary = run_batch_dag(f"files_blob_{sql_db.kind}_same", **kwargs)
        assert state == "success" and summary["processed"] == 0, summary  # unchanged bytes: no call

        edited = pdf("scan 3, rescanned")
        sql_db.execute(f"UPDATE {table} SET scan = ? WHERE id = 3", (edited,))
        state, summary = run_batch_dag(f"files_blob_{sql_db.kind}_edited", **kwargs)
        assert state == "success" and summary["processed"] == 1 and summary["succeeded"] == 1, summary
    finally:
        sql_db.drop(table)
    by_name = {u.name: u for u in first_uploads}
    assert sorted(by_name) == sorted(f"scan-{i}.{'png' if i % 2 else 'pdf'}" for i in blobs)
    for i, data in blobs.items():
        upload = by_name[f"scan-{i}.{'png' if i % 2 else 'pdf'}"]
        assert upload.sha256 == sha(data) and upload.mime_type == (
            "image/png" if i % 2 else "application/pdf"
        )
    types = sorted(r.body["inputs"]["scan"]["type"] for r in first_calls)
    assert types == ["document"] * 3 + ["image"] * 3
    assert all(r.body["inputs"]["scan"]["transfer_method"] == "local_file" for r in first_calls)
    (again,) = generations(fake)
    assert fake.uploads[-1].name == "scan-3.pdf" and fake.uploads[-1].sha256 == sha(edited)
    assert again.body["inputs"]["scan"]["upload_file_id"] == fake.uploads[-1].id


def test_object_storage_paths_are_read_through_object_storage_path(
    sqlite_db: SqlDb, fake: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsspec's in-memory file system stands in for S3/GCS: attached like a provider's file system
    # (amazon's s3, google's gs, ...), it is read through the same ObjectStoragePath code path.
    from airflow.sdk.io.store import attach

    memory = fsspec.filesystem("memory")
    attach("memory", fs=memory)
    docs = {i: pdf(f"stored invoice {i}") for i in range(1, 4)}
    for i, data in docs.items():
        memory.pipe(f"/invoices-bucket/2026/{i}.pdf", data)
    use_app(fake, "workflow", monkeypatch)
    table = unique_table("stored")
    sqlite_db.create_prompts(
        table,
        [(i, f"memory://invoices-bucket/2026/{i}.pdf") for i in docs]
        + [(9, "memory://invoices-bucket/none.pdf")],
        "id INTEGER PRIMARY KEY, invoice TEXT",
    )
    try:
        state, summary = run_batch_dag(
            "files_object_storage",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            file_columns={"invoice": "invoice"},
            max_failed_ratio=0.5,
        )
        stored = {r["id"]: r for r in sqlite_db.records(f"SELECT id, status, error FROM {table}")}
    finally:
        sqlite_db.drop(table)
        memory.rm("/invoices-bucket", recursive=True)
    assert state == "success" and summary["succeeded"] == 3 and summary["failed"] == 1, summary
    assert sorted(u.sha256 for u in fake.uploads) == sorted(sha(d) for d in docs.values())
    assert stored[9]["error"].startswith("file_unreadable: row 9: column 'invoice': cannot read file")
