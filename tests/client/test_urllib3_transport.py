"""Both transports against real loopback servers: redirects, TLS, encodings, streaming.

Tests taking ``make_transport`` run once per transport (urllib3, aiohttp): the contract is shared.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.client import DifyClient, DifyConfigError
from airflow_dify.client.transport import USER_AGENT, Request
from airflow_dify.testing import FakeDify
from tests.client.client_helpers import FAST
from tests.client.servers import Handle, RawServer, answer, read_request, self_signed, server_tls
from tests.client.transports import SyncDriven


def _get(url: str, **headers: str) -> Request:
    return Request("GET", url, headers, None, (2.0, 2.0), "test")


@pytest.fixture
def transport(make_transport: Callable[..., Any]) -> Any:
    return make_transport(pool_size=2)


def keep_alive(heads: list[bytes], reply: bytes, accepted: list[int] | None = None) -> Handle:
    """Answers every request on a connection with ``reply``, recording request heads."""

    def serve(conn: socket.socket) -> None:
        if accepted is not None:
            accepted.append(1)
        while request := read_request(conn):
            heads.append(request)
            conn.sendall(reply)

    return serve


def test_keep_alive_connections_are_reused_and_bounded_by_pool_size() -> None:
    with FakeDify(latency=0.2) as fake:
        client = DifyClient(fake.url, fake.app("chat").key, pool_size=2, retry=FAST)
        for _ in range(5):
            client.info()
        assert fake.connections == 1  # one keep-alive connection served every sequential call
        barrier = threading.Barrier(6)

        def burst(i: int) -> str:
            barrier.wait(timeout=10)
            return client.chat(f"q{i}", user="u").answer

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(burst, range(6)))
        after_burst = fake.connections
        assert after_burst >= 6  # the pool never blocks a caller: extra connections open
        for _ in range(5):
            client.info()
        assert fake.connections == after_burst  # the 2 kept connections serve sequential calls
        client.close()


def test_redirects_are_returned_not_followed(transport: Any) -> None:
    heads: list[bytes] = []
    reply = answer(302, b"", Location="http://127.0.0.1:9/elsewhere")
    with RawServer(keep_alive(heads, reply)) as server:
        resp = transport.send(_get(server.url + "/info"))
        stream = transport.stream(_get(server.url + "/info"))
        stream.close()
    assert (resp.status, resp.headers["location"]) == (302, "http://127.0.0.1:9/elsewhere")
    assert stream.status == 302
    assert len(heads) == 2  # nothing went to the Location


def test_headers_sent_and_gzip_decoded(transport: Any, fake_dify: FakeDify) -> None:
    heads: list[bytes] = []
    packed = gzip.compress(b'{"name": "zipped"}')
    reply = answer(200, packed, Content_Type="application/json", Content_Encoding="gzip")
    with RawServer(keep_alive(heads, reply)) as server:
        client = DifyClient(server.url, fake_dify.app("chat").key, retry=FAST, transport=transport)
        assert client.info().name == "zipped"
    head = heads[0].decode().lower()
    assert "accept-encoding: gzip, deflate\r\n" in head
    assert f"user-agent: {USER_AGENT}\r\n".lower() in head
    assert "authorization: bearer app-" in head and head.startswith("get /v1/info http/1.1")


def test_stream_yields_bytes_as_they_arrive(transport: Any) -> None:
    first_read = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(head + chunk(b"data: 1\n\n"))
        first_read.wait(5)  # the second part is sent only once the client has the first
        conn.sendall(chunk(b"data: 2\n\n") + b"0\r\n\r\n")

    with RawServer(serve) as server:
        stream = transport.stream(_get(server.url + "/chat-messages"))
        parts = []
        for part in stream.iter_bytes():
            parts.append(part)
            first_read.set()
        stream.close()
    assert b"".join(parts) == b"data: 1\n\ndata: 2\n\n"
    assert parts[0] == b"data: 1\n\n"


def test_a_stream_read_to_its_end_gives_its_connection_back(transport: Any) -> None:
    heads: list[bytes] = []
    accepted: list[int] = []
    body = b"data: 1\n\n" * 100_000  # more than one read
    with RawServer(keep_alive(heads, answer(200, body, Content_Type="text/event-stream"), accepted)) as srv:
        url = srv.url + "/chat-messages"
        stream = transport.stream(_get(url))
        assert b"".join(stream.iter_bytes()) == body
        stream.close()
        assert transport.send(_get(url)).body == body
        assert len(accepted) == 1
        stream = transport.stream(_get(url))
        next(stream.iter_bytes())  # left unread: the connection cannot carry another request
        stream.close()
        assert transport.send(_get(url)).body == body  # nothing left over reached this answer
        # aiohttp had the whole body buffered before close(): that connection was clean to reuse.
        assert len(accepted) == 2 or isinstance(transport, SyncDriven)
        assert len(heads) == 4


def test_tls_verify_off_and_ca_bundle_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_transport: Callable[..., Any]
) -> None:
    cert, key = self_signed(tmp_path)
    with RawServer(
        lambda c: (read_request(c), c.sendall(answer(200, b"ok"))), tls=server_tls(cert, key)
    ) as srv:
        url = srv.url + "/info"
        insecure = make_transport(verify_ssl=False)
        warns = make_transport.kind == "urllib3"  # type: ignore[attr-defined]
        with pytest.warns(Warning, match="Unverified HTTPS request") if warns else nullcontext():
            assert insecure.send(_get(url)).body == b"ok"
        for name, other in (
            ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
            ("CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"),
        ):
            monkeypatch.delenv(other, raising=False)
            monkeypatch.setenv(name, str(cert))
            trusted = make_transport()
            assert trusted.send(_get(url)).body == b"ok", name
            monkeypatch.delenv(name)


def test_missing_ca_bundle_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_transport: Callable[..., Any]
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "absent.pem"))
    with pytest.raises(DifyConfigError, match="REQUESTS_CA_BUNDLE"):
        make_transport().send(_get("https://127.0.0.1:9/v1/info"))
