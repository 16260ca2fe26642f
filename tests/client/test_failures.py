"""The failure table: each row, produced by a real loopback failure wherever one can be.

Before the request was sent (refused, connect timeout, proxy, TLS): not billed. After (read
timeout, reset, a body cut short): ``maybe_billed``, so the retry policy decides.
"""

from __future__ import annotations

import socket
import ssl
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import urllib3.exceptions as u3
from urllib3.connection import HTTPConnection

from airflow_dify.client import (
    DifyConfigError,
    DifyError,
    DifyResponseError,
    DifyTimeoutError,
    DifyTransportError,
)
from airflow_dify.client.aiohttp_transport import AIOHTTP_ROWS
from airflow_dify.client.failures import transport_error
from airflow_dify.client.transport import Request
from tests.client.servers import RawServer, answer, closed_port, read_request, reset, self_signed, server_tls

WHERE = "chat-messages at test"


def _request(url: str, timeout: tuple[float, float] = (2.0, 2.0)) -> Request:
    return Request(
        "POST", url + "/chat-messages", {"Content-Type": "application/json"}, b"{}", timeout, WHERE
    )


Fail = Callable[..., DifyError]


@pytest.fixture
def failure(make_transport: Callable[..., Any]) -> Fail:
    """``failure(url, verify=, timeout=)``: what each transport raises for one request to ``url``."""

    def fail(url: str, *, verify: bool = True, timeout: tuple[float, float] = (2.0, 2.0)) -> DifyError:
        transport = make_transport(verify_ssl=verify)
        with pytest.raises(DifyError) as info:
            transport.send(_request(url, timeout))
        assert WHERE in info.value.message
        return info.value

    return fail


def _assert(err: DifyError, cls: type[DifyError], code: str, *, billed: bool, retryable: bool = True) -> None:
    assert type(err) is cls, err
    assert (err.code, err.maybe_billed, err.retryable, err.status) == (code, billed, retryable, None)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- before the request was sent ------------------------------------------------------------------
def test_refused_is_cannot_connect(failure: Fail) -> None:
    err = failure(f"http://127.0.0.1:{closed_port()}/v1")
    _assert(err, DifyTransportError, "connection_error", billed=False)
    assert "cannot connect" in err.message


def test_connect_timeout(failure: Fail) -> None:
    """A listener whose accept queue is full drops new SYNs: the connect itself times out."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        err = failure(f"http://127.0.0.1:{port}/v1", timeout=(0.3, 2.0))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    _assert(err, DifyTransportError, "connect_timeout", billed=False)
    assert "connection timed out" in err.message


def test_unreachable_proxy(monkeypatch: pytest.MonkeyPatch, no_env_proxy: None, failure: Fail) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    err = failure("http://127.0.0.1:9/v1")
    _assert(err, DifyTransportError, "connection_error", billed=False)
    assert "through the proxy" in err.message and "NO_PROXY" in err.message


def test_untrusted_certificate_is_a_terminal_tls_error(tls_files: tuple[Path, Path], failure: Fail) -> None:
    with RawServer(lambda c: c.sendall(answer(200, b"{}")), tls=server_tls(*tls_files)) as server:
        err = failure(server.url)
    _assert(err, DifyTransportError, "tls_error", billed=False, retryable=False)
    assert "verify_ssl" in err.message and "CERTIFICATE_VERIFY_FAILED" in err.message


def test_tls_to_a_plain_http_port(failure: Fail) -> None:
    with RawServer(lambda c: c.sendall(answer(400, b"plain http"))) as server:
        err = failure(server.url.replace("http://", "https://"))
    _assert(err, DifyTransportError, "tls_error", billed=False, retryable=False)


def test_unparseable_url_is_a_config_error(failure: Fail) -> None:
    err = failure("http://127.0.0.1:99999/v1")
    assert type(err) is DifyConfigError and "invalid URL" in err.message


# -- after the request was sent: maybe billed -----------------------------------------------------
def test_stall_past_the_read_timeout(failure: Fail) -> None:
    def stall(conn: socket.socket) -> None:
        read_request(conn)
        server.stop_event.wait(5)

    with RawServer(stall) as server:
        err = failure(server.url, timeout=(2.0, 0.3))
    _assert(err, DifyTimeoutError, "timeout", billed=True)
    assert "read timeout" in err.message


@pytest.mark.parametrize("how", ["rst", "close"])
def test_connection_dropped_after_the_request(how: str, failure: Fail) -> None:
    def drop(conn: socket.socket) -> None:
        read_request(conn)
        if how == "rst":
            reset(conn)

    with RawServer(drop) as server:
        err = failure(server.url)
    _assert(err, DifyTransportError, "connection_reset", billed=True)
    assert "after the request was sent" in err.message


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{"answer',
        answer(200, b"not gzip at all", Content_Encoding="gzip"),
    ],
    ids=["cut-short", "bad-gzip"],
)
def test_body_broken(reply: bytes, failure: Fail) -> None:
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(reply)

    with RawServer(serve) as server:
        err = failure(server.url)
    _assert(err, DifyResponseError, "malformed_response", billed=True)
    assert "body broke off" in err.message


def test_stream_cut_mid_body_fails_while_reading(make_transport: Callable[..., Any]) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    event = b'data: {"event": "message"}\n\n'

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(head + b"%x\r\n%s\r\n" % (len(event), event))
        reset(conn)

    transport = make_transport()
    with RawServer(serve) as server:
        stream = transport.stream(_request(server.url))
        chunks: list[bytes] = []
        with pytest.raises(DifyError) as info:
            chunks.extend(stream.iter_bytes())
        stream.close()
    assert stream.status == 200 and b"".join(chunks) in (b"", event)
    assert info.value.maybe_billed and info.value.retryable
    assert info.value.code in ("connection_reset", "malformed_response")


# -- the table itself, for failures a loopback server cannot produce ------------------------------
CONN = HTTPConnection("dify.invalid", 443)


@pytest.mark.parametrize(
    ("exc", "code", "billed"),
    [
        (
            u3.NameResolutionError("dify.invalid", CONN, socket.gaierror(-2, "Name unknown")),
            "connection_error",
            False,
        ),
        (
            u3.ProtocolError("Connection aborted.", BrokenPipeError(32, "Broken pipe")),
            "connection_reset",
            True,
        ),
        (u3.ProtocolError("Connection aborted.", ValueError("odd")), "connection_reset", True),
        (u3.ClosedPoolError(None, "Pool is closed."), "connection_error", False),  # type: ignore[arg-type]
        (u3.SSLError(ssl.SSLError(1, "record layer failure")), "tls_error", False),
        (u3.DecodeError("bad gzip", zlib.error("incorrect header check")), "malformed_response", True),
        (ConnectionRefusedError(111, "refused"), "connection_error", False),
        (TimeoutError("timed out"), "timeout", True),
    ],
)
def test_table_rows(exc: BaseException, code: str, billed: bool) -> None:
    err = transport_error(exc, WHERE)
    assert (err.code, err.maybe_billed) == (code, billed)
    assert err.message.startswith(WHERE) or WHERE in err.message


def test_outermost_known_cause_wins() -> None:
    """A read timeout urllib3 raised while handling an ssl error is still a read timeout."""
    try:
        try:
            raise ssl.SSLError("The read operation timed out")
        except ssl.SSLError as inner:
            raise u3.ReadTimeoutError(None, "/v1", "Read timed out.") from inner  # type: ignore[arg-type]
    except u3.ReadTimeoutError as exc:
        err = transport_error(exc, WHERE)
    assert isinstance(err, DifyTimeoutError) and err.maybe_billed


@pytest.mark.parametrize(
    ("exc", "code", "billed"),
    [
        (aiohttp.ServerDisconnectedError(), "connection_reset", True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "malformed_response", True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection_reset", True),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), "timeout", True),
        (aiohttp.ConnectionTimeoutError("Connection timeout to host"), "connect_timeout", False),
    ],
)
def test_aiohttp_table_rows(exc: BaseException, code: str, billed: bool) -> None:
    """aiohttp's classes a loopback server does not produce reliably; mapped like urllib3's."""
    err = transport_error(exc, WHERE, AIOHTTP_ROWS)
    assert (err.code, err.maybe_billed) == (code, billed)
