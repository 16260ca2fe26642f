"""OutputSpec: mapping answers to typed columns, and the errors that name the field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_dify.batch.errors import RowError
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.outputs import OutputSpec
from airflow_dify.client import DifyClient
from airflow_dify.testing import FakeApp, FakeDify

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number"},
        "n": {"type": "integer"},
        "ok": {"type": "boolean"},
        "meta": {"type": "object"},
    },
    "required": ["label"],
}


def test_schema_alone_makes_one_column_per_property_with_its_type() -> None:
    spec = OutputSpec(None, SCHEMA)
    assert spec.column_kinds() == {
        "label": "string",
        "score": "number",
        "n": "integer",
        "ok": "boolean",
        "meta": "object",
    }


def test_a_fenced_json_answer_is_parsed_and_typed_exactly() -> None:
    spec = OutputSpec(None, SCHEMA)
    answer = 'Sure!\n```json\n{"label": "ham", "score": 0.1, "n": 3.0, "ok": true, "meta": {"a": 1}}\n```'
    values = spec.extract(7, None, answer)
    assert values == {"label": "ham", "score": Decimal("0.1"), "n": 3, "ok": True, "meta": {"a": 1}}
    assert isinstance(values["n"], int)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ('{"label": "eggs"}', "output 'label' is 'eggs', not one of ['spam', 'ham']"),
        ('{"label": "spam", "n": 2.5}', "output 'n' must be integer, got 2.5"),
        ('{"label": "spam", "ok": "yes"}', "output 'ok' must be boolean"),
        ('{"label": "spam", "n": true}', "output 'n' must be integer"),
        ('{"score": 1}', "output 'label' is required but missing"),
        ("I think it is spam.", "the answer is not JSON"),
        ('["spam"]', "the outputs are a list, not an object"),
    ],
)
def test_an_answer_that_does_not_fit_names_the_row_and_field(answer: str, message: str) -> None:
    with pytest.raises(RowError) as err:
        OutputSpec(None, SCHEMA).extract(42, None, answer)
    assert err.value.code == "invalid_output"
    assert message in str(err.value) and "row 42" in str(err.value)


def test_nested_paths_and_structured_output_objects() -> None:
    spec = OutputSpec({"scores.risk": "risk", "label": "label"}, None)
    assert spec.extract(1, {"label": "x", "scores": {"risk": 0.7}}, None) == {"risk": 0.7, "label": "x"}
    # An LLM node's structured output: the workflow's one output is the object itself.
    flat = OutputSpec({"label": "label"}, None)
    assert flat.extract(1, {"structured_output": {"label": "y"}}, None) == {"label": "y"}
    assert flat.extract(1, {"other": "z"}, None) == {"label": None}  # not required: NULL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_schema": {"type": "array"}}, "output_schema must be"),
        ({"output_schema": {"properties": {"x": {"type": "date"}}}}, "property 'x': type must be one of"),
        ({"output_schema": {"properties": {"x": {"type": "string"}}, "required": ["y"]}}, "['y']"),
        ({"output_columns": {"a": ""}}, "output_columns: expected output name -> column name"),
        ({"workflow_id": " "}, "workflow_id must be"),
    ],
)
def test_bad_output_settings_fail_at_parse_time(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        BatchOptions(app_mode="chat", **kwargs)
    assert message in str(err.value)


def test_the_schema_is_in_the_fingerprint() -> None:
    a = OutputSpec(None, SCHEMA).fingerprint()
    b = OutputSpec(None, {**SCHEMA, "required": []}).fingerprint()
    assert a and b and a != b and OutputSpec(None, None).fingerprint() is None


def test_a_streamed_workflow_costs_the_sum_of_its_nodes_exactly() -> None:
    app = FakeApp("workflow", inputs=["q"], outputs=lambda inputs: {"a": inputs["q"] * 40, "b": 1})
    with FakeDify([app]) as fake, DifyClient(fake.url, app.key) as client:
        results = [client.call("workflow", inputs={"q": f"text {i} "}, user="u") for i in range(30)]
        bills = {b.workflow_run_id: b for b in fake.billing}
    assert len(bills) == 30
    for result in results:
        bill = bills[result.workflow_run_id]
        assert result.usage.total_price == bill.total_price and isinstance(result.usage.total_price, Decimal)
        assert result.usage.total_tokens == bill.total_tokens and result.usage.currency == "USD"
        assert result.usage.prompt_tokens and result.usage.completion_tokens
        assert result.workflow_id == app.workflow_id
    assert sum((r.usage.total_price for r in results), Decimal(0)) == fake.billed_total()
