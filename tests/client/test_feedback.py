"""DifyClient.feedback against FakeDify: the request, Dify's errors, and the retry policy."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest

from airflow_dify.client import (
    DifyAuthError,
    DifyBadRequestError,
    DifyClient,
    DifyConfigError,
    DifyNotFoundError,
    DifyServerError,
)
from airflow_dify.testing import FakeDify, Fault
from airflow_dify.testing.faults import FEEDBACK_PATH
from tests.client.client_helpers import FAST, CountingPool

MakeClient = Callable[..., DifyClient]


def feedback_requests(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.path.endswith("/feedbacks")]


def test_rates_and_revokes_as_the_user_who_asked(fake_dify: FakeDify, make_client: MakeClient) -> None:
    pool = CountingPool()
    client = make_client(pool=pool)
    message_id = client.chat("Hello?", user="u-1").message_id
    generation_permits = len(pool.acquired)

    assert client.feedback(message_id, rating="like", user="u-1", content="good") == {"result": "success"}
    assert client.feedback(message_id, rating=None, user="u-1") == {"result": "success"}

    sent = feedback_requests(fake_dify)
    assert [r.body for r in sent] == [
        {"rating": "like", "user": "u-1", "content": "good"},
        {"rating": None, "user": "u-1"},
    ]
    assert all(r.path == f"/messages/{message_id}/feedbacks" and r.method == "POST" for r in sent)
    assert fake_dify.feedbacks == [(message_id, "like", "u-1", "good"), (message_id, None, "u-1", None)]
    assert len(pool.acquired) == generation_permits  # feedback is not drawn from the generation pool


def test_unknown_message_is_not_found_without_a_base_url_hint(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(DifyNotFoundError) as caught:
        client.feedback(str(uuid.uuid4()), rating="like", user="u-1")
    assert caught.value.status == 404 and caught.value.code == "not_found"
    assert caught.value.message == "Message Not Exists."  # about the message, not the URL
    assert caught.value.attempts == 1


def test_revoking_nothing_is_a_bad_request(make_client: MakeClient) -> None:
    client = make_client()
    message_id = client.chat("Hello?", user="u-1").message_id
    with pytest.raises(DifyBadRequestError, match="rating cannot be None"):
        client.feedback(message_id, rating=None, user="u-1")


def test_transient_errors_are_retried_even_when_the_request_may_have_arrived(
    fake_dify: FakeDify, make_client: MakeClient
) -> None:
    # A generation would not be re-sent after a reset (it may have run and been billed); a
    # feedback is free and idempotent, so it is.
    client = make_client(retry=dataclasses.replace(FAST, resend_maybe_billed=False))
    message_id = client.chat("Hello?", user="u-1").message_id
    fake_dify.faults.add(Fault("status", path=FEEDBACK_PATH, on=[1], status=503))
    fake_dify.faults.add(Fault("reset", path=FEEDBACK_PATH, on=[2]))
    assert client.feedback(message_id, rating="dislike", user="u-1") == {"result": "success"}
    assert [r.status for r in feedback_requests(fake_dify)] == [503, 0, 200]
    assert fake_dify.feedbacks == [(message_id, "dislike", "u-1", None)]


def test_retries_end_with_the_last_error(fake_dify: FakeDify, make_client: MakeClient) -> None:
    client = make_client(retry=dataclasses.replace(FAST, max_attempts=3))
    message_id = client.chat("Hello?", user="u-1").message_id
    fake_dify.faults.add(Fault("status", path=FEEDBACK_PATH, status=500))
    with pytest.raises(DifyServerError) as caught:
        client.feedback(message_id, rating="like", user="u-1")
    assert caught.value.attempts == 3 and len(feedback_requests(fake_dify)) == 3


def test_refused_key_is_not_retried(fake_dify: FakeDify, make_client: MakeClient) -> None:
    client = make_client(auth="app-" + "x" * 24)
    with pytest.raises(DifyAuthError):
        client.feedback(str(uuid.uuid4()), rating="like", user="u-1")
    assert len(feedback_requests(fake_dify)) == 1


@pytest.mark.parametrize(
    ("message_id", "rating", "user", "content"),
    [
        ("", "like", "u", None),
        ("m", "good", "u", None),
        ("m", "like", " ", None),
        ("m", "like", "u", 3),
    ],
)
def test_bad_arguments_send_nothing(
    fake_dify: FakeDify, make_client: MakeClient, message_id: str, rating: str, user: str, content: object
) -> None:
    with pytest.raises(DifyConfigError):
        make_client().feedback(message_id, rating=rating, user=user, content=content)  # type: ignore[arg-type]
    assert fake_dify.requests == []
