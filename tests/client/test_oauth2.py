"""OAuth2 client credentials: one shared token per client, refreshed ahead of expiry and on 401."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_dify.client import (
    NO_RETRY,
    DifyAuthError,
    DifyClient,
    DifyConfigError,
    DifyTransportError,
    OAuth2ClientCredentials,
    clear_token_cache,
)
from airflow_dify.client.transport import Request, Response, StreamedResponse
from airflow_dify.client.urllib3_transport import Urllib3Transport
from airflow_dify.testing import FakeDify, Fault
from tests.client.client_helpers import FAST, client_class

SECRET = "s3cr3t-Client-Secret-0123456789"


class TokenLog:
    """on_token callback that records every token it is told about."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, token: str) -> None:
        with self.lock:
            self.tokens.append(token)


def _auth(fake: FakeDify, **kwargs) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(fake.token_url, "batch-client", kwargs.pop("secret", SECRET), **kwargs)


@pytest.fixture(params=["sync", "async"])
def Client(request: pytest.FixtureRequest) -> Any:  # noqa: N802 - stands for a client class
    """DifyClient, or its asyncio twin driven from the test: generation calls behave the same."""
    return client_class(request.param)


@pytest.fixture
def oauth_fake(fake_dify: FakeDify) -> FakeDify:
    fake_dify.add_oauth_client("batch-client", SECRET, app_mode="chat")
    return fake_dify


def test_one_token_for_50_calls_from_8_threads(oauth_fake: FakeDify, Client: Any) -> None:  # noqa: N803
    seen = TokenLog()
    auth = _auth(oauth_fake, on_token=seen)
    with Client(oauth_fake.url, auth, retry=FAST) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.chat(f"q{i}", user="u").answer, range(50)))
    assert answers == [f"Answer: q{i}" for i in range(50)]
    assert oauth_fake.token_requests == 1
    assert len(seen.tokens) == 1
    assert {r.auth for r in oauth_fake.requests} == {"token"}


def test_token_cache_is_shared_across_instances(oauth_fake: FakeDify) -> None:
    first, second = TokenLog(), TokenLog()
    with DifyClient(oauth_fake.url, _auth(oauth_fake, on_token=first), retry=FAST) as a:
        a.info()
    with DifyClient(oauth_fake.url, _auth(oauth_fake, on_token=second), retry=FAST) as b:
        b.info()
    assert oauth_fake.token_requests == 1
    assert first.tokens == second.tokens  # each instance still announces the token it uses


def test_wrong_secret_does_not_reuse_a_cached_token(oauth_fake: FakeDify) -> None:
    with DifyClient(oauth_fake.url, _auth(oauth_fake), retry=FAST) as good:
        good.info()
    bad_auth = _auth(oauth_fake, secret="wrong-secret-value")
    with DifyClient(oauth_fake.url, bad_auth, retry=FAST) as bad, pytest.raises(DifyAuthError) as info:
        bad.info()
    assert info.value.code == "invalid_client" and info.value.status == 401
    assert "wrong-secret-value" not in str(info.value) and "client_secret" in info.value.message


def test_refreshed_after_expiry() -> None:
    with FakeDify(token_ttl=2) as fake:
        fake.add_oauth_client("batch-client", SECRET, app_mode="chat")
        with DifyClient(fake.url, _auth(fake, refresh_margin=0.5), retry=FAST) as client:
            client.info()
            client.info()
            assert fake.token_requests == 1
            time.sleep(1.7)  # past refresh_at (2 - 0.5 s)
            client.info()
        assert fake.token_requests == 2
        assert all(r.status == 200 for r in fake.requests)  # refreshed ahead: no 401 was needed


def test_refreshed_once_after_401_without_consuming_a_retry(oauth_fake: FakeDify, Client: Any) -> None:  # noqa: N803
    with Client(oauth_fake.url, _auth(oauth_fake), retry=NO_RETRY) as client:
        client.chat("a", user="u")
        oauth_fake.revoke_tokens()
        assert client.chat("b", user="u").answer == "Answer: b"  # max_attempts=1, still fine
    assert oauth_fake.token_requests == 2
    assert [r.status for r in oauth_fake.requests] == [200, 401, 200]


def test_eight_threads_seeing_401_cause_one_refresh(oauth_fake: FakeDify, Client: Any) -> None:  # noqa: N803
    with Client(oauth_fake.url, _auth(oauth_fake), retry=FAST) as client:
        client.info()
        oauth_fake.revoke_tokens()
        barrier = threading.Barrier(8)

        def call(i: int) -> str:
            barrier.wait(timeout=10)
            return client.chat(f"q{i}", user="u").answer

        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(call, range(8))) == sorted(f"Answer: q{i}" for i in range(8))
    assert oauth_fake.token_requests == 2


def test_second_401_after_refresh_is_final(oauth_fake: FakeDify, Client: Any) -> None:  # noqa: N803
    # Every token is revoked as soon as it is issued: the gateway keeps refusing it.
    auth = _auth(oauth_fake, on_token=lambda token: oauth_fake.revoke_tokens())
    with Client(oauth_fake.url, auth, retry=FAST) as client, pytest.raises(DifyAuthError) as info:
        client.chat("q", user="u")
    assert "after refreshing the OAuth2 token once" in info.value.message
    assert "OAuth2 access token was refused" in info.value.message
    assert info.value.attempts == 1
    assert oauth_fake.token_requests == 2 and oauth_fake.calls("/chat-messages") == 2


@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_client_auth_methods(oauth_fake: FakeDify, client_auth: str) -> None:
    with DifyClient(oauth_fake.url, _auth(oauth_fake, client_auth=client_auth), retry=FAST) as client:
        assert client.info().mode == "chat"
    assert oauth_fake.token_requests == 1


def test_scope_and_audience_sent_and_checked(fake_dify: FakeDify) -> None:
    fake_dify.add_oauth_client("batch-client", SECRET, app_mode="workflow", scope="dify.run", audience="dify")
    ok = _auth(fake_dify, scope="dify.run", audience="dify")
    with DifyClient(fake_dify.url, ok, retry=FAST) as client:
        assert client.info().mode == "workflow"
    bad = _auth(fake_dify, scope="admin")
    with DifyClient(fake_dify.url, bad, retry=FAST) as client, pytest.raises(DifyAuthError) as info:
        client.info()
    assert info.value.code == "invalid_scope" and "scope/audience" in info.value.message


def test_token_endpoint_down_is_retryable(oauth_fake: FakeDify) -> None:
    oauth_fake.faults.add(Fault("token_down", on=[1]))
    with DifyClient(oauth_fake.url, _auth(oauth_fake), retry=FAST) as client:
        assert client.info().mode == "chat"  # the failed token fetch was retried
    oauth_fake.faults.add(Fault("token_down"))
    clear_token_cache()
    client = DifyClient(oauth_fake.url, _auth(oauth_fake), retry=NO_RETRY)
    with client, pytest.raises(DifyTransportError) as info:
        client.info()
    assert info.value.status == 503 and info.value.retryable


def test_token_endpoint_timeout(oauth_fake: FakeDify) -> None:
    oauth_fake.faults.add(Fault("token_slow", delay=2.0))
    auth = _auth(oauth_fake, timeout=(5, 0.3))
    with (
        DifyClient(oauth_fake.url, auth, retry=NO_RETRY) as client,
        pytest.raises(DifyTransportError) as info,
    ):
        client.info()
    assert info.value.code == "token_timeout"


def test_config_validation_and_repr(fake_dify: FakeDify) -> None:
    with pytest.raises(DifyConfigError):
        OAuth2ClientCredentials("ftp://x/token", "id", SECRET)
    with pytest.raises(DifyConfigError):
        OAuth2ClientCredentials(fake_dify.token_url, "id", "  ")
    with pytest.raises(DifyConfigError):
        OAuth2ClientCredentials(fake_dify.token_url, "id", SECRET, client_auth="jwt")
    auth = _auth(fake_dify)
    assert SECRET not in repr(auth) and "s3cr" not in repr(auth)


class RecordingTransport:
    """Delegates to a real transport and keeps the requests it was given."""

    def __init__(self) -> None:
        self.inner = Urllib3Transport(pool_size=1)
        self.requests: list[Request] = []
        self.closed = False

    def send(self, request: Request) -> Response:
        self.requests.append(request)
        return self.inner.send(request)

    def stream(self, request: Request) -> StreamedResponse:
        return self.inner.stream(request)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_token_requests_go_through_the_given_transport(oauth_fake: FakeDify) -> None:
    transport = RecordingTransport()
    auth = _auth(oauth_fake, transport=transport, timeout=(3, 7))
    with DifyClient(oauth_fake.url, auth, retry=FAST) as client:
        client.info()
    (request,) = transport.requests
    assert (request.method, request.url, request.timeout) == ("POST", oauth_fake.token_url, (3.0, 7.0))
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Authorization"].startswith("Basic ")
    assert request.body == b"grant_type=client_credentials" and SECRET not in request.label
    assert not transport.closed  # a transport handed in belongs to the caller
    transport.close()
