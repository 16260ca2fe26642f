"""json_codec must give json.dumps' text exactly: stored input hashes depend on it."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import pytest

from airflow_dify.batch.rows import _json_default, input_hash
from airflow_dify.json_codec import encoder, loads

VALUES: list[Any] = [
    {"b": 1, "a": [1, 2.5, -0.0, 1e-7, 1e22, 10**30], "c": None, "d": True, "e": False},
    {"text": 'é ü 漢字 \u2028 \x00 \t " \\ / 🙂', "emoji": "🙂", "nested": {"z": {"y": []}}},
    {"nan": math.nan, "inf": math.inf, "ninf": -math.inf},
    {"decimal": Decimal("0.0000270"), "when": dt.date(2026, 12, 3)},
    {3: "int key", 2.5: "float key", None: "null key", True: "bool key"},
    "plain string",
    12345,
    [],
    {},
    {"lone surrogate": "\ud800"},
]
SETTINGS: list[dict[str, Any]] = [
    {},
    {"allow_nan": False},
    {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False, "default": _json_default},
    {"sort_keys": True, "ensure_ascii": True, "default": str},
]


def _dumps(value: Any, settings: dict[str, Any]) -> str | type[BaseException]:
    try:
        return json.dumps(value, **settings)
    except (TypeError, ValueError) as exc:
        return type(exc)


def _encode(value: Any, settings: dict[str, Any]) -> str | type[BaseException]:
    try:
        return encoder(**settings)(value)
    except (TypeError, ValueError) as exc:
        return type(exc)


@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "no-nan", "canonical", "ascii-sorted"])
@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_encoder_gives_json_dumps_text_or_error(value: Any, settings: dict[str, Any]) -> None:
    assert _encode(value, settings) == _dumps(value, settings)


def test_an_unserialisable_value_names_its_type_like_json_dumps() -> None:
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        encoder()({"x": object()})


def test_input_hash_is_unchanged_for_the_same_request() -> None:
    """The hash of a known request, computed the way every earlier release computed it."""
    app, query, inputs = {"family": "chat", "name": "bench"}, "Grüße 🙂", {"n": Decimal("1.50"), "f": 0.1}
    payload = json.dumps(
        {"app": app, "query": query, "inputs": inputs},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
        default=_json_default,
    )
    import hashlib

    assert input_hash(app, query, inputs) == hashlib.sha256(payload.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "b": "\xc3\xa9"}',
        '\ufeff{"bom": true}'.encode(),  # UTF-8 with a BOM
        '{"utf16": "x"}'.encode("utf-16"),
        '{"utf16le": "x"}'.encode("utf-16-le"),
        b"[1, 2]",
        b'{"nan": NaN}',
    ],
)
def test_loads_reads_what_json_loads_reads(data: bytes) -> None:
    expected = json.loads(data)
    got = loads(data)
    assert got == expected or (math.isnan(got["nan"]) and math.isnan(expected["nan"]))


@pytest.mark.parametrize("data", [b'{"a": 1', b"", b"\xff\xfe\xfa", b'{"a": 1} trailing'])
def test_loads_refuses_what_json_loads_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(ValueError):
        loads(data)


@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "no-nan", "canonical", "ascii-sorted"])
def test_without_the_c_accelerator_the_text_is_the_same(
    settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interpreter without _json (a fault this one cannot produce): the pure-Python encoder."""
    import airflow_dify.json_codec as codec

    monkeypatch.setattr(codec, "c_make_encoder", None)
    for value in VALUES:
        try:
            got: Any = codec.encoder(**settings)(value)
        except (TypeError, ValueError) as exc:
            got = type(exc)
        assert got == _dumps(value, settings)
