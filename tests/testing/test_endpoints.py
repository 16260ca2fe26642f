"""FakeDify endpoint shapes, auth and validation, driven with plain ``requests``."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_dify.testing import FakeApp, FakeDify, answer_text, make_usage, prompt_text

from .fakedify_helpers import assert_same_shape, bearer, fixture, validate


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(
    http: requests.Session, fake: FakeDify, mode: str, path: str, body: dict[str, Any], **kw: Any
) -> requests.Response:
    return http.post(f"{fake.url}{path}", json=body, headers=bearer(fake.app(mode).key), timeout=10, **kw)


def test_default_apps_and_keys(fake_dify: FakeDify) -> None:
    modes = [app.mode for app in fake_dify.apps]
    assert modes == ["chat", "completion", "workflow", "advanced-chat", "agent-chat"]
    for app in fake_dify.apps:
        assert re.fullmatch(r"app-[A-Za-z0-9]{24}", app.key)
        assert app.key not in repr(app)
    assert len({app.key for app in fake_dify.apps}) == 5
    assert fake_dify.url.startswith("http://127.0.0.1:") and fake_dify.url.endswith("/v1")
    assert fake_dify.token_url.endswith("/oauth2/token")


def test_info_matches_fixture(fake_dify: FakeDify, http: requests.Session) -> None:
    resp = http.get(f"{fake_dify.url}/info", headers=bearer(fake_dify.app("workflow").key), timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert_same_shape(body, fixture("info_200.json"))
    validate(body, "AppInfoResponse")
    assert body["mode"] == "workflow"
    assert body["name"] == fake_dify.app("workflow").name


def test_parameters_has_input_form() -> None:
    app = FakeApp(
        mode="completion", inputs=["city", {"variable": "tone", "type": "select", "options": ["a"]}]
    )
    with FakeDify(apps=[app]) as fake, requests.Session() as http:
        body = http.get(f"{fake.url}/parameters", headers=bearer(app.key), timeout=10).json()
    validate(body, "AppParametersResponse")
    assert body["user_input_form"][0] == {
        "text-input": {"label": "city", "variable": "city", "required": False, "default": ""}
    }
    assert body["user_input_form"][1]["select"]["options"] == ["a"]
    for key in ("opening_statement", "suggested_questions", "file_upload", "system_parameters"):
        assert key in body


@pytest.mark.parametrize("mode", ["chat", "advanced-chat"])
def test_chat_blocking_shape_and_answer(fake_dify: FakeDify, http: requests.Session, mode: str) -> None:
    body = {"query": "Hello", "inputs": {"b": 2, "a": "x"}, "user": "u1", "response_mode": "blocking"}
    resp = post(http, fake_dify, mode, "/chat-messages", body)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert_same_shape(data, fixture("chat_messages_blocking_200.json"))
    validate(data, "ChatCompletionResponse")
    assert data["answer"] == "Answer: Hello | a=x, b=2" == answer_text("Hello", {"b": 2, "a": "x"})
    assert data["mode"] == mode
    usage = data["metadata"]["usage"]
    assert usage["prompt_tokens"] == 10 + math.ceil(len(prompt_text("Hello", body["inputs"])) / 4)
    assert usage["completion_tokens"] == 5 + math.ceil(len(data["answer"]) / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage == make_usage(prompt_text("Hello", body["inputs"]), data["answer"], usage["latency"])


def test_usage_prices_are_exact_decimals() -> None:
    usage = make_usage("x" * 4092, "y" * 492, 0.5)  # 10+1023 prompt, 5+123 completion tokens
    assert usage["prompt_tokens"] == 1033 and usage["completion_tokens"] == 128
    assert usage["prompt_price"] == "0.0010330"
    assert usage["completion_price"] == "0.0002560"
    assert usage["total_price"] == "0.0012890"
    assert usage["currency"] == "USD" and isinstance(usage["latency"], float)


def test_conversation_continues_and_unknown_is_404(fake_dify: FakeDify, http: requests.Session) -> None:
    first = post(http, fake_dify, "chat", "/chat-messages", {"query": "a", "inputs": {}, "user": "u"}).json()
    again = post(
        http,
        fake_dify,
        "chat",
        "/chat-messages",
        {"query": "b", "inputs": {}, "user": "u", "conversation_id": first["conversation_id"]},
    )
    assert again.json()["conversation_id"] == first["conversation_id"]
    unknown = post(
        http,
        fake_dify,
        "chat",
        "/chat-messages",
        {"query": "b", "inputs": {}, "user": "u", "conversation_id": "00000000-0000-4000-8000-000000000000"},
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    bad = post(
        http,
        fake_dify,
        "chat",
        "/chat-messages",
        {"query": "b", "inputs": {}, "user": "u", "conversation_id": "nope"},
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_param"


def test_completion_blocking(fake_dify: FakeDify, http: requests.Session) -> None:
    resp = post(
        http, fake_dify, "completion", "/completion-messages", {"inputs": {"topic": "tea"}, "user": "u"}
    )
    data = resp.json()
    assert resp.status_code == 200
    assert_same_shape(data, fixture("completion_messages_blocking_200.json"))
    validate(data, "CompletionResponse")
    assert "conversation_id" not in data
    assert data["answer"] == "topic=tea"
    with_query = post(
        http, fake_dify, "completion", "/completion-messages", {"query": "Hi", "inputs": {}, "user": "u"}
    ).json()
    assert with_query["answer"] == "Answer: Hi"


def test_workflow_blocking_and_run_detail(fake_dify: FakeDify, http: requests.Session) -> None:
    resp = post(http, fake_dify, "workflow", "/workflows/run", {"inputs": {"q": "hi"}, "user": "u"})
    data = resp.json()
    assert resp.status_code == 200
    assert_same_shape(data, fixture("workflows_run_blocking_200.json"))
    validate(data, "WorkflowBlockingResponse")
    assert data["data"]["status"] == "succeeded"
    assert data["data"]["outputs"] == {"result": "q=hi"}
    assert data["workflow_run_id"] == data["data"]["id"]
    key = fake_dify.app("workflow").key
    detail = http.get(
        f"{fake_dify.url}/workflows/run/{data['workflow_run_id']}", headers=bearer(key), timeout=10
    )
    assert detail.status_code == 200
    validate(detail.json(), "WorkflowRunDetailResponse")
    assert detail.json()["inputs"] == '{"q": "hi"}'
    assert detail.json()["total_tokens"] == data["data"]["total_tokens"]
    missing = http.get(f"{fake_dify.url}/workflows/run/nope", headers=bearer(key), timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_auth_variants(fake_dify: FakeDify, http: requests.Session) -> None:
    url = f"{fake_dify.url}/info"
    must = "Authorization header must be provided and start with 'Bearer'"
    cases = [
        ({}, must, "none"),
        ({"Authorization": "Bearer"}, must, "invalid"),
        ({"Authorization": "Basic abc"}, "Authorization scheme must be 'Bearer'", "invalid"),
        ({"Authorization": "Bearer app-unknownunknownunknown12"}, "Access token is invalid", "invalid"),
    ]
    for headers, message, auth in cases:
        resp = http.get(url, headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.json() == {"code": "unauthorized", "message": message, "status": 401}
        assert fake_dify.requests[-1].auth == auth
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert resp.json() == fixture("derived_error_401_invalid_token.json")
    ok = http.get(url, headers={"Authorization": f"bearer {fake_dify.app().key}"}, timeout=10)
    assert ok.status_code == 200 and fake_dify.requests[-1].auth == "key"
    # The secret never reaches the log.
    assert all(fake_dify.app().key not in repr(r) for r in fake_dify.requests)


def test_api_disabled_is_403() -> None:
    app = FakeApp(mode="chat", api_enabled=False)
    with FakeDify(apps=[app]) as fake:
        resp = requests.get(f"{fake.url}/info", headers=bearer(app.key), timeout=10)
    assert resp.status_code == 403
    assert resp.json() == {
        "code": "forbidden",
        "message": "The app's API service has been disabled.",
        "status": 403,
    }


def test_unknown_path_is_404(fake_dify: FakeDify, http: requests.Session) -> None:
    for url in (f"{fake_dify.base_url}/chat-messages", f"{fake_dify.url}/nope"):
        resp = http.post(url, json={}, headers=bearer(fake_dify.app().key), timeout=10)
        assert resp.status_code == 404
        body = resp.json()
        assert body["code"] == "not_found" and body["status"] == 404
        assert body["message"].startswith("The requested URL was not found on the server.")


@pytest.mark.parametrize(
    ("mode", "path", "body", "code", "message"),
    [
        (
            "chat",
            "/chat-messages",
            {"query": "q", "inputs": {}},
            "invalid_param",
            "Arg user must be provided.",
        ),
        (
            "chat",
            "/chat-messages",
            {"query": "q", "inputs": {}, "user": ""},
            "invalid_param",
            "Arg user must be provided.",
        ),
        ("chat", "/chat-messages", {"inputs": {}, "user": "u"}, "invalid_param", "query is required"),
        ("completion", "/chat-messages", {"query": "q", "inputs": {}, "user": "u"}, "not_chat_app", None),
        ("chat", "/completion-messages", {"inputs": {}, "user": "u"}, "app_unavailable", None),
        ("chat", "/workflows/run", {"inputs": {}, "user": "u"}, "not_workflow_app", None),
        (
            "agent-chat",
            "/chat-messages",
            {"query": "q", "inputs": {}, "user": "u"},
            "invalid_param",
            "Agent Chat App does not support blocking mode",
        ),
        ("chat", "/chat-messages", {"query": "q", "inputs": [], "user": "u"}, "invalid_param", None),
    ],
)
def test_validation_errors(
    fake_dify: FakeDify,
    http: requests.Session,
    mode: str,
    path: str,
    body: dict[str, Any],
    code: str,
    message: str | None,
) -> None:
    resp = post(http, fake_dify, mode, path, body)
    assert resp.status_code == 400
    data = resp.json()
    assert data["code"] == code and data["status"] == 400
    if message:
        assert data["message"] == message
    if message == "Arg user must be provided." and "user" not in body:
        assert data == fixture("error_400_invalid_param_missing_user.json")
    if code == "invalid_param" and "Agent" in (message or ""):
        assert data == fixture("derived_error_400_agent_chat_blocking.json")


def test_required_input_and_bad_json() -> None:
    app = FakeApp(mode="workflow", inputs=[{"variable": "city", "required": True}])
    with FakeDify(apps=[app]) as fake, requests.Session() as http:
        resp = http.post(
            f"{fake.url}/workflows/run", json={"inputs": {}, "user": "u"}, headers=bearer(app.key)
        )
        assert resp.status_code == 400 and resp.json()["message"] == "city is required in input form"
        resp = http.post(f"{fake.url}/workflows/run", data=b"{not json", headers=bearer(app.key))
        assert resp.status_code == 400 and resp.json()["code"] == "bad_request"


def test_request_log_and_calls(fake_dify: FakeDify, http: requests.Session) -> None:
    post(http, fake_dify, "chat", "/chat-messages", {"query": "q", "inputs": {}, "user": "u"})
    post(http, fake_dify, "chat", "/chat-messages", {"query": "q", "inputs": {}})  # 400
    http.get(f"{fake_dify.url}/info", headers=bearer(fake_dify.app().key), timeout=10)
    records = fake_dify.requests
    assert [r.seq for r in records] == [1, 2, 3]
    first = records[0]
    assert (first.method, first.path, first.app_mode, first.auth, first.status) == (
        "POST",
        "/chat-messages",
        "chat",
        "key",
        200,
    )
    assert first.body == {"query": "q", "inputs": {}, "user": "u"}
    assert first.response["answer"] == "Answer: q" and first.fault is None
    assert first.started <= first.ended
    assert records[1].status == 400
    assert (
        fake_dify.calls() == 2
        and fake_dify.calls("/chat-messages") == 2
        and fake_dify.calls("/workflows/run") == 0
    )
    with pytest.raises(AttributeError):
        records[0].status = 1  # frozen
    fake_dify.reset()
    assert fake_dify.requests == [] and fake_dify.calls() == 0 and fake_dify.stats()["admitted"] == 0


def test_latency_callable_and_latency_reported() -> None:
    seen: list[Any] = []

    def latency(body: Any) -> float:
        seen.append(body)
        return 0.05

    with FakeDify(latency=latency) as fake:
        resp = requests.post(
            f"{fake.url}/chat-messages",
            json={"query": "q", "inputs": {}, "user": "u"},
            headers=bearer(fake.app().key),
            timeout=10,
        )
    assert seen == [{"query": "q", "inputs": {}, "user": "u"}]
    assert resp.json()["metadata"]["usage"]["latency"] == 0.05
    record = fake.requests[0]
    assert record.ended - record.started >= 0.05
