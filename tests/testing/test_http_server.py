"""Both HTTP servers on their own (a stub handler) and under FakeDify: they only move bytes, at
the moments the reply asks for, and behave the same (each test runs on both)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_dify.testing import FakeDify
from airflow_dify.testing.asyncio_server import AsyncioHTTPServer
from airflow_dify.testing.exchange import Frame, Reply, Request, Reset, Response, Stream
from airflow_dify.testing.fake import SERVERS
from airflow_dify.testing.http_server import ThreadedHTTPServer

from .fakedify_helpers import bearer

CHAT = {"query": "q", "inputs": {}, "user": "u"}
Server = AsyncioHTTPServer | ThreadedHTTPServer


class Settled:
    """A settlement that notes when the server called it."""

    def __init__(self) -> None:
        self.committed = threading.Event()
        self.closed = threading.Event()

    def commit(self) -> None:
        self.committed.set()

    def close(self) -> None:
        self.closed.set()


class Stub:
    """A handler that answers every request with the next scripted reply."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Request] = []

    def __call__(self, request: Request) -> Reply:
        self.seen.append(request)
        return self.replies.pop(0)


@pytest.fixture(params=sorted(SERVERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(kind: str) -> Iterator[tuple[Stub, Server]]:
    stub = Stub()
    server = SERVERS[kind](("127.0.0.1", 0), stub)
    server.start()
    try:
        yield stub, server
    finally:
        server.stop()


def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_answer_is_committed_before_its_bytes_and_closed_after(served: tuple[Stub, Server]) -> None:
    stub, server = served
    settled = Settled()
    stub.replies.append(Reply(Response(201, b"hi", {"Content-Type": "text/plain", "X-A": "1"}), 0.1, settled))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    started = time.monotonic()
    conn.request("POST", "/v1/x?y=1", body=b"payload", headers={"X-Trace-Id": "t"})
    resp = conn.getresponse()
    assert settled.committed.is_set()  # a client that has its answer finds it committed
    assert resp.status == 201 and resp.read() == b"hi" and resp.getheader("X-A") == "1"
    assert resp.getheader("Content-Length") == "2" and resp.getheader("Connection") is None
    assert time.monotonic() - started >= 0.1
    assert settled.closed.wait(5)
    [request] = stub.seen
    assert (request.method, request.path, request.body) == ("POST", "/v1/x", b"payload")
    assert request.header("x-trace-id") == "t"
    conn.close()


def test_stream_sends_frames_when_due_and_closes(served: tuple[Stub, Server]) -> None:
    stub, server = served
    settled = Settled()
    frames = (Frame(0.0, b"a\n"), Frame(0.0, b"b\n"), Frame(0.5, b"c\n"))
    stub.replies.append(Reply(Stream(200, frames, {"Content-Type": "text/event-stream"}), 0.0, settled))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    resp = conn.getresponse()
    assert resp.getheader("Connection") == "close" and resp.getheader("Content-Length") is None
    assert resp.read1(100) == b"a\nb\n"  # frames due at once arrive together, with the head
    assert not settled.committed.is_set()  # the last frame is not due yet
    assert resp.read() == b"c\n" and settled.committed.is_set()  # then EOF: the stream has ended
    conn.close()
    assert settled.closed.wait(5)


def test_reset_sends_rst_and_nothing_else(served: tuple[Stub, Server]) -> None:
    stub, server = served
    settled = Settled()
    stub.replies.append(Reply(Reset(), 0.0, settled))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            if sock.recv(1024) == b"":
                raise AssertionError("closed without RST")
    assert settled.committed.is_set() and settled.closed.wait(5)


def test_stop_wakes_a_delayed_reply(kind: str) -> None:
    settled = Settled()
    server = SERVERS[kind](("127.0.0.1", 0), lambda _: Reply(Response(200, b""), 30.0, settled))
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.request("GET", "/")
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert settled.closed.wait(5) and time.monotonic() - started < 5
    conn.close()


def test_keep_alive_is_fast_on_one_connection(kind: str) -> None:
    """200 sequential calls on one keep-alive connection; with Nagle + delayed ACK each would cost
    ~40 ms (8 s total). The bound is half of that, far above the ~1 ms a call really takes."""
    n = 200
    with FakeDify(server=kind) as fake, requests.Session() as http:
        key = fake.app().key
        started = time.perf_counter()
        for _ in range(n):
            resp = http.post(f"{fake.url}/chat-messages", json=CHAT, headers=bearer(key), timeout=10)
            assert resp.status_code == 200
        elapsed = time.perf_counter() - started
        assert fake.connections == 1  # keep-alive: one TCP connection for every call
    assert elapsed < n * 0.040 / 2, f"{elapsed:.2f}s for {n} calls: Nagle stall?"
    assert fake.calls() == n


def test_stop_is_prompt_with_sleeping_request(kind: str) -> None:
    fake = FakeDify(latency=30, server=kind).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            requests.post(f"{fake.url}/chat-messages", json=CHAT, headers=bearer(fake.app().key), timeout=40)
        except requests.RequestException as err:
            errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while fake.stats()["admitted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert time.monotonic() - started < 15  # not the 30 s latency


def test_pipelined_requests_are_answered_in_order(served: tuple[Stub, Server]) -> None:
    stub, server = served
    stub.replies += [Reply(Response(200, b"slow"), 0.2), Reply(Response(200, b"fast", close=True))]
    data = exchange(server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.index(b"slow") < data.index(b"fast")
    assert [r.path for r in stub.seen] == ["/a", "/b"]


def test_http_1_0_and_connection_close_end_the_connection(served: tuple[Stub, Server]) -> None:
    stub, server = served
    stub.replies += [Reply(Response(200, b"one")), Reply(Response(200, b"two"))]
    old = exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")  # returns: the server closed it
    assert old.endswith(b"one") and b"Connection: close" in old
    asked = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert asked.endswith(b"two") and b"Connection: close" in asked


def test_unsupported_method_and_bad_request_line_get_stdlib_pages(
    served: tuple[Stub, Server], kind: str
) -> None:
    stub, server = served
    options = exchange(server.port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert options.startswith(b"HTTP/1.1 501 Unsupported method ('OPTIONS')\r\n")
    assert b"Connection: close" in options and b"Error code: 501" in options
    head = exchange(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 ") and head.endswith(b"\r\n\r\n")  # a HEAD answer has no body
    # (http.server answers a bad request line HTTP/0.9-style, the page alone; the asyncio one
    # sends a head too)
    bad = exchange(server.port, b"NONSENSE\r\n\r\n")
    assert b"Error code: 400" in bad and bad.startswith(b"HTTP/1.1 400 " if kind == "asyncio" else b"<!")
    assert stub.seen == []  # none reached the handler


def test_expect_100_continue_invites_the_body(served: tuple[Stub, Server]) -> None:
    stub, server = served
    stub.replies.append(Reply(Response(200, b"ok", close=True)))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"body")
        assert sock.recv(1024).endswith(b"ok")
    assert stub.seen[0].body == b"body"


def test_a_client_that_hangs_up_does_not_stop_the_work(served: tuple[Stub, Server]) -> None:
    """Like Dify, the call runs to its end (commit at the delay) though nobody reads the answer."""
    stub, server = served
    settled = Settled()
    stub.replies.append(Reply(Response(200, b"late"), 0.3, settled))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
    started = time.monotonic()
    assert settled.committed.wait(5) and settled.closed.wait(5)
    assert time.monotonic() - started >= 0.2


def test_a_failing_handler_drops_the_connection(kind: str) -> None:
    def broken(_: Request) -> Reply:
        raise RuntimeError("handler bug")

    server = SERVERS[kind](("127.0.0.1", 0), broken)
    server.start()
    try:
        assert exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    finally:
        server.stop()


def test_stop_cuts_idle_keep_alive_connections(served: tuple[Stub, Server]) -> None:
    stub, server = served
    stub.replies.append(Reply(Response(200, b"hi")))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024).endswith(b"hi")
        server.stop()
        assert sock.recv(1024) == b""


def test_asyncio_server_decodes_chunked_bodies() -> None:
    stub = Stub()
    stub.replies.append(Reply(Response(200, b"ok", close=True)))
    server = AsyncioHTTPServer(("127.0.0.1", 0), stub)
    server.start()
    try:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = head + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
        assert exchange(server.port, data).endswith(b"ok")
    finally:
        server.stop()
    assert stub.seen[0].body == b"abcde"


def test_asyncio_server_holds_a_thousand_slow_calls_on_one_thread() -> None:
    """Scenario c's shape: 1,024 calls in flight at once cost timers, not threads."""
    n, latency = 1024, 1.0
    fake = FakeDify(latency=latency, server="asyncio").start()
    key = fake.app().key
    body = json.dumps(CHAT).encode()
    request = (
        f"POST /v1/chat-messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    threads_before = threading.active_count()
    socks = []
    try:
        started = time.monotonic()
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", fake.port), timeout=30)
            sock.sendall(request)
            socks.append(sock)
        deadline = time.monotonic() + 10
        while fake.stats()["admitted"] < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.stats()["max_concurrency_seen"] > n // 2  # they really were in flight together
        assert threading.active_count() == threads_before
        for sock in socks:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started < latency + 15
    finally:
        for sock in socks:
            sock.close()
        fake.stop()
    assert fake.calls() == n
