"""Answers as typed columns, exact workflow cost and pinned versions: real dag.test() runs against
FakeDify on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from airflow_dify.report.cost import CostReport
from airflow_dify.testing import FakeApp, FakeDify
from tests.airflow_run import run_batch_dag
from tests.report.report_helpers import connector
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

V2 = "5b1d7c1e-8a55-4c1c-9a43-3f0c1f2f0b02"
CATEGORIES = ["billing", "bug", "other"]
WORKFLOW_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": CATEGORIES},
        "confidence": {"type": "number"},
        "summary": {"type": "string"},
        "tags": {"type": "array"},
    },
    "required": ["category", "confidence"],
}
CHAT_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": CATEGORIES},
        "priority": {"type": "integer"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array"},
    },
    "required": ["category", "priority"],
}
#: Expected declared types, written out per engine (not computed by the code under test).
DECLARED = {
    "sqlite": {
        "string": "text",
        "integer": "bigint",
        "number": "numeric",
        "boolean": "boolean",
        "array": "text",
    },
    "postgres": {
        "string": "text",
        "integer": "bigint",
        "number": "numeric",
        "boolean": "boolean",
        "array": "jsonb",
    },
    # MariaDB reports JSON as longtext (it is an alias with a JSON_VALID check).
    "mysql": {
        "string": "longtext",
        "integer": "bigint",
        "number": "double",
        "boolean": "tinyint",
        "array": "longtext",
    },
}


def ticket(i: int) -> str:
    if i == 5:
        return f"Ticket {i}: WRONG type please"
    if i == 9:
        return f"Ticket {i}: MISSING category"
    return f"Ticket {i}: my invoice is off"


def classify(text: str, fixed: bool = False) -> dict[str, Any]:
    """What the app 'decides' for a ticket; rows 5 and 9 answer badly unless ``fixed``."""
    n = int(text.split()[1].rstrip(":"))
    out: dict[str, Any] = {
        "category": CATEGORIES[n % 3],
        "confidence": round(0.5 + n / 100, 2),
        "priority": n % 4,
        "urgent": n % 2 == 0,
        "tags": [f"t{n}", "support"],
        "summary": f"summary of {n}",
    }
    if not fixed and "WRONG" in text:
        out["confidence"] = out["priority"] = "high"
    if not fixed and "MISSING" in text:
        del out["category"]
    return out


class Script:
    """Flips the fake apps from bad answers on rows 5 and 9 to good ones."""

    fixed = False

    def workflow(self, inputs: dict[str, Any]) -> dict[str, Any]:
        d = classify(inputs["ticket"], self.fixed)
        return {k: d[k] for k in ("category", "confidence", "summary", "tags") if k in d}

    def chat(self, query: str | None, inputs: dict[str, Any]) -> str:
        d = classify(query or "", self.fixed)
        body = json.dumps({k: d[k] for k in ("category", "priority", "urgent", "tags") if k in d})
        return f"Here you go:\n```json\n{body}\n```"


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def fake(script: Script, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDify]:
    apps = [
        FakeApp("workflow", name="Ticket triage", inputs=["ticket"], outputs=script.workflow, versions=[V2]),
        FakeApp("chat", name="Ticket triage chat", answer=script.chat),
        FakeApp("advanced-chat", name="Sandbox chatflow", pinned_runs=False),
    ]
    with FakeDify(apps) as fake:
        yield fake


def use_app(fake: FakeDify, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "dify", "host": fake.url, "password": fake.app(mode).key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))


def declared_types(sql_db: SqlDb, table: str) -> dict[str, str]:
    if sql_db.kind == "sqlite":
        return {r[1]: r[2].lower() for r in sql_db.query(f"PRAGMA table_info({table})")}
    col = "data_type"
    schema = "current_schema()" if sql_db.kind == "postgres" else "DATABASE()"
    rows = sql_db.query(
        f"SELECT column_name, {col} FROM information_schema.columns "
        f"WHERE table_schema = {schema} AND table_name = {sql_db.ph}",
        (table,),
    )
    return {r[0]: str(r[1]).lower() for r in rows}


def as_list(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def generation_calls(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path != "/files/upload"]


@pytest.mark.parametrize("mode", ["workflow", "chat"])
def test_four_typed_columns_bad_answers_fail_their_row_and_a_rerun_asks_only_those(
    mode: str, sql_db: SqlDb, fake: FakeDify, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, mode, monkeypatch)
    schema = WORKFLOW_SCHEMA if mode == "workflow" else CHAT_SCHEMA
    table = unique_table("tickets")
    sql_db.create_prompts(table, [(i, ticket(i)) for i in range(1, 13)])
    kwargs: dict[str, Any] = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "output_schema": schema,
        "max_failed_ratio": 0.5,
        "chunk_size": 5,
    }
    if mode == "workflow":
        kwargs["input_columns"] = {"ticket": "prompt"}
    fields = list(schema["properties"])
    cols = ", ".join(["id", "answer", "status", "error", "total_tokens", "total_price", *fields])
    try:
        state, summary = run_batch_dag(f"typed_{mode}_{sql_db.kind}", **kwargs)
        assert state == "success" and summary["succeeded"] == 10 and summary["failed"] == 2, summary
        types = declared_types(sql_db, table)
        first = {r["id"]: r for r in sql_db.records(f"SELECT {cols} FROM {table}")}

        script.fixed = True
        fake.reset()
        state, summary = run_batch_dag(f"typed_{mode}_{sql_db.kind}_again", **kwargs)
        assert state == "success" and summary["succeeded"] == 2 and summary["processed"] == 2
        assert len(generation_calls(fake)) == 2  # only the two failed rows were asked again
        after = {r["id"]: r for r in sql_db.records(f"SELECT {cols} FROM {table}")}
    finally:
        sql_db.drop(table)

    for name, prop in schema["properties"].items():
        expected = DECLARED[sql_db.kind][prop["type"]]
        assert types[name].startswith(expected), (name, types[name])

    wrong = "confidence" if mode == "workflow" else "priority"
    bad, missing = first[5], first[9]
    assert bad["status"] == "failed" and f"output '{wrong}' must be" in bad["error"], bad["error"]
    assert missing["status"] == "failed" and "output 'category' is required" in missing["error"]
    for row in (bad, missing):
        assert row["answer"] and row["total_tokens"] and row["total_price"] is not None  # paid: kept
        assert all(row[f] is None for f in fields)
    assert '"high"' in bad["answer"]  # the raw answer, as the app gave it

    for i, row in after.items():
        want = classify(ticket(i), fixed=True)
        assert row["status"] == "succeeded" and row["error"] is None, (i, row["error"])
        assert row["category"] == want["category"]
        assert as_list(row["tags"]) == want["tags"]
        if mode == "workflow":
            assert Decimal(str(row["confidence"])) == Decimal(str(want["confidence"]))
            assert row["summary"] == want["summary"]
        else:
            assert row["priority"] == want["priority"] and isinstance(row["priority"], int)
            assert bool(row["urgent"]) is want["urgent"]
    for i in set(after) - {5, 9}:
        assert after[i] == first[i], i  # not asked again, not rewritten


def test_two_hundred_workflow_rows_cost_exactly_what_was_billed(
    sql_db: SqlDb, fake: FakeDify, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    script.fixed = True
    use_app(fake, "workflow", monkeypatch)
    table = unique_table("wf_cost")
    sql_db.create_prompts(table, [(i, ticket(i)) for i in range(1, 201)])
    kwargs = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "input_columns": {"ticket": "prompt"},
        "output_columns": {"category": "category"},
        "max_concurrency": 8,
    }
    try:
        state, summary = run_batch_dag(f"wf_cost_{sql_db.kind}", **kwargs)
        assert state == "success" and summary["succeeded"] == 200
        rows = sql_db.records(
            f"SELECT id, prompt_tokens, completion_tokens, total_tokens, total_price, currency FROM {table}"
        )
        (stored_sum,) = sql_db.query(f"SELECT SUM(total_price) FROM {table}")[0]
        with CostReport(connector(sql_db), dialect=sql_db.kind) as report:
            daily = report.aggregate(table, app="ticket-triage")
    finally:
        sql_db.drop(table)
    billed = fake.billed_total("USD")
    assert len(fake.billing) == 200 and billed > 0
    # Summed in SQL over the stored values: equal to the fake's invoice to the last decimal. SQLite
    # has no decimal type: it stores the exact text but SUM() adds binary floats, so there the
    # sum is exact once rounded to the column's 10 places (the Python and report sums are exact).
    if sql_db.kind == "sqlite":
        assert Decimal(str(stored_sum)).quantize(Decimal("1e-10")) == billed
    else:
        assert Decimal(str(stored_sum)) == billed
    assert sum((Decimal(str(r["total_price"])) for r in rows), Decimal(0)) == billed
    assert all(r["currency"] == "USD" and r["prompt_tokens"] and r["completion_tokens"] for r in rows)
    assert sum(r["total_tokens"] for r in rows) == sum(b.total_tokens for b in fake.billing)
    assert Decimal(summary["total_price"]) == billed
    # The cost report sees the workflow spend (it had none before: no price on workflow rows).
    assert sum((d.total_price for d in daily), Decimal(0)) == billed
    assert sum(d.row_count for d in daily) == 200


def test_switching_workflow_id_re_answers_every_row_once_and_the_same_id_none(
    sql_db: SqlDb, fake: FakeDify, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    script.fixed = True
    use_app(fake, "workflow", monkeypatch)
    app = fake.app("workflow")
    table = unique_table("wf_pin")
    sql_db.create_prompts(table, [(i, ticket(i)) for i in range(1, 21)])
    base = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "input_columns": {"ticket": "prompt"},
        "redo": "changed",
    }

    def run(name: str, **extra: Any) -> tuple[list, dict[int, Any]]:
        fake.reset()
        state, summary = run_batch_dag(f"wf_pin_{name}_{sql_db.kind}", **base, **extra)
        assert state == "success", summary
        stored = dict(sql_db.query(f"SELECT id, workflow_id FROM {table}"))
        return generation_calls(fake), stored

    try:
        calls, stored = run("default")
        assert len(calls) == 20 and {c.path for c in calls} == {"/workflows/run"}
        assert set(stored.values()) == {app.workflow_id}  # the version that ran, from Dify's answer

        calls, stored = run("v2", workflow_id=V2)
        assert len(calls) == 20 and {c.path for c in calls} == {f"/workflows/{V2}/run"}
        assert set(stored.values()) == {V2}
        assert sorted(c.body["inputs"]["ticket"] for c in calls) == sorted(ticket(i) for i in range(1, 21))

        calls, stored = run("v2_again", workflow_id=V2)
        assert calls == [] and set(stored.values()) == {V2}

        calls, stored = run("back", workflow_id=app.workflow_id)
        assert len(calls) == 20 and set(stored.values()) == {app.workflow_id}
    finally:
        sql_db.drop(table)


@pytest.mark.parametrize(
    ("mode", "workflow_id", "code"),
    [
        ("advanced-chat", V2, "workflow_version_execution_not_allowed"),  # Dify Cloud's sandbox plan
        ("workflow", "0f0f0f0f-0000-4000-8000-000000000000", "workflow_id_rejected"),  # no such version
    ],
)
def test_a_refused_workflow_version_stops_the_run_with_rows_left_pending(
    mode: str, workflow_id: str, code: str, sqlite_db: SqlDb, fake: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, mode, monkeypatch)
    table = unique_table("wf_refused")
    sqlite_db.create_prompts(table, [(i, ticket(i)) for i in range(1, 201)])
    kwargs: dict[str, Any] = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "workflow_id": workflow_id,
        "max_concurrency": 4,
    }
    if mode == "workflow":
        kwargs["input_columns"] = {"ticket": "prompt"}
    state, summary = run_batch_dag(f"wf_refused_{mode.replace('-', '_')}", **kwargs)
    assert state == "failed"
    assert summary["stopped"] == "breaker" and code in summary["stopped_reason"], summary
    calls = len(generation_calls(fake))
    assert calls <= 12, calls  # the breaker stopped it: not 200 paid-for refusals
    pending = sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status IS NULL")[0][0]
    assert pending == 200  # nothing was answered, so nothing is marked
    assert not fake.billing
