"""frozen.build gives the instance cls(**values) gives, and refuses what the constructor refuses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from airflow_dify.client.models import DifyResult, Usage
from airflow_dify.frozen import build
from airflow_dify.outcome import RowOutcome


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Usage, {}),
        (Usage, {"total_tokens": 19, "total_price": Decimal("0.0000270"), "currency": "USD"}),
        (DifyResult, {"mode": "chat", "answer": "hi", "usage": Usage(total_tokens=3), "citations": ()}),
        (
            RowOutcome,
            {
                "row_id": 7,
                "status": "succeeded",
                "answer": "a",
                "answered_at": dt.datetime.now(dt.timezone.utc),
            },
        ),
    ],
)
def test_build_equals_the_constructor_and_stays_frozen(cls: type, values: dict[str, object]) -> None:
    built, made = build(cls, values), cls(**values)
    assert built == made and type(built) is cls and vars(built) == vars(made)
    assert hash(built) == hash(made)
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, name, None)


def test_build_refuses_an_unknown_or_missing_field() -> None:
    with pytest.raises(TypeError, match=r"unknown fields \['answr'\]"):
        build(RowOutcome, {"row_id": 1, "status": "failed", "answr": "typo"})
    with pytest.raises(TypeError, match=r"missing fields \['status'\]"):
        build(RowOutcome, {"row_id": 1})


def test_a_default_factory_field_must_be_given_so_no_value_is_shared() -> None:
    with pytest.raises(TypeError, match=r"missing fields \['usage'\]"):
        build(DifyResult, {"mode": "chat", "answer": None})
