"""Errors are values: context goes in through the constructor, variants come from evolve().

The contract test seals every DifyError after construction and runs the client through the
paths that used to patch errors in place (retries, stream errors, failed workflow runs, OAuth2
refresh, masking): the final error must still carry attempts, maybe_billed, result and run id.
"""

from __future__ import annotations

import inspect
import json
import pickle
import socket
from collections.abc import Iterator

import pytest

import airflow_dify.client.errors as errors_module
from airflow_dify.client import (
    NO_RETRY,
    DifyBadRequestError,
    DifyError,
    DifyRunFailedError,
    DifyServerError,
    DifyTimeoutError,
    DifyTransportError,
    OAuth2ClientCredentials,
    RetryPolicy,
)
from airflow_dify.client.models import DifyResult
from airflow_dify.testing import FakeDify, Fault
from tests.client.client_helpers import FAST, client_class
from tests.client.servers import RawServer, answer, read_request

ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors_module, inspect.isclass)
    if issubclass(cls, DifyError) and cls.__module__ == errors_module.__name__
]


@pytest.fixture
def client_engine(both_engines: str) -> str:
    """The client tests here run on the sync client and on the asyncio one."""
    return both_engines


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_evolve_builds_a_new_error_and_leaves_the_original(cls: type[DifyError]) -> None:
    cause = ValueError("root cause")
    original = cls("boom", status=502, code="x", retry_after=1.5)
    original.__cause__ = cause
    result = DifyResult(mode="workflow", answer=None, workflow_run_id="run-1", status="failed")
    fresh = original.evolve(
        message="masked", attempts=3, maybe_billed=True, result=result, workflow_run_id="r"
    )
    assert type(fresh) is cls and fresh is not original
    assert (fresh.message, fresh.attempts, fresh.maybe_billed, fresh.result, fresh.workflow_run_id) == (
        "masked",
        3,
        True,
        result,
        "r",
    )
    assert (fresh.status, fresh.code, fresh.retry_after, fresh.retryable) == (
        502,
        "x",
        1.5,
        original.retryable,
    )
    assert str(fresh) == "502 x: masked" and fresh.args == ("502 x: masked",)
    assert fresh.__cause__ is cause  # the original's cause, not the original: chains stay short
    assert (original.message, original.attempts, original.maybe_billed) == ("boom", 1, cls.maybe_billed)
    assert str(original) == "502 x: boom" and original.result is None


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_context_rebuilds_and_pickles(cls: type[DifyError]) -> None:
    err = cls("m", status=429, code="c", retryable=True, maybe_billed=True, attempts=2, workflow_run_id="w")
    for copy in (cls(**err.context()), pickle.loads(pickle.dumps(err))):
        assert type(copy) is cls and copy.context() == err.context() and str(copy) == str(err)


@pytest.fixture
def sealed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every DifyError refuses attribute changes once its constructor returned."""
    patched: list[str] = []
    init = DifyError.__init__

    def sealed_init(self: DifyError, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        BaseException.__setattr__(self, "_sealed", True)

    def guarded(self: DifyError, name: str, value: object) -> None:
        if getattr(self, "_sealed", False) and not (name.startswith("__") and name.endswith("__")):
            patched.append(f"{type(self).__name__}.{name}")
            raise AssertionError(f"{type(self).__name__}.{name} was patched after construction")
        BaseException.__setattr__(self, name, value)

    monkeypatch.setattr(DifyError, "__init__", sealed_init)
    monkeypatch.setattr(DifyError, "__setattr__", guarded)
    yield patched
    assert patched == []


def _echo_key(conn: socket.socket) -> None:
    """A gateway that echoes the Authorization header in its error message."""
    head = read_request(conn).decode()
    key = next(line for line in head.split("\r\n") if line.lower().startswith("authorization:"))
    body = json.dumps({"code": "invalid_param", "message": f"bad header {key}"}).encode()
    conn.sendall(answer(400, body, Content_Type="application/json"))


def test_no_error_is_patched_after_it_was_made(sealed: list[str], fake_dify: FakeDify, make_client) -> None:
    fake_dify.faults.add(Fault("status", path="/chat-messages", on=[1, 2, 3], status=503))
    with pytest.raises(DifyServerError) as info:
        make_client("chat", retry=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02)).chat(
            "q", user="u"
        )
    assert info.value.attempts == 3

    fake_dify.faults.add(Fault("workflow_status", path="/workflows/run", status_text="failed", on=[1]))
    with pytest.raises(DifyRunFailedError) as failed:
        make_client("workflow").run_workflow({}, user="u")
    assert (
        failed.value.result is not None
        and failed.value.workflow_run_id == failed.value.result.workflow_run_id
    )

    fake_dify.faults.add(Fault("stream_error", path="/chat-messages", on=[4], status=400, code="provider_x"))
    with pytest.raises(DifyBadRequestError) as streamed:
        make_client("chat", retry=NO_RETRY).chat("q", user="u", response_mode="streaming")
    assert streamed.value.maybe_billed and streamed.value.code == "provider_x"

    fake_dify.faults.add(Fault("stream_error", path="/workflows/run", on=[2]))
    with pytest.raises(DifyServerError) as run_error:
        make_client("workflow", retry=NO_RETRY).run_workflow({}, user="u", response_mode="streaming")
    assert run_error.value.maybe_billed and run_error.value.workflow_run_id

    fake_dify.faults.add(Fault("stall", path="/chat-messages", on=[5, 6], delay=1.0))
    with pytest.raises(DifyTimeoutError) as timed_out:
        policy = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)
        make_client("chat", retry=policy, timeout=(2, 0.2)).chat("q", user="u")
    assert timed_out.value.attempts == 2 and timed_out.value.maybe_billed


@pytest.mark.parametrize("call", ["info", "chat"])
def test_echoed_secrets_are_masked_in_a_new_error(
    sealed: list[str], fake_dify: FakeDify, client_engine: str, call: str
) -> None:
    key = fake_dify.app("chat").key
    with (
        RawServer(_echo_key) as server,
        client_class(client_engine)(server.url, key, retry=NO_RETRY) as client,
        pytest.raises(DifyBadRequestError) as info,
    ):
        client.info() if call == "info" else client.chat("q", user="u")
    err, chain = info.value, []
    cur: BaseException | None = err
    while cur is not None:
        chain.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    assert "bad header Authorization: Bearer ***" in err.message
    assert all(key not in text for text in chain)


def test_oauth2_refresh_message_and_token_timeout(
    sealed: list[str], fake_dify: FakeDify, client_engine: str
) -> None:
    Client = client_class(client_engine)  # noqa: N806 - a class, or its async-driven twin
    fake_dify.add_oauth_client("cid", "client-secret-0123456789", app_mode="chat")
    auth = OAuth2ClientCredentials(
        fake_dify.token_url, "cid", "client-secret-0123456789", on_token=lambda t: fake_dify.revoke_tokens()
    )
    with Client(fake_dify.url, auth, retry=FAST) as client, pytest.raises(DifyError) as info:
        client.chat("q", user="u")
    assert info.value.message.endswith("(still refused after refreshing the OAuth2 token once)")
    fake_dify.faults.add(Fault("token_slow", delay=1.0))
    slow = OAuth2ClientCredentials(fake_dify.token_url, "cid", "client-secret-0123456789", timeout=(2, 0.2))
    with Client(fake_dify.url, slow, retry=NO_RETRY) as client, pytest.raises(DifyTransportError) as info:
        client.chat("q", user="u")
    assert info.value.code == "token_timeout"
