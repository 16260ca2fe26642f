"""Task-level UX of DifyBatchOperator: documented arguments, renderers, colour, repr."""

from __future__ import annotations

import inspect
import re

from airflow_dify.operators.dify import DifyBatchOperator


def test_every_argument_is_documented_with_param() -> None:
    documented = set(re.findall(r":param (\w+):", DifyBatchOperator.__doc__ or ""))
    arguments = set(inspect.signature(DifyBatchOperator.__init__).parameters) - {"self", "kwargs"}
    assert arguments - documented == set(), "undocumented arguments"
    assert documented - arguments == set(), "documented arguments that do not exist"


def test_templated_fields_render_as_sql_and_json() -> None:
    renderers = DifyBatchOperator.template_fields_renderers
    assert renderers["where"] == "sql" and renderers["input_columns"] == "json"
    assert set(renderers) <= set(DifyBatchOperator.template_fields)
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", DifyBatchOperator.ui_color)


def test_repr_names_task_table_and_connections() -> None:
    op = DifyBatchOperator(
        task_id="answer", table="crm.tickets", sql_conn_id="warehouse", dify_conn_id="dify_prod", outlets=[]
    )
    assert repr(op) == "<DifyBatchOperator 'answer': warehouse:crm.tickets -> dify_prod>"
