"""The answers table as an outlet Asset: event with the summary in ``extra``, consumer DAG queued."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from airflow.sdk import Asset

from airflow_dify.operators.dify import DifyBatchOperator
from airflow_dify.operators.lineage import dify_answers_asset
from airflow_dify.testing import FakeDify
from tests.airflow_run import load_dag, write_dag, xcom
from tests.sql_fixtures import SqlDb, unique_table

CONSUMER_TEMPLATE = """\
import datetime as dt

from airflow.sdk import DAG, Asset
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(
    {dag_id!r},
    schedule=[Asset({uri!r})],
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
) as dag:
    EmptyOperator(task_id="report")
"""


@pytest.fixture
def dify_env(fake_dify: FakeDify, dify_conn) -> FakeDify:
    dify_conn(app_mode="chat")
    return fake_dify


def _operator(**kwargs: object) -> DifyBatchOperator:
    return DifyBatchOperator(task_id="batch", sql_conn_id="sql_test", dify_conn_id="dify_test", **kwargs)


@pytest.mark.usefixtures("airflow_db")
def test_run_emits_asset_event_with_summary_and_queues_the_consumer_dag(sql_db: SqlDb, dify_env) -> None:
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    table = unique_table()
    sql_db.create_prompts(table, [(i, f"question {i}") for i in range(1, 13)])
    # The name is the URI as written; Airflow normalises the uri ("sqlite:///x" -> "sqlite:/x"), and a
    # consumer writing Asset("<same string>") gets the same name and uri, so it matches.
    uri = dify_answers_asset("sql_test", table).name
    if sql_db.kind == "sqlite":
        assert uri == f"sqlite://{sql_db.sqlite_path}/{table}"
    elif sql_db.kind == "mysql":  # the MySQL provider's form: no schema level
        assert uri == f"mysql://127.0.0.1:3306/test/{table}"
    else:
        assert uri == f"postgres://127.0.0.1:5432/test/public/{table}"
    consumer_id = f"cost_report_{table}"
    consumer = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{consumer_id}.py"
    consumer.write_text(CONSUMER_TEMPLATE.format(dag_id=consumer_id, uri=uri))
    try:
        dag = load_dag(
            write_dag(
                f"assets_{table}",
                {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "chunk_size": 5},
            )
        )
        assert [o.name for o in dag.get_task("batch").outlets] == [uri]
        dr = dag.test()
        summary = xcom(dag.dag_id, dr.run_id, key="summary")
    finally:
        sql_db.drop(table)
        consumer.unlink()
    assert str(dr.state) == "success"
    assert summary["succeeded"] == 12
    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.name == uri)).one()
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)).all()
        assert len(events) == 1
        assert events[0].source_dag_id == dag.dag_id and events[0].source_run_id == dr.run_id
        assert events[0].extra == summary  # the whole summary, prices as decimal strings
        queued = session.scalars(
            select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset.id)
        ).all()
        assert queued == [consumer_id]
        # The scheduler's own question: which DAGs are due for an asset-triggered run?
        _, triggered = DagModel.dags_needing_dagruns(session)
        assert consumer_id in triggered


def test_explicit_outlets_win_and_empty_opts_out(sqlite_db: SqlDb) -> None:
    mine = Asset("s3://bucket/answers.parquet")
    assert _operator(table="prompts", outlets=[mine]).outlets == [mine]
    assert _operator(table="prompts", outlets=[]).outlets == []
    derived = _operator(table="prompts").outlets
    assert [a.name for a in derived] == [f"sqlite://{sqlite_db.sqlite_path}/prompts"]


def test_templated_table_declares_no_outlet_and_looks_nothing_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SQL_TEST", raising=False)
    op = _operator(table="prompts_{{ ds_nodash }}")
    assert op.outlets == []


def test_unresolvable_connection_still_parses_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_SQL", raising=False)
    with caplog.at_level(logging.WARNING, logger="airflow_dify.operators.lineage"):
        op = DifyBatchOperator(task_id="batch", sql_conn_id="no_such_sql", table="prompts")
    assert op.outlets == []
    assert "outlets=[...]" in caplog.text
