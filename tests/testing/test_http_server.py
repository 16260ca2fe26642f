"""The threaded HTTP server on its own (a stub handler) and under FakeDify: it only moves bytes,
at the moments the reply asks for."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_dify.testing import FakeDify
from airflow_dify.testing.exchange import Frame, Reply, Request, Reset, Response, Stream
from airflow_dify.testing.http_server import ThreadedHTTPServer

from .fakedify_helpers import bearer

CHAT = {"query": "q", "inputs": {}, "user": "u"}


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


@pytest.fixture
def served() -> Iterator[tuple[Stub, ThreadedHTTPServer]]:
    stub = Stub()
    server = ThreadedHTTPServer(("127.0.0.1", 0), stub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub, server
    finally:
        server.stop()
        thread.join(timeout=5)


def test_answer_is_committed_before_its_bytes_and_closed_after(
    served: tuple[Stub, ThreadedHTTPServer],
) -> None:
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


def test_stream_sends_frames_when_due_and_closes(served: tuple[Stub, ThreadedHTTPServer]) -> None:
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


def test_reset_sends_rst_and_nothing_else(served: tuple[Stub, ThreadedHTTPServer]) -> None:
    stub, server = served
    settled = Settled()
    stub.replies.append(Reply(Reset(), 0.0, settled))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            if sock.recv(1024) == b"":
                raise AssertionError("closed without RST")
    assert settled.committed.is_set() and settled.closed.wait(5)


def test_stop_wakes_a_delayed_reply() -> None:
    settled = Settled()
    server = ThreadedHTTPServer(("127.0.0.1", 0), lambda _: Reply(Response(200, b""), 30.0, settled))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.request("GET", "/")
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert settled.closed.wait(5) and time.monotonic() - started < 5
    thread.join(timeout=5)
    conn.close()


def test_keep_alive_is_fast_on_one_connection() -> None:
    """200 sequential calls on one keep-alive connection; with Nagle + delayed ACK each would cost
    ~40 ms (8 s total). The bound is half of that, far above the ~1 ms a call really takes."""
    n = 200
    with FakeDify() as fake, requests.Session() as http:
        key = fake.app().key
        started = time.perf_counter()
        for _ in range(n):
            resp = http.post(f"{fake.url}/chat-messages", json=CHAT, headers=bearer(key), timeout=10)
            assert resp.status_code == 200
        elapsed = time.perf_counter() - started
        assert fake.connections == 1  # keep-alive: one TCP connection for every call
    assert elapsed < n * 0.040 / 2, f"{elapsed:.2f}s for {n} calls: Nagle stall?"
    assert fake.calls() == n


def test_stop_is_prompt_with_sleeping_request() -> None:
    fake = FakeDify(latency=30).start()
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
