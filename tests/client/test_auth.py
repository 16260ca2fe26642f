"""API key normalisation: what users paste becomes a bare key, or a clear secret-free error."""

from __future__ import annotations

import logging

import pytest

from airflow_dify.client import ApiKeyAuth, DifyConfigError, normalize_api_key

KEY = "app-AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.mark.parametrize(
    "raw",
    [
        KEY,
        f"  {KEY} \n",
        f"Bearer {KEY}",
        f"bearer   {KEY}",
        f"BEARER {KEY}\r\n",
        f'"{KEY}"',
        f"'{KEY}'",
        f'"Bearer {KEY}"',
        f"Bearer '{KEY}'",
        f"\u201c{KEY}\u201d",
        f"\t{KEY}\t",
    ],
)
def test_normalize_accepts_pasted_forms(raw: str) -> None:
    assert normalize_api_key(raw) == KEY


@pytest.mark.parametrize("raw", [None, "", "   ", "\n", "Bearer ", '""'])
def test_missing_key(raw: str | None) -> None:
    with pytest.raises(DifyConfigError, match="no API key"):
        normalize_api_key(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("app-AbCdEfGh IjKlMnOpQrStUvWx", "whitespace"),
        ("app-AbCdEfGh\nIjKlMnOpQrStUvWx", "whitespace"),
        ("app-AbCdEfGh\x00IjKlMnOpQrStUvWx", "control or non-ASCII"),
        ("app-AbCdEfGh\u00e9IjKlMnOpQrStUvWx", "control or non-ASCII"),
        ("app-Ab", "too short"),
    ],
)
def test_rejections_show_at_most_four_characters(raw: str, reason: str) -> None:
    with pytest.raises(DifyConfigError, match=reason) as info:
        normalize_api_key(raw)
    text = str(info.value) + repr(info.value)
    # Only a short prefix may appear, never the rest of the key.
    assert "app-A" not in text
    assert "IjKl" not in text and "MnOp" not in text


def test_unusual_format_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_dify.client")
    odd = "sk-0123456789abcdefXYZ"
    assert normalize_api_key(odd) == odd
    normalize_api_key(odd)
    warnings = [r for r in caplog.records if "does not look like" in r.getMessage()]
    assert len(warnings) == 1
    assert odd not in caplog.text and "0123456789" not in caplog.text


def test_dataset_key_warning_names_the_problem(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_dify.client")
    normalize_api_key("ds-ZyXwVuTsRqPoNmLkJiHgFeDc")
    assert "knowledge-base (dataset) key" in caplog.text
    assert "ZyXwVu" not in caplog.text


def test_valid_app_key_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_dify.client")
    normalize_api_key(KEY)
    assert caplog.records == []


def test_api_key_auth_header_and_repr() -> None:
    auth = ApiKeyAuth(f" Bearer {KEY}\n")
    assert auth.header() == f"Bearer {KEY}"
    assert auth.on_unauthorized(auth.header()) is False
    assert auth.secrets() == [KEY]
    assert KEY not in repr(auth) and KEY not in str(auth)
    assert "AbCd" not in repr(auth)
