"""The lean HTTP/1.1 transport against real loopback servers: what the shared contract tests
(test_urllib3_transport.py, test_failures.py) do not reach: framing, the pool, never re-sending."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import pytest

from airflow_dify.client import DifyConfigError, DifyError
from airflow_dify.client.http1_transport import Http1Transport
from airflow_dify.client.transport import Request
from tests.client.servers import ForwardProxy, Handle, RawServer, answer, read_request
from tests.client.transports import SyncDriven


def _post(url: str, body: bytes = b'{"q": 1}', timeout: float = 2.0, **headers: str) -> Request:
    return Request("POST", url, {"Content-Type": "application/json", **headers}, body, (2.0, timeout), "test")


@contextlib.contextmanager
def _on_a_loop(pool_size: int, serve: Handle) -> Iterator[tuple[Http1Transport, SyncDriven, str]]:
    """(transport, the loop that drives it, a URL on a server running ``serve``)."""
    transport = Http1Transport(pool_size=pool_size)
    driven = SyncDriven(transport)
    try:
        with RawServer(serve) as server:
            yield transport, driven, server.url + "/x"
    finally:
        driven.close()


@pytest.fixture
def transport() -> Iterator[SyncDriven]:
    driven = SyncDriven(Http1Transport(pool_size=2))
    yield driven
    driven.close()


def test_chunked_gzip_and_eof_delimited_answers_are_read_whole(transport: SyncDriven) -> None:
    packed = gzip.compress(b'{"answer": "zipped"}')
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(packed[:10]), packed[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed[10:]), packed[10:]),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(raw := zlib.compress(b"deflated")[2:-4])
        + raw,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",  # no length: read to close
    ]

    def serve(conn: socket.socket) -> None:
        while replies and read_request(conn):
            reply = replies.pop(0)
            conn.sendall(reply)
            if b"Content-Length" not in reply and b"chunked" not in reply:
                return

    with RawServer(serve) as server:
        assert transport.send(_post(server.url + "/a")).body == b'{"answer": "zipped"}'
        assert transport.send(_post(server.url + "/b")).body == b"deflated"
        last = transport.send(_post(server.url + "/c"))
    assert (last.status, last.body, last.headers["CONTENT-TYPE"]) == (200, b"until the end", "text/plain")


def test_the_request_is_written_once_with_host_and_length(transport: SyncDriven) -> None:
    heads: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        while request := read_request(conn):
            heads.append(request)
            conn.sendall(answer(200, b"{}"))

    with RawServer(serve) as server:
        transport.send(_post(server.url + "/chat-messages?x=1#frag", body=b'{"q": "\xc3\xa9"}'))
        transport.send(Request("POST", server.url + "/empty", {}, None, (2.0, 2.0), "test"))
    first = heads[0].decode()
    assert first.startswith("POST /v1/chat-messages?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in first and "Content-Length: 11\r\n" in first
    assert first.endswith('\r\n\r\n{"q": "é"}')
    assert "Content-Length: 0\r\n" in heads[1].decode()  # a POST without a body still says so


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(transport: SyncDriven) -> None:
    seen: list[bytes] = []
    with (
        RawServer(lambda conn: seen.append(read_request(conn))) as server,
        pytest.raises(DifyError, match="line break") as caught,
    ):
        transport.send(_post(server.url + "/x", X_Trace="a\r\nInjected: yes"))
    assert caught.value.maybe_billed is False and seen == []


def test_a_kept_connection_the_server_closed_while_idle_is_replaced_not_resent(
    transport: SyncDriven,
) -> None:
    requests: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        requests.append(read_request(conn))
        conn.sendall(answer(200, b"{}"))  # keep-alive by HTTP/1.1 default, then closed anyway

    with RawServer(serve) as server:
        assert transport.send(_post(server.url + "/one")).status == 200
        time.sleep(0.2)  # the close reaches the idle pooled connection
        assert transport.send(_post(server.url + "/two")).status == 200
    assert len(requests) == 2  # each request sent exactly once, on a fresh connection the second time


def test_a_connection_dropped_after_the_request_is_maybe_billed_and_not_resent(
    transport: SyncDriven,
) -> None:
    requests: list[bytes] = []
    with (
        RawServer(lambda conn: requests.append(read_request(conn))) as server,  # read, then close
        pytest.raises(DifyError) as caught,
    ):
        transport.send(_post(server.url + "/chat-messages"))
    assert (caught.value.code, caught.value.maybe_billed) == ("connection_reset", True)
    assert len(requests) == 1


def test_the_pool_bounds_open_connections_and_waiters_get_them_in_turn() -> None:
    accepted: list[int] = []
    gate = threading.Event()

    def serve(conn: socket.socket) -> None:
        accepted.append(1)
        while read_request(conn):
            gate.wait(5)
            conn.sendall(answer(200, b"{}"))

    with _on_a_loop(2, serve) as (transport, driven, url):

        async def burst() -> list[int]:
            calls = [asyncio.ensure_future(transport.send(_post(url))) for _ in range(5)]
            await asyncio.sleep(0.2)
            open_while_blocked = transport._open
            gate.set()
            done = await asyncio.gather(*calls)
            return [open_while_blocked, *(r.status for r in done)]

        result = driven.loop.run(burst())
    assert result == [2, 200, 200, 200, 200, 200]
    assert len(accepted) == 2  # the three waiters reused the two connections


def test_a_stream_times_out_only_when_no_byte_comes_for_the_read_timeout(transport: SyncDriven) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(head)
        for _ in range(6):  # 0.6 s in all, never 0.3 s without a byte
            time.sleep(0.1)
            conn.sendall(b"9\r\ndata: 1\n\n\r\n")
        time.sleep(1.0)  # then silence

    with RawServer(serve) as server:
        stream = transport.stream(_post(server.url + "/chat-messages", timeout=0.3))
        parts: list[bytes] = []
        with pytest.raises(DifyError) as caught:
            for part in stream.iter_bytes():
                parts.append(part)
        stream.close()
    assert b"".join(parts) == b"data: 1\n\n" * 6
    assert (caught.value.code, caught.value.maybe_billed) == ("timeout", True)


def test_a_proxied_url_goes_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with (
        RawServer(lambda conn: (read_request(conn), conn.sendall(answer(200, b"{}")))) as server,
        ForwardProxy() as proxy,
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        driven = SyncDriven(Http1Transport())
        try:
            assert driven.send(_post(server.url + "/chat-messages")).status == 200
        finally:
            driven.close()
    assert proxy.seen == [f"POST {server.url}/chat-messages"]


def test_a_socks_proxy_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    driven = SyncDriven(Http1Transport())
    try:
        with pytest.raises(DifyConfigError, match="SOCKS"):
            driven.send(_post("http://127.0.0.1:9/v1/x"))
    finally:
        driven.close()


def test_a_waiter_cancelled_after_its_wake_up_passes_the_slot_on() -> None:
    """Cancellation (on_kill) must not strand a freed connection slot: the next waiter gets it."""

    def serve(conn: socket.socket) -> None:
        while read_request(conn):
            conn.sendall(answer(200, b"{}"))

    with _on_a_loop(1, serve) as (transport, driven, url):

        async def scenario() -> int:
            request = _post(url)
            route, _ = transport._route(url, "test")
            assert route is not None
            held = await transport._acquire(route, request)  # the only slot
            second = asyncio.ensure_future(transport.send(request))
            third = asyncio.ensure_future(transport.send(request))
            await asyncio.sleep(0.05)  # both wait for the slot
            held.abort()
            transport._release(held, False)  # wakes `second` ...
            second.cancel()  # ... cancelled in the same step, before it runs
            done = await asyncio.wait_for(third, 5)
            return done.status

        assert driven.loop.run(scenario()) == 200


def test_a_header_that_is_not_latin_1_is_a_config_error(transport: SyncDriven) -> None:
    with pytest.raises(DifyConfigError, match="Latin-1"):
        transport.send(_post("http://127.0.0.1:9/v1/x", X_Name="caf\u00e9 \u2603"))
