"""No API key, client secret or access token in logs, exception messages or reprs, even at DEBUG."""

from __future__ import annotations

import logging

import pytest

from airflow_dify.client import DifyError, OAuth2ClientCredentials, RetryPolicy
from airflow_dify.testing import FakeDify, Fault
from tests.client.client_helpers import client_class

SECRET = "Cl1ent-Secret-Never-Logged-42"
POLICY = RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02)


def _texts(err: BaseException) -> list[str]:
    out, cur, seen = [], err, set()
    while cur is not None and id(cur) not in seen:  # the whole chain, as a traceback could show it
        seen.add(id(cur))
        out += [str(cur), repr(cur)]
        cur = cur.__cause__ or cur.__context__
    return out


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_no_secret_anywhere(fake_dify: FakeDify, caplog: pytest.LogCaptureFixture, engine: str) -> None:
    DifyClient = client_class(engine)  # noqa: N806 - the class, or its async-driven twin
    caplog.set_level(logging.DEBUG)
    key = fake_dify.app("chat").key
    tokens: list[str] = []
    texts: list[str] = []

    def attempt(fn) -> None:
        try:
            fn()
        except DifyError as err:
            texts.extend(_texts(err))

    faults = [
        Fault("status", path="/chat-messages", on=[1], status=503),
        Fault("html", path="/chat-messages", on=[3], status=502),
        Fault("reset", path="/chat-messages", on=[4]),
        Fault("truncated", path="/chat-messages", on=[5]),
        Fault("stream_break", path="/chat-messages", on=[6, 7, 8]),
        Fault("stall", path="/chat-messages", on=[9], delay=1.0),
    ]
    for fault in faults:
        fake_dify.faults.add(fault)
    client = DifyClient(fake_dify.url, f"Bearer {key}\n", retry=POLICY, timeout=(5, 0.3))
    texts += [repr(client), str(client), repr(client.auth)]
    for _ in range(4):
        attempt(lambda: client.chat("q", user="u"))
    attempt(lambda: client.chat("q", user="u", response_mode="streaming"))
    attempt(lambda: DifyClient(fake_dify.url, key, retry=POLICY, timeout=(5, 0.3)).chat("q", user="u"))
    attempt(lambda: DifyClient(fake_dify.base_url, key, retry=POLICY).info())

    fake_dify.add_oauth_client("cid", SECRET, app_mode="chat")
    auth = OAuth2ClientCredentials(fake_dify.token_url, "cid", SECRET, on_token=tokens.append)
    oauth = DifyClient(fake_dify.url, auth, retry=POLICY)
    texts += [repr(auth), repr(oauth)]
    oauth.info()
    fake_dify.revoke_tokens()
    oauth.chat("q", user="u")  # 401 -> refresh -> resend, on the client under test
    attempt(
        lambda: DifyClient(
            fake_dify.url, OAuth2ClientCredentials(fake_dify.token_url, "cid", "wrong-" + SECRET)
        ).info()
    )
    fake_dify.faults.add(Fault("token_down"))
    auth.invalidate()
    attempt(oauth.info)

    assert len(tokens) == 2
    assert len(texts) > 10 and caplog.records  # something was really logged and raised
    haystack = caplog.text + "\n".join(texts) + "\n".join(r.getMessage() for r in caplog.records)
    ran = ("HTTP 502 from the gateway", "invalid_client", "before message_end", "read timeout", "503")
    for expected in ran:
        assert expected in haystack  # the failure paths really ran
    for secret in [key, SECRET, *tokens]:
        assert secret not in haystack
    assert key[4:12] not in haystack  # not even a long fragment of the key
