"""File inputs, Airflow-free: which type a file is, what a cell names, and what a row sends
(checked against GET /parameters, uploaded once) against a real FakeDify."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_dify.batch.errors import PreflightError, RowError
from airflow_dify.batch.file_inputs import FileInputs
from airflow_dify.batch.file_rules import FileRule, SizeLimits, file_rules
from airflow_dify.batch.files import FileCell, FileSource, file_type, mime_of, parse_cell, sniff, upload_name
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.rows import Prompt, PromptBuilder
from airflow_dify.client import DifyClient
from airflow_dify.client.errors import DifyError
from airflow_dify.testing import FakeApp, FakeDify
from tests.client.client_helpers import FAST

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


# -- types -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photo.jpg", "image"),
        ("photo.JPEG", "image"),
        ("a.png", "image"),
        ("a.webp", "image"),
        ("a.gif", "image"),
        ("logo.svg", "image"),
        ("invoice.pdf", "document"),
        ("notes.md", "document"),
        ("notes.mdx", "document"),
        ("page.htm", "document"),
        ("sheet.xlsx", "document"),
        ("old.xls", "document"),
        ("mail.eml", "document"),
        ("mail.msg", "document"),
        ("deck.pptx", "document"),
        ("book.epub", "document"),
        ("data.csv", "document"),
        ("song.mp3", "audio"),
        ("memo.m4a", "audio"),
        ("call.wav", "audio"),
        ("voice.amr", "audio"),
        ("x.mpga", "audio"),
        ("clip.mp4", "video"),
        ("clip.mov", "video"),
        ("clip.mpeg", "video"),
        ("clip.webm", "video"),  # in Dify's video and audio lists: video is checked first
        ("tool.exe", "custom"),
        ("archive.zip", "custom"),
        ("README", "custom"),
        (None, "custom"),
    ],
)
def test_type_comes_from_the_extension_in_difys_order(name: str | None, expected: str) -> None:
    assert file_type(name, mime_of(name)) == expected


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("image/heic", "image"),
        ("video/x-matroska", "video"),
        ("audio/ogg", "audio"),
        ("text/plain", "document"),
        ("application/pdf", "document"),
        ("application/zip", "custom"),
        (None, "custom"),
    ],
)
def test_without_a_known_extension_the_mime_type_decides(mime: str | None, expected: str) -> None:
    assert file_type("blob.unknownext", mime) == expected


def test_mime_types_of_difys_extensions() -> None:
    assert mime_of("a.pdf") == "application/pdf"
    assert mime_of("a.PNG") == "image/png"
    assert mime_of("a.md") == "text/markdown"
    assert mime_of("a.m4a") == "audio/mp4"
    assert mime_of("a.docx").endswith("wordprocessingml.document")
    assert mime_of("noext") == "application/octet-stream"


@pytest.mark.parametrize(
    ("data", "ext"),
    [
        (PDF, "pdf"),
        (PNG, "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpg"),
        (b"GIF89a....", "gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"ID3\x03\x00", "mp3"),
        (b"\x00\x00\x00\x18ftypmp42", "mp4"),
        (b"\x00\x00\x00\x18ftypM4A ", "m4a"),
        (b"PK\x03\x04" + b"\x00" * 26 + b"word/document.xml", "docx"),
        (b"PK\x03\x04" + b"\x00" * 26 + b"xl/workbook.xml", "xlsx"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "svg"),
        (b"just some bytes", None),
    ],
)
def test_sniffs_the_type_of_bytes(data: bytes, ext: str | None) -> None:
    assert sniff(data) == ext


def test_upload_names_come_from_the_location_or_the_row() -> None:
    path = FileSource("path", location="/data/in/Invoice 7.pdf")
    assert upload_name(path, PDF, var="doc", row_id=7) == "Invoice 7.pdf"
    bare = FileSource("path", location="s3://bucket/scans/0007")
    assert upload_name(bare, PDF, var="doc", row_id=7) == "0007.pdf"  # sniffed, so Dify types it
    blob = FileSource("bytes", data=PNG, digest="x")
    assert upload_name(blob, PNG, var="photo", row_id="a/b 9") == "photo-a_b_9.png"
    assert upload_name(blob, b"????", var="photo", row_id=3) == "photo-3.bin"


# -- cells -----------------------------------------------------------------------------------------
def parse(value: Any) -> FileCell:
    return parse_cell(value, row_id=5, column="c")


def test_a_cell_names_one_file_or_several() -> None:
    assert parse("https://cdn.example.com/a.png").sources == (
        FileSource("url", location="https://cdn.example.com/a.png"),
    )
    assert parse("  /data/a.pdf  ").sources == (FileSource("path", location="/data/a.pdf"),)
    assert parse("file:///data/a%20b.pdf").sources[0].name == "a b.pdf"
    assert parse("s3://bucket/key/x.pdf").sources[0].name == "x.pdf"
    assert parse("relative/x.pdf").sources[0].kind == "path"
    for raw in (PDF, bytearray(PDF), memoryview(PDF)):
        (source,) = parse(raw).sources
        assert source.kind == "bytes" and source.data == PDF
        assert source.digest == hashlib.sha256(PDF).hexdigest()
    many = parse('["https://x.org/1.png", "/data/2.pdf", "gs://b/3.jpg"]')
    assert many.many and [s.kind for s in many.sources] == ["url", "path", "path"]
    assert parse(["https://x.org/1.png", PDF]).many
    assert parse('["https://x.org/1.png"]').many  # a list of one is still a list
    assert not parse("https://x.org/1.png").many


@pytest.mark.parametrize("value", [None, "", "   ", [], "[]"])
def test_null_and_empty_cells_name_no_file(value: Any) -> None:
    assert parse(value).sources == ()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (42, "holds a int"),
        ('["a.pdf", ', "not a JSON array"),
        ('["ok.pdf", 3]', "holds a int"),
        ([["nested.pdf"]], "holds a list"),
        (b"", "holds empty bytes"),
        ("https:///nohost.png", "not a URL"),
        ('{"url": "x"}', None),
    ],
)
def test_cells_that_name_no_file_fail_the_row_naming_it(value: Any, words: str | None) -> None:
    if words is None:  # a JSON object is taken as a path text: it fails when read, not here
        assert parse(value).sources[0].kind == "path"
        return
    with pytest.raises(RowError) as info:
        parse(value)
    assert info.value.code == "invalid_file"
    assert "row 5: column 'c'" in str(info.value) and words in str(info.value)


def test_the_input_hash_covers_the_file_texts_and_digests() -> None:
    builder = PromptBuilder(
        family="workflow", id_column="id", input_columns={"q": "q"}, file_columns={"doc": "doc"}
    )
    assert builder.read_columns == ["q", "doc"]

    def hashed(doc: Any) -> str | None:
        return builder.build({"id": 1, "q": "hello", "doc": doc}).input_hash

    assert hashed("/data/a.pdf") == hashed("/data/a.pdf")
    assert hashed("/data/a.pdf") != hashed("/data/b.pdf")
    assert hashed(PDF) == hashed(bytearray(PDF)) != hashed(PDF + b" ")
    assert hashed('["/data/a.pdf"]') != hashed("/data/a.pdf")  # a list input is another request
    plain = PromptBuilder(family="workflow", id_column="id", input_columns={"q": "q"})
    assert hashed(None) != plain.build({"id": 1, "q": "hello"}).input_hash
    prompt = builder.build({"id": 1, "q": "hello", "doc": PDF})
    assert prompt.inputs == {"q": "hello"} and prompt.files["doc"].sources[0].data == PDF


def test_a_workflow_may_take_files_only() -> None:
    builder = PromptBuilder(family="workflow", id_column="id", file_columns={"doc": "doc"})
    assert builder.build({"id": 1, "doc": "/x.pdf"}).inputs == {}
    completion = PromptBuilder(
        family="completion", id_column="id", query_column=None, file_columns={"d": "d"}
    )
    assert completion.build({"id": 1, "d": "/x.pdf"}).query is None  # not "empty": it sends a file


def test_options_refuse_a_variable_mapped_as_text_and_as_files() -> None:
    with pytest.raises(ValueError, match="both input_columns and file_columns"):
        BatchOptions(input_columns={"doc": "a"}, file_columns={"doc": "b"})
    with pytest.raises(ValueError, match="file_columns maps"):
        BatchOptions(file_columns={"doc": ""})
    with pytest.raises(ValueError, match="file_opener must be callable"):
        BatchOptions(file_columns={"doc": "d"}, file_opener="s3")  # type: ignore[arg-type]


# -- rules from GET /parameters ----------------------------------------------------------------------
def test_rules_follow_difys_check() -> None:
    images = FileRule(kind="file", types=("image",), extensions=(), methods=("remote_url", "local_file"))
    assert images.accepts("image", "png", "remote_url") == "image"
    assert images.accepts("document", "pdf", "local_file") is None
    custom = FileRule(kind="file", types=("document", "custom"), extensions=("zip",))
    assert custom.accepts("document", "pdf", "local_file") == "document"
    assert custom.accepts("custom", "zip", "local_file") == "custom"
    assert custom.accepts("custom", "exe", "local_file") is None
    assert custom.accepts("image", "png", "local_file") is None  # png is not among the extensions
    pdf_as_custom = FileRule(kind="file", types=("custom",), extensions=("pdf",))
    assert pdf_as_custom.accepts("document", "pdf", "local_file") == "custom"
    uploads_only = FileRule(kind="file", methods=("local_file",))
    assert uploads_only.accepts("image", "png", "remote_url") is None
    assert FileRule().accepts("custom", "exe", "local_file") == "custom"  # nothing known: no check
    assert FileRule(extensions=()).accepts("custom", "exe", "local_file") is None  # Dify: [] refuses


def test_rules_and_limits_are_read_from_parameters() -> None:
    parameters = {
        "user_input_form": [
            {"text-input": {"variable": "q", "required": True}},
            {
                "file": {
                    "variable": "doc",
                    "required": True,
                    "allowed_file_types": ["document"],
                    "allowed_file_extensions": [".PDF"],
                    "allowed_file_upload_methods": ["local_file"],
                }
            },
            {"file-list": {"variable": "pics", "allowed_file_types": ["image"], "max_length": 3}},
        ],
        "system_parameters": {
            "file_size_limit": 15,
            "image_file_size_limit": 10,
            "audio_file_size_limit": 50,
        },
    }
    rules = file_rules(parameters)
    assert set(rules) == {"doc", "pics"}
    assert rules["doc"] == FileRule("file", True, ("document",), ("pdf",), ("local_file",), 1)
    assert (
        rules["pics"].kind == "file-list"
        and rules["pics"].max_files == 3
        and rules["pics"].extensions is None
    )
    limits = SizeLimits.from_parameters(parameters)
    assert limits.by_type == {
        "image": 10 * 1024 * 1024,
        "audio": 50 * 1024 * 1024,
        "document": 15 * 1024 * 1024,
        "custom": 15 * 1024 * 1024,
    }  # no video limit advertised: not checked
    assert limits.max_files is None


# -- a row's files against FakeDify -----------------------------------------------------------------
FORM = [
    {"variable": "q"},
    {
        "variable": "doc",
        "type": "file",
        "allowed_file_types": ["document"],
        "allowed_file_upload_methods": ["local_file", "remote_url"],
    },
    {"variable": "photo", "type": "file", "allowed_file_types": ["image"]},
    {"variable": "pages", "type": "file-list", "allowed_file_types": ["document", "image"], "max_length": 3},
    {"variable": "needed", "type": "file", "required": False},
]
COLUMNS = {"doc": "doc", "photo": "photo", "pages": "pages"}


@pytest.fixture
def fake() -> Iterator[FakeDify]:
    app = FakeApp("workflow", inputs=FORM, upload_limits={"file_size_limit": 0.01})  # 10 KiB documents
    with FakeDify([app]) as fake:
        yield fake


@pytest.fixture
def client(fake: FakeDify) -> Iterator[DifyClient]:
    with DifyClient(fake.url, fake.app("workflow").key, retry=FAST) as client:
        yield client


def file_inputs(client: DifyClient, columns: Mapping[str, str] = COLUMNS, **kwargs: Any) -> FileInputs:
    return FileInputs.for_app(client, "app", client.parameters(), columns, **kwargs)


def prompt(row: dict[str, Any], columns: Mapping[str, str] = COLUMNS) -> Prompt:
    builder = PromptBuilder(family="workflow", id_column="id", input_columns={"q": "q"}, file_columns=columns)
    return builder.build({"q": "?", **row})


def test_urls_go_as_remote_url_and_paths_and_bytes_are_uploaded(
    fake: FakeDify, client: DifyClient, tmp_path: Path
) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(PDF)
    files = file_inputs(client)
    row = {
        "id": 1,
        "doc": str(pdf),
        "photo": "https://cdn.example.com/p/1.png",
        "pages": [PNG, f"file://{pdf}"],
    }
    inputs = files.attach(prompt(row), user="u-1")

    assert [u.name for u in fake.uploads] == ["invoice.pdf", "pages-1.png"]  # the same PDF once
    doc, png = fake.uploads
    assert doc.sha256 == hashlib.sha256(PDF).hexdigest() and doc.mime_type == "application/pdf"
    assert png.mime_type == "image/png" and doc.user == png.user == "u-1"
    assert inputs == {
        "q": "?",
        "doc": {"type": "document", "transfer_method": "local_file", "upload_file_id": doc.id},
        "photo": {"type": "image", "transfer_method": "remote_url", "url": "https://cdn.example.com/p/1.png"},
        "pages": [
            {"type": "image", "transfer_method": "local_file", "upload_file_id": png.id},
            {"type": "document", "transfer_method": "local_file", "upload_file_id": doc.id},
        ],
    }
    assert files.uploaded == 2
    # FakeDify takes the payload as Dify would (same user; the uploads exist).
    assert client.run_workflow(inputs, user="u-1", response_mode="blocking").status == "succeeded"
    with pytest.raises(DifyError, match="Invalid upload file"):  # another user's uploads do not exist
        client.run_workflow(inputs, user="u-2", response_mode="blocking")


def test_a_single_file_for_a_list_input_is_still_a_list_and_null_leaves_it_out(
    fake: FakeDify, client: DifyClient
) -> None:
    inputs = file_inputs(client).attach(prompt({"id": 2, "pages": "https://x.org/a.pdf"}), user="u")
    assert inputs == {
        "q": "?",
        "pages": [{"type": "document", "transfer_method": "remote_url", "url": "https://x.org/a.pdf"}],
    }
    assert fake.uploads == []


@pytest.mark.parametrize(
    ("row", "code", "words"),
    [
        (
            {"photo": "https://x.org/a.pdf"},
            "unsupported_file_type",
            "is a document file (.pdf) sent as a URL",
        ),
        ({"doc": "/nowhere/missing.pdf"}, "file_unreadable", "cannot read file '/nowhere/missing.pdf'"),
        (
            {
                "pages": '["https://x.org/1.png","https://x.org/2.png","https://x.org/3.png","https://x.org/4.png"]'
            },
            "too_many_files",
            "names 4 files, but input 'pages' takes at most 3 files",
        ),
        ({"photo": '["https://x.org/1.png","https://x.org/2.png"]'}, "too_many_files", "takes one file"),
        (
            {"doc": PDF + b"x" * 20_000},
            "file_too_large",
            "is 0.02 MB, over Dify's 0.01 MB limit for document",
        ),
    ],
)
def test_a_file_the_app_would_refuse_fails_the_row_before_any_upload(
    fake: FakeDify, client: DifyClient, row: dict[str, Any], code: str, words: str, tmp_path: Path
) -> None:
    ok = tmp_path / "ok.pdf"
    ok.write_bytes(PDF)
    full = {"id": 3, "doc": str(ok), **row} if "doc" not in row else {"id": 3, **row}
    with pytest.raises(RowError) as info:
        file_inputs(client).attach(prompt(full), user="u")
    assert info.value.code == code
    assert (
        "row 3: column" in str(info.value) and words in str(info.value) and "no call made" in str(info.value)
    )
    assert fake.uploads == []  # the good file of the row was not uploaded either


def test_a_big_object_is_not_read_past_the_limit(fake: FakeDify, client: DifyClient) -> None:
    reads: list[int] = []

    class Big:
        def __enter__(self) -> Big:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return b"%PDF" + b"x" * (n - 4)

    files = file_inputs(client, opener=lambda location: Big())  # type: ignore[arg-type, return-value]
    with pytest.raises(RowError, match="is larger than 0.01 MB, over Dify's 0.01 MB limit") as info:
        files.attach(prompt({"id": 4, "doc": "s3://bucket/huge.pdf"}), user="u")
    assert info.value.code == "file_too_large" and reads == [int(0.01 * 1024 * 1024) + 1]


def test_a_required_file_input_with_null_fails_the_row(client: DifyClient) -> None:
    parameters = client.parameters()
    for item in parameters["user_input_form"]:
        if "file" in item and item["file"]["variable"] == "needed":
            item["file"]["required"] = True
    files = FileInputs.for_app(client, "app", parameters, {"needed": "needed"})
    with pytest.raises(RowError, match="row 5: column 'needed' has no file, but input 'needed' requires one"):
        files.attach(prompt({"id": 5, "needed": None}, {"needed": "needed"}), user="u")


def test_object_storage_paths_go_through_the_opener(fake: FakeDify, client: DifyClient) -> None:
    opened: list[str] = []
    memory = fsspec.filesystem("memory")
    memory.pipe("/bucket/scan.pdf", PDF)

    def opener(location: str) -> Any:
        opened.append(location)
        return fsspec.open(location.replace("s3://", "memory://"), "rb").open()

    inputs = file_inputs(client, opener=opener).attach(
        prompt({"id": 6, "doc": "s3://bucket/scan.pdf"}), user="u"
    )
    assert opened == ["s3://bucket/scan.pdf"]
    assert fake.uploads[0].name == "scan.pdf" and inputs["doc"]["upload_file_id"] == fake.uploads[0].id
    # Without an opener, fsspec reads what it knows (memory:// here).
    inputs = file_inputs(client).attach(prompt({"id": 7, "doc": "memory://bucket/scan.pdf"}), user="u2")
    assert fake.uploads[1].user == "u2" and inputs["doc"]["transfer_method"] == "local_file"


def test_413_and_415_from_dify_say_which_file_and_are_not_maybe_billed(tmp_path: Path) -> None:
    app = FakeApp(
        "workflow",
        inputs=FORM,
        enforced_limits={"file_size_limit": 0.001},  # 1 KiB, while /parameters says 15 MB
        upload_extensions=["pdf", "png"],
    )
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with FakeDify([app]) as fake, DifyClient(fake.url, app.key, retry=FAST) as client:
        files = file_inputs(client)
        with pytest.raises(DifyError) as big:
            files.attach(prompt({"id": 8, "doc": PDF + b" " * 2000}), user="u")
        with pytest.raises(DifyError) as typed:
            files.attach(prompt({"id": 9, "doc": str(txt)}), user="u")
        assert fake.uploads == []
    assert big.value.status == 413 and big.value.code == "file_too_large" and not big.value.maybe_billed
    assert "row 8: column 'doc'" in str(big.value) and "too large" in str(big.value)
    assert typed.value.status == 415 and typed.value.code == "unsupported_file_type"
    assert "row 9: column 'doc': file" in str(typed.value) and "notes.txt" in str(typed.value)


def test_file_columns_must_name_file_inputs(client: DifyClient) -> None:
    with pytest.raises(PreflightError, match="'q' is a 'text-input' input"):
        FileInputs.for_app(client, "app", client.parameters(), {"q": "q"})


def test_the_same_bytes_as_the_same_user_are_uploaded_once_even_at_once() -> None:
    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []
            self.gate = threading.Barrier(8, timeout=5)
            self.lock = threading.Lock()

        def upload_file(self, name: str, data: bytes, mime: str, *, user: str) -> dict[str, Any]:
            with self.lock:
                self.calls.append((name, user))
                n = len(self.calls)
            return {"id": f"id-{n}"}

    uploader = Recording()
    files = FileInputs(uploader, {"doc": "doc"})
    builder = PromptBuilder(family="workflow", id_column="id", file_columns={"doc": "doc"})
    results: list[Any] = []

    def row(i: int, user: str) -> None:
        uploader.gate.wait()
        results.append(files.attach(builder.build({"id": i, "doc": PDF}), user=user)["doc"]["upload_file_id"])

    threads = [threading.Thread(target=row, args=(i, "a" if i < 6 else "b")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(user for _, user in uploader.calls) == ["a", "b"]
    assert len(set(results)) == 2 and files.uploaded == 2
    assert json.dumps(results)  # ids, not objects
