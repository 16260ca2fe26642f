"""FakeDify's ``POST /messages/{message_id}/feedbacks``: Dify's shapes, scoping and errors, over
real HTTP; plus the pure handler for the order of checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_dify.testing import FakeDify, Fault
from airflow_dify.testing.faults import FEEDBACK_PATH
from airflow_dify.testing.state import FakeState

from .fakedify_helpers import bearer, call, decoded, response, served

NOT_EXISTS = {"code": "not_found", "message": "Message Not Exists.", "status": 404}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def ask(http: requests.Session, fake: FakeDify, mode: str = "chat", user: str = "alice", **body: Any) -> dict:
    """One blocking generation; its JSON body."""
    path = {"completion": "/completion-messages"}.get(mode, "/chat-messages")
    payload = {"inputs": {}, "user": user, "response_mode": "blocking", **body}
    if path == "/chat-messages":
        payload.setdefault("query", "Hello?")
    resp = http.post(f"{fake.url}{path}", json=payload, headers=bearer(fake.app(mode).key), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def rate(
    http: requests.Session, fake: FakeDify, message_id: str, body: Any, mode: str = "chat"
) -> requests.Response:
    url = f"{fake.url}/messages/{message_id}/feedbacks"
    return http.post(url, json=body, headers=bearer(fake.app(mode).key), timeout=10)


def test_like_then_change_then_revoke(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]

    resp = rate(http, fake_dify, message_id, {"rating": "like", "user": "alice", "content": "spot on"})
    assert resp.status_code == 200 and resp.json() == {"result": "success"}
    assert fake_dify.rating(message_id) == ("like", "spot on")

    resp = rate(http, fake_dify, message_id, {"rating": "dislike", "user": "alice"})
    assert resp.json() == {"result": "success"}
    assert fake_dify.rating(message_id) == ("dislike", None)  # content is replaced too, like Dify

    resp = rate(http, fake_dify, message_id, {"rating": None, "user": "alice"})
    assert resp.status_code == 200 and fake_dify.rating(message_id) is None

    assert fake_dify.feedbacks == [
        (message_id, "like", "alice", "spot on"),
        (message_id, "dislike", "alice", None),
        (message_id, None, "alice", None),
    ]
    assert fake_dify.feedbacks[0].content == "spot on"
    assert [r.status for r in fake_dify.requests if r.path.endswith("/feedbacks")] == [200, 200, 200]


def test_revoking_nothing_is_invalid_param(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    resp = rate(http, fake_dify, message_id, {"rating": None, "user": "alice"})
    assert resp.status_code == 400
    assert resp.json() == {
        "code": "invalid_param",
        "message": "rating cannot be None when feedback not exists",
        "status": 400,
    }
    assert fake_dify.feedbacks == []


def test_unknown_message_and_other_user_are_not_found(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify, user="alice")["message_id"]
    unknown = rate(http, fake_dify, str(uuid.uuid4()), {"rating": "like", "user": "alice"})
    assert unknown.status_code == 404 and unknown.json() == NOT_EXISTS
    # Dify looks the message up by its end user: another user's message does not exist for them.
    other = rate(http, fake_dify, message_id, {"rating": "like", "user": "bob"})
    assert other.status_code == 404 and other.json() == NOT_EXISTS
    # ... nor for another app of the same workspace.
    other_app = rate(http, fake_dify, message_id, {"rating": "like", "user": "alice"}, mode="completion")
    assert other_app.status_code == 404 and other_app.json() == NOT_EXISTS
    assert fake_dify.feedbacks == [] and fake_dify.rating(message_id) is None


def test_deleted_message_is_not_found(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    fake_dify.delete_message(message_id)
    resp = rate(http, fake_dify, message_id, {"rating": "like", "user": "alice"})
    assert resp.status_code == 404 and resp.json() == NOT_EXISTS


@pytest.mark.parametrize("rating", ["good", "LIKE", 1, ["like"]])
def test_invalid_rating_is_invalid_param(fake_dify: FakeDify, http: requests.Session, rating: Any) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    resp = rate(http, fake_dify, message_id, {"rating": rating, "user": "alice"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "invalid_param" and body["status"] == 400 and "rating" in body["message"]
    assert fake_dify.feedbacks == []


def test_user_is_required(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    resp = rate(http, fake_dify, message_id, {"rating": "like"})
    assert resp.status_code == 400
    assert resp.json() == {"code": "invalid_param", "message": "Arg user must be provided.", "status": 400}


def test_completion_streamed_and_chatflow_messages_take_feedback(
    fake_dify: FakeDify, http: requests.Session
) -> None:
    completion = ask(http, fake_dify, mode="completion", inputs={"topic": "x"})["message_id"]
    url = f"{fake_dify.url}/chat-messages"
    body = {"query": "Hi", "inputs": {}, "user": "carol", "response_mode": "streaming"}
    with http.post(url, json=body, headers=bearer(fake_dify.app("advanced-chat").key), stream=True) as resp:
        text = resp.text
    streamed = next(line for line in text.splitlines() if '"message_end"' in line)
    streamed_id = streamed.split('"message_id": "', 1)[1].split('"', 1)[0]
    assert (
        rate(http, fake_dify, completion, {"rating": "like", "user": "alice"}, "completion").status_code
        == 200
    )
    resp = rate(http, fake_dify, streamed_id, {"rating": "dislike", "user": "carol"}, "advanced-chat")
    assert resp.status_code == 200
    assert [(f.message_id, f.rating) for f in fake_dify.feedbacks] == [
        (completion, "like"),
        (streamed_id, "dislike"),
    ]


def test_workflow_run_ids_are_not_messages(fake_dify: FakeDify, http: requests.Session) -> None:
    body = {"inputs": {"question": "q"}, "user": "alice", "response_mode": "blocking"}
    url = f"{fake_dify.url}/workflows/run"
    run_id = http.post(url, json=body, headers=bearer(fake_dify.app("workflow").key), timeout=10).json()[
        "workflow_run_id"
    ]
    resp = rate(http, fake_dify, run_id, {"rating": "like", "user": "alice"}, mode="workflow")
    assert resp.status_code == 404 and resp.json() == NOT_EXISTS


def test_auth_and_route(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    url = f"{fake_dify.url}/messages/{message_id}/feedbacks"
    no_key = http.post(url, json={"rating": "like", "user": "alice"}, timeout=10)
    assert no_key.status_code == 401 and no_key.json()["code"] == "unauthorized"
    wrong = http.post(url, json={"rating": "like", "user": "alice"}, headers=bearer("app-nope"), timeout=10)
    assert wrong.status_code == 401
    get = http.get(url, headers=bearer(fake_dify.app().key), timeout=10)
    assert get.status_code == 405
    # Dify routes <uuid:message_id>: anything else is the plain not-found page, before auth.
    bad = http.post(f"{fake_dify.url}/messages/not-a-uuid/feedbacks", json={"user": "a"}, timeout=10)
    assert bad.status_code == 404 and bad.json()["code"] == "not_found"
    assert "requested URL was not found" in bad.json()["message"]
    assert fake_dify.feedbacks == []


def test_upper_case_id_finds_the_message(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    resp = rate(http, fake_dify, message_id.upper(), {"rating": "like", "user": "alice"})
    assert resp.status_code == 200 and fake_dify.feedbacks[0].message_id == message_id


def test_faults_on_the_feedback_path_only(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    fake_dify.faults.add(Fault("status", path=FEEDBACK_PATH, on=[1], status=503))
    fake_dify.faults.add(Fault("status", on=[2], status=500))  # generation paths only
    first = rate(http, fake_dify, message_id, {"rating": "like", "user": "alice"})
    assert first.status_code == 503 and fake_dify.feedbacks == []  # nothing stored
    assert rate(http, fake_dify, message_id, {"rating": "like", "user": "alice"}).status_code == 200
    assert rate(http, fake_dify, message_id, {"rating": "like", "user": "alice"}).status_code == 200
    assert fake_dify.calls(FEEDBACK_PATH) == 3
    assert fake_dify.calls() == 1  # feedbacks are not generation calls
    # The any-path fault counts generation requests only: the next generation is its number 2.
    resp = http.post(
        f"{fake_dify.url}/chat-messages",
        json={"query": "x", "inputs": {}, "user": "alice"},
        headers=bearer(fake_dify.app().key),
        timeout=10,
    )
    assert resp.status_code == 500


def test_a_fault_without_feedback_path_is_refused_for_other_kinds() -> None:
    with pytest.raises(ValueError, match="fault path"):
        Fault("status", path="/messages/x/feedbacks")


def test_reset_keeps_messages_and_ratings(fake_dify: FakeDify, http: requests.Session) -> None:
    message_id = ask(http, fake_dify)["message_id"]
    rate(http, fake_dify, message_id, {"rating": "like", "user": "alice"})
    fake_dify.reset()
    assert fake_dify.feedbacks == [] and fake_dify.rating(message_id) == ("like", None)
    assert rate(http, fake_dify, message_id, {"rating": None, "user": "alice"}).status_code == 200


def test_handler_checks_user_before_rating_and_message() -> None:
    state = FakeState()
    missing = str(uuid.uuid4())
    no_user = decoded(served(call(state, f"/messages/{missing}/feedbacks", {"rating": "bad"})))
    assert no_user["message"] == "Arg user must be provided."
    bad_rating = decoded(
        served(call(state, f"/messages/{missing}/feedbacks", {"rating": "bad", "user": "u"}))
    )
    assert bad_rating["code"] == "invalid_param"
    unknown = served(call(state, f"/messages/{missing}/feedbacks", {"rating": "like", "user": "u"}))
    assert response(unknown).status == 404
    records = state.records()
    assert [r.status for r in records] == [400, 400, 404]
    assert records[-1].body == {"rating": "like", "user": "u"} and records[-1].app_mode == "chat"
