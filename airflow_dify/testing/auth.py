"""Resolving ``Authorization: Bearer`` to an app, with Dify's messages for each way it fails."""

from __future__ import annotations

from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.replies import Reject
from airflow_dify.testing.state import FakeState

_MUST = "Authorization header must be provided and start with 'Bearer'"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}


def authenticate(state: FakeState, header: str | None) -> tuple[str, FakeApp]:
    """(auth kind, app) like Dify's ``validate_and_get_api_token``; the kind is ``key`` or ``token``."""
    if header is None:
        raise Reject(401, "unauthorized", _MUST, _CHALLENGE)
    parts = header.split(None, 1)
    if " " not in header or len(parts) != 2:
        raise Reject(401, "unauthorized", _MUST, _CHALLENGE, auth="invalid")
    scheme, credential = parts
    if scheme.lower() != "bearer":
        raise Reject(401, "unauthorized", "Authorization scheme must be 'Bearer'", _CHALLENGE, auth="invalid")
    found = state.app_for_credential(credential)
    if found is None:
        raise Reject(401, "unauthorized", "Access token is invalid", _CHALLENGE, auth="invalid")
    kind, app = found
    if not app.api_enabled:
        raise Reject(403, "forbidden", "The app's API service has been disabled.", auth=kind, app=app)
    return kind, app
