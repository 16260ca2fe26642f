"""OpenLineage facets and table naming: with the openlineage provider, and with it unimportable.

The end-to-end cases run ``dag.test()`` in a subprocess: the OpenLineage listener is a plugin
loaded once per process, so only a fresh interpreter can have it on (file transport) or make the
provider unimportable from the first import on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_dify.operators.dify import DifyBatchOperator
from airflow_dify.operators.lineage import RUN_FACET_NAME, operator_lineage, table_ref
from airflow_dify.testing import FakeDify
from tests.airflow_run import write_dag
from tests.sql_fixtures import SqlDb, unique_table

REPO = Path(__file__).resolve().parents[2]
SUMMARY = {"rows_selected": 3, "processed": 3, "succeeded": 3, "failed": 0, "total_price": "0.0012"}


def conn(**fields: object) -> SimpleNamespace:
    base = {"conn_type": None, "host": None, "port": None, "schema": None, "extra_dejson": {}}
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(
    ("connection", "table", "uri", "namespace", "name"),
    [
        (
            conn(conn_type="postgres", host="db.internal", port=6543, schema="analytics"),
            "llm.prompts",
            "postgres://db.internal:6543/analytics/llm/prompts",
            "postgres://db.internal:6543",
            "analytics.llm.prompts",
        ),
        (
            conn(conn_type="postgresql", host="db.internal", schema="analytics"),
            "prompts",
            "postgres://db.internal:5432/analytics/public/prompts",
            "postgres://db.internal:5432",
            "analytics.public.prompts",
        ),
        (
            conn(conn_type="sqlite", host="/data/answers.db"),
            "prompts",
            "sqlite:///data/answers.db/prompts",
            "sqlite:///data/answers.db",
            "prompts",
        ),
        (
            conn(conn_type="mysql", host="my", schema="shop"),
            "prompts",
            "mysql://my:3306/shop/prompts",
            "mysql://my:3306",
            "shop.prompts",
        ),
    ],
)
def test_table_names_for_assets_and_openlineage(connection, table, uri, namespace, name) -> None:
    ref = table_ref(connection, table)
    assert (ref.asset_uri, ref.ol_namespace, ref.ol_name) == (uri, namespace, name)


def test_postgres_uri_agrees_with_the_postgres_providers_openlineage_converter() -> None:
    from airflow.providers.postgres.assets.postgres import convert_asset_to_openlineage
    from airflow.sdk import Asset

    ref = table_ref(conn(conn_type="postgres", host="h", port=5432, schema="d"), "s.t")
    dataset = convert_asset_to_openlineage(Asset(ref.asset_uri), None)
    assert (dataset.namespace, dataset.name) == (ref.ol_namespace, ref.ol_name)


def test_operator_lineage_has_table_in_and_out_and_summary_facet() -> None:
    ref = table_ref(conn(conn_type="postgres", host="h", schema="d"), "prompts")
    lineage = operator_lineage(ref, SUMMARY)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("postgres://h:5432", "d.public.prompts")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("postgres://h:5432", "d.public.prompts")]
    assert lineage.outputs[0].facets["outputStatistics"].rowCount == 3
    facet = lineage.run_facets[RUN_FACET_NAME]
    assert facet.summary == SUMMARY
    from openlineage.client.serde import Serde

    assert json.loads(Serde.to_json(facet))["summary"]["total_price"] == "0.0012"


def test_default_extractor_calls_the_operator(sqlite_db: SqlDb) -> None:
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    op = DifyBatchOperator(task_id="batch", sql_conn_id="sql_test", table="prompts")
    lineage = DefaultExtractor(op).extract_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        (f"sqlite://{sqlite_db.sqlite_path}", "prompts")
    ]


def test_without_openlineage_the_facets_are_none(sqlite_db: SqlDb, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith(("airflow.providers.openlineage", "openlineage")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", None)
    op = DifyBatchOperator(task_id="batch", sql_conn_id="sql_test", table="prompts")
    assert op.get_openlineage_facets_on_complete(None) is None


RUNNER = """
import json, sys
from pathlib import Path
if {block!r}:
    # As if the provider were not installed. Its entry point is still registered with this venv,
    # so keep the metadata module importable for provider discovery; everything else fails.
    import airflow.providers.openlineage.get_provider_info  # noqa: F401
    sys.modules["airflow.providers.openlineage"] = None
    sys.modules["openlineage"] = None
from tests.airflow_run import load_dag, xcom
dag = load_dag(Path({dag_path!r}))
dr = dag.test()
from airflow_dify.operators.lineage import operator_lineage, table_ref
from airflow.sdk import BaseHook
ref = table_ref(BaseHook.get_connection("sql_test"), "t")
print("RESULT " + json.dumps({{
    "state": str(dr.state),
    "summary": xcom(dag.dag_id, dr.run_id, key="summary"),
    "lineage": operator_lineage(ref, {{}}) is not None,
}}))
"""


def run_in_subprocess(dag_path: Path, env: dict[str, str], block: bool) -> dict:
    script = RUNNER.format(block=block, dag_path=str(dag_path))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture
def batch_dag(sqlite_db: SqlDb, fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch, airflow_db):
    dify = {"conn_type": "dify", "host": fake_dify.url, "password": fake_dify.app("chat").key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(dify))
    table = unique_table()
    sqlite_db.create_prompts(table, [(1, "a"), (2, "b"), (3, "c")])
    kwargs = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "app_mode": "chat"}
    return write_dag(f"lineage_{table}", kwargs), table


def test_openlineage_complete_event_from_a_real_run(batch_dag, sqlite_db: SqlDb, tmp_path: Path) -> None:
    dag_path, table = batch_dag
    events_file = tmp_path / "ol.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "dify-tests",
    }
    result = run_in_subprocess(dag_path, env, block=False)
    assert result["lineage"] is True
    assert result["state"] == "success" and result["summary"]["succeeded"] == 3
    deadline = time.monotonic() + 30  # the listener may emit from a forked child
    complete = []
    while time.monotonic() < deadline and not complete:
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        complete = [
            e
            for e in map(json.loads, lines)
            if e.get("eventType") == "COMPLETE" and e["job"]["name"].endswith(".batch")
        ]
        if not complete:
            time.sleep(0.5)
    assert complete, "no COMPLETE event for the batch task"
    event = complete[-1]
    expected = [(f"sqlite://{sqlite_db.sqlite_path}", table)]
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == expected
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == expected
    facet = event["run"]["facets"][RUN_FACET_NAME]
    assert facet["summary"]["succeeded"] == 3
    assert facet["summary"]["total_price"] == result["summary"]["total_price"]


def test_operator_runs_when_openlineage_cannot_be_imported(batch_dag, sqlite_db: SqlDb) -> None:
    dag_path, table = batch_dag
    result = run_in_subprocess(dag_path, dict(os.environ), block=True)
    assert result["lineage"] is False  # the block took effect
    assert result["state"] == "success" and result["summary"]["succeeded"] == 3
    statuses = sqlite_db.query(f"SELECT status FROM {table}")
    assert [s for (s,) in statuses] == ["succeeded"] * 3
