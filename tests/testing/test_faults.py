"""Every fault kind of FakeDify, and the matching rules (on, every, after, times, probability)."""

from __future__ import annotations

import json

import pytest
import requests

from airflow_dify.testing import FakeDify, Fault

from .fakedify_helpers import bearer, parse_sse

CHAT = {"query": "q", "inputs": {}, "user": "u"}


def chat(fake: FakeDify, body: dict | None = None, timeout: float = 10) -> requests.Response:
    return requests.post(
        f"{fake.url}/chat-messages", json=body or CHAT, headers=bearer(fake.app().key), timeout=timeout
    )


def workflow(fake: FakeDify, streaming: bool = False) -> requests.Response:
    body = {"inputs": {"x": 1}, "user": "u", "response_mode": "streaming" if streaming else "blocking"}
    return requests.post(
        f"{fake.url}/workflows/run", json=body, headers=bearer(fake.app("workflow").key), timeout=10
    )


def test_status_fault_on_numbers(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("status", path="/chat-messages", on=[2, 3], status=503))
    statuses = [chat(fake_dify).status_code for _ in range(4)]
    assert statuses == [200, 503, 503, 200]
    failed = fake_dify.requests[1]
    assert failed.fault == "status" and failed.status == 503
    assert failed.response == {
        "code": "service_unavailable",
        "message": "Injected fault service_unavailable.",
        "status": 503,
    }
    # Early faults are not admitted: nothing was billed.
    assert fake_dify.stats()["admitted"] == 2


def test_status_fault_with_code_and_default_500(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("status", on=[1], status=400, code="provider_quota_exceeded", message="quota"))
    fake_dify.faults.add(Fault("status", on=[2]))
    first, second = chat(fake_dify), chat(fake_dify)
    assert first.json() == {"code": "provider_quota_exceeded", "message": "quota", "status": 400}
    assert second.status_code == 500 and second.json()["code"] == "internal_server_error"


def test_path_scoping_and_every_times(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("status", path="/workflows/run", every=2, times=2, status=500))
    assert [chat(fake_dify).status_code for _ in range(4)] == [200] * 4
    assert [workflow(fake_dify).status_code for _ in range(8)] == [200, 500, 200, 500, 200, 200, 200, 200]


def test_after_fails_everything_after_n(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("status", after=3, status=502))
    assert [chat(fake_dify).status_code for _ in range(6)] == [200, 200, 200, 502, 502, 502]


def test_probability_is_seeded_and_reproducible() -> None:
    def run() -> list[int]:
        with FakeDify() as fake:
            fake.faults.add(Fault("status", probability=0.5, seed=7))
            return [chat(fake).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert 0 < first.count(500) < 30


def test_html_fault(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("html", on=[1]))
    resp = chat(fake_dify)
    assert resp.status_code == 502 and resp.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in resp.text
    with pytest.raises(ValueError):
        resp.json()


def test_retry_after_fault(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("retry_after", on=[1], retry_after=7))
    resp = chat(fake_dify)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.json()["code"] == "too_many_requests"


def test_billed_504(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("billed_504", on=[1]))
    resp = chat(fake_dify)
    assert resp.status_code == 504 and "Gateway Time-out" in resp.text
    record = fake_dify.requests[0]
    assert record.fault == "billed_504" and record.status == 504
    assert record.response["answer"] == "Answer: q"  # the work was done and billed
    assert fake_dify.stats()["admitted"] == 1


def test_reset_fault(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("reset", on=[1]))
    with pytest.raises(requests.ConnectionError):
        chat(fake_dify)
    assert fake_dify.requests[0].fault == "reset"
    assert chat(fake_dify).status_code == 200  # the server lives on


def test_stall_fault_triggers_read_timeout() -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault("stall", on=[1], delay=1.0))
        with pytest.raises(requests.ReadTimeout):
            chat(fake, timeout=0.3)
        assert chat(fake).status_code == 200


def test_truncated_and_malformed(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("truncated", on=[1]))
    fake_dify.faults.add(Fault("malformed", on=[2]))
    for _ in range(2):
        resp = chat(fake_dify)
        assert resp.status_code == 200
        with pytest.raises(ValueError):
            json.loads(resp.text)
    assert [r.fault for r in fake_dify.requests] == ["truncated", "malformed"]


@pytest.mark.parametrize("status_text", ["failed", "partial-succeeded", "paused"])
def test_workflow_status_fault(fake_dify: FakeDify, status_text: str) -> None:
    fake_dify.faults.add(Fault("workflow_status", status_text=status_text))
    chat_resp = chat(fake_dify)  # does not apply to chat, and is not used up by it
    assert chat_resp.status_code == 200 and fake_dify.requests[-1].fault is None
    data = workflow(fake_dify).json()["data"]
    assert data["status"] == status_text
    if status_text == "failed":
        assert data["error"] and data["outputs"] == {}
    if status_text == "paused":
        assert data["finished_at"] is None and data["paused_nodes"]
    _, events = parse_sse(workflow(fake_dify, streaming=True).text)
    assert events[-1]["event"] == "workflow_finished" and events[-1]["data"]["status"] == status_text


def test_stream_break(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("stream_break", path="/workflows/run"))
    assert workflow(fake_dify).status_code == 200  # blocking: not applicable
    resp = workflow(fake_dify, streaming=True)
    _, events = parse_sse(resp.text)
    assert events and events[0]["event"] == "workflow_started"
    assert "workflow_finished" not in [e["event"] for e in events]


def test_stream_error(fake_dify: FakeDify) -> None:
    fake_dify.faults.add(Fault("stream_error", code="completion_request_error", status=400, message="boom"))
    resp = chat(fake_dify, {**CHAT, "response_mode": "streaming"})
    _, events = parse_sse(resp.text)
    assert events[-1]["event"] == "error"
    assert (events[-1]["status"], events[-1]["code"], events[-1]["message"]) == (
        400,
        "completion_request_error",
        "boom",
    )
    assert "message_end" not in [e["event"] for e in events]


def test_token_faults(fake_dify: FakeDify) -> None:
    fake_dify.add_oauth_client("cid", "secret")
    fake_dify.faults.add(Fault("token_down", on=[1]))
    fake_dify.faults.add(Fault("token_slow", on=[2], delay=0.4))
    form = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "secret"}
    down = requests.post(fake_dify.token_url, data=form, timeout=10)
    assert down.status_code == 503
    with pytest.raises(requests.ReadTimeout):
        requests.post(fake_dify.token_url, data=form, timeout=0.1)
    assert requests.post(fake_dify.token_url, data=form, timeout=10).status_code == 200
    assert chat(fake_dify).status_code == 200  # token faults never hit /v1


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("status", path="/v1/chat-messages")
