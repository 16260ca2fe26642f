"""OAuth2 client-credentials token endpoint of FakeDify, and tokens on /v1."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from airflow_dify.testing import FakeDify

from .fakedify_helpers import bearer

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def fake() -> Iterator[FakeDify]:
    with FakeDify(token_ttl=3600) as fake:
        fake.add_oauth_client(
            "svc", "s3cret:/+", app_mode="workflow", scope="apps:run apps:read", audience="dify"
        )
        yield fake


def token(fake: FakeDify, **form: str) -> requests.Response:
    return requests.post(fake.token_url, data={**GRANT, **form}, timeout=10)


def test_basic_auth_and_token_use(fake: FakeDify) -> None:
    resp = requests.post(fake.token_url, data=GRANT, auth=("svc", "s3cret:/+"), timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert fake.token_requests == 1
    info = requests.get(f"{fake.url}/info", headers=bearer(body["access_token"]), timeout=10)
    assert info.status_code == 200 and info.json()["mode"] == "workflow"  # acts for its app
    record = fake.requests[-1]
    assert record.auth == "token" and record.app_mode == "workflow"
    assert body["access_token"] not in repr(record)
    run = requests.post(
        f"{fake.url}/workflows/run",
        json={"inputs": {}, "user": "u"},
        headers=bearer(body["access_token"]),
        timeout=10,
    )
    assert run.status_code == 200


def test_body_auth_and_scope_audience(fake: FakeDify) -> None:
    ok = token(fake, client_id="svc", client_secret="s3cret:/+", scope="apps:run", audience="dify")
    assert ok.status_code == 200 and ok.json()["scope"] == "apps:run"
    bad_scope = token(fake, client_id="svc", client_secret="s3cret:/+", scope="admin")
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"
    bad_aud = token(fake, client_id="svc", client_secret="s3cret:/+", audience="other")
    assert bad_aud.status_code == 400
    assert fake.token_requests == 1


def test_client_errors(fake: FakeDify) -> None:
    wrong = token(fake, client_id="svc", client_secret="nope")
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid_client"}
    unknown = requests.post(fake.token_url, data=GRANT, auth=("who", "x"), timeout=10)
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    none = requests.post(fake.token_url, data=GRANT, timeout=10)
    assert none.status_code == 401
    grant = requests.post(
        fake.token_url, data={"grant_type": "password"}, auth=("svc", "s3cret:/+"), timeout=10
    )
    assert grant.status_code == 400 and grant.json() == {"error": "unsupported_grant_type"}
    assert "s3cret" not in wrong.text + grant.text
    assert fake.token_requests == 0


def test_revoke_tokens(fake: FakeDify) -> None:
    access = token(fake, client_id="svc", client_secret="s3cret:/+").json()["access_token"]
    assert requests.get(f"{fake.url}/info", headers=bearer(access), timeout=10).status_code == 200
    fake.revoke_tokens()
    resp = requests.get(f"{fake.url}/info", headers=bearer(access), timeout=10)
    assert resp.status_code == 401 and resp.json()["message"] == "Access token is invalid"
    assert fake.requests[-1].auth == "invalid"
    fresh = token(fake, client_id="svc", client_secret="s3cret:/+").json()["access_token"]
    assert requests.get(f"{fake.url}/info", headers=bearer(fresh), timeout=10).status_code == 200
    # App keys are not affected by revocation.
    assert requests.get(f"{fake.url}/info", headers=bearer(fake.app().key), timeout=10).status_code == 200


def test_token_expiry() -> None:
    with FakeDify(token_ttl=1) as fake:
        fake.add_oauth_client("c", "s")
        body = token(fake, client_id="c", client_secret="s").json()
        assert body["expires_in"] == 1
        assert (
            requests.get(f"{fake.url}/info", headers=bearer(body["access_token"]), timeout=10).status_code
            == 200
        )
        time.sleep(1.2)
        assert (
            requests.get(f"{fake.url}/info", headers=bearer(body["access_token"]), timeout=10).status_code
            == 401
        )


def test_no_ttl_omits_expires_in() -> None:
    with FakeDify(token_ttl=None) as fake:
        fake.add_oauth_client("c", "s")
        body = token(fake, client_id="c", client_secret="s").json()
    assert "expires_in" not in body and body["token_type"] == "Bearer"


def test_get_on_token_endpoint(fake: FakeDify) -> None:
    assert requests.get(fake.token_url, timeout=10).status_code == 405
