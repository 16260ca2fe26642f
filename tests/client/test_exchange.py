"""The exchange above the transport, tested against a stub transport (no network).

Shows the boundary a later asyncio transport plugs into: everything the client needs comes in
as plain (status, headers, body) values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from airflow_dify.client import NO_RETRY, DifyAPIError, DifyAuthError, DifyClient, DifyTransportError
from airflow_dify.client.exchange import Exchange
from airflow_dify.client.failures import CANNOT_CONNECT
from airflow_dify.client.responses import CallContext
from airflow_dify.client.transport import Request, Response

KEY = "app-AbCdEfGhIjKlMnOpQrStUvWx"
CTX = CallContext("https://dify.test/v1", "chat-messages")
CHAT = {"answer": "hi", "message_id": "m", "metadata": {"usage": {"total_tokens": 3, "total_price": "0.1"}}}


@dataclass
class StubStream:
    status: int
    headers: Mapping[str, str]
    body: bytes
    closed: bool = False

    def iter_bytes(self) -> Iterator[bytes]:
        yield from (self.body[i : i + 7] for i in range(0, len(self.body), 7))

    def read(self) -> bytes:
        return self.body

    def close(self) -> None:
        self.closed = True


@dataclass
class StubTransport:
    """Answers from a script; records every request it was given."""

    answers: list[Response | Exception]
    sent: list[Request] = field(default_factory=list)
    streams: list[StubStream] = field(default_factory=list)
    closed: bool = False

    def send(self, request: Request) -> Response:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer  # as a transport does: already the DifyError of the failure table
        return answer

    def stream(self, request: Request) -> StubStream:
        resp = self.send(request)
        self.streams.append(StubStream(resp.status, resp.headers, resp.body))
        return self.streams[-1]

    def close(self) -> None:
        self.closed = True


def _json(status: int, body: object, **headers: str) -> Response:
    return Response(status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode())


class RefreshingAuth:
    kind = "oauth2"

    def __init__(self) -> None:
        self.tokens = ["t1", "t2"]

    def header(self) -> str:
        return "Bearer " + self.tokens[0]

    def on_unauthorized(self, sent: str | None = None) -> bool:
        self.tokens.pop(0)
        return True

    def secrets(self) -> list[str]:
        return list(self.tokens)


def test_request_value_and_client_over_a_stub_transport() -> None:
    stub = StubTransport([_json(200, CHAT)])
    with DifyClient("https://dify.test/v1/", KEY, transport=stub, timeout=(3, 30)) as client:
        result = client.chat("q", user="u", trace_id="t-1")
    assert result.answer == "hi" and str(result.usage.total_price) == "0.1"
    (req,) = stub.sent
    assert (req.method, req.url, req.timeout) == ("POST", "https://dify.test/v1/chat-messages", (3.0, 30.0))
    assert req.label == "chat-messages at https://dify.test/v1"
    assert req.headers["Authorization"] == f"Bearer {KEY}" and req.headers["X-Trace-Id"] == "t-1"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Accept-Encoding"] == "gzip, deflate"
    assert json.loads(req.body or b"")["auto_generate_name"] is False
    assert stub.closed  # the client closes the transport it was given, as httpx does


def test_one_refresh_then_a_new_error_with_the_refresh_said() -> None:
    auth = RefreshingAuth()
    stub = StubTransport([_json(401, {"code": "unauthorized", "message": "no"}), _json(401, {})])
    exchange = Exchange(stub, CTX.base_url, auth, timeout=5, user_agent="ua")
    with pytest.raises(DifyAuthError) as info:
        exchange.send("GET", "/info", CTX)
    assert [r.headers["Authorization"] for r in stub.sent] == ["Bearer t1", "Bearer t2"]
    assert info.value.message.endswith("(still refused after refreshing the OAuth2 token once)")


def test_redirect_on_a_stream_is_refused_and_the_stream_closed() -> None:
    stub = StubTransport([Response(307, {"Location": "https://elsewhere/v1"}, b"")])
    exchange = Exchange(stub, CTX.base_url, RefreshingAuth(), timeout=5, user_agent="ua")
    with pytest.raises(DifyAPIError) as info:
        exchange.stream("POST", "/chat-messages", CTX, body={})
    assert info.value.code == "redirect" and "redirect to https://elsewhere/v1" in info.value.message
    assert stub.streams[0].closed


def test_transport_errors_are_masked_without_keeping_the_unmasked_one() -> None:
    auth = RefreshingAuth()
    stub = StubTransport([CANNOT_CONNECT(CTX.where, "proxy said Bearer t1")])
    exchange = Exchange(stub, CTX.base_url, auth, timeout=5, user_agent="ua")
    with pytest.raises(DifyTransportError) as info:
        exchange.send("GET", "/info", CTX)
    assert "Bearer ***" in info.value.message
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_streamed_call_over_a_stub_transport() -> None:
    events = [
        {"event": "message", "answer": "Hel", "message_id": "m1", "conversation_id": "c1"},
        {"event": "message", "answer": "lo"},
        {"event": "message_end", "metadata": {"usage": {"total_tokens": 4}}},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    stub = StubTransport([Response(200, {"Content-Type": "text/event-stream"}, body)])
    with DifyClient(CTX.base_url, KEY, transport=stub, retry=NO_RETRY) as client:
        result = client.chat("q", user="u", response_mode="streaming")
    assert (result.answer, result.usage.total_tokens) == ("Hello", 4)
    assert stub.streams[0].closed
