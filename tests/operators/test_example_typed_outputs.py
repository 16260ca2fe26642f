"""dags/example_dify_typed_outputs.py through dag.test() on SQLite against a FakeDify chat app
that answers JSON (one answer in 25 unusable)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.testing import FakeApp, FakeDify
from tests.airflow_run import load_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

EXAMPLE = Path(__file__).resolve().parents[2] / "dags" / "example_dify_typed_outputs.py"


def triage(query: str | None, inputs: dict[str, Any]) -> str:
    """A model that mostly follows the prompt: 'refund' tickets get priority "high" (wrong type)."""
    text = query or ""
    category = "billing" if "invoice" in text.lower() or "refund" in text.lower() else "bug"
    priority: Any = "high" if "refund" in text.lower() else (1 if category == "bug" else 3)
    body = {"category": category, "priority": priority, "needs_human": category == "bug"}
    body |= {"summary": text.splitlines()[-1][:40], "tags": [category, "ticket"]}
    return json.dumps(body)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeDify, Path]]:
    db = tmp_path / "support.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE support_tickets (id INTEGER PRIMARY KEY, subject TEXT, body TEXT)")
        rows = [
            (i, "Refund request" if i % 25 == 0 else "Invoice wrong", f"Ticket body {i}")
            for i in range(1, 51)
        ]
        conn.executemany("INSERT INTO support_tickets VALUES (?, ?, ?)", rows)
    with FakeDify([FakeApp("chat", name="Ticket triage", answer=triage)]) as fake:
        conn_dify = {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key}
        monkeypatch.setenv("AIRFLOW_CONN_DIFY_DEFAULT", json.dumps(conn_dify))
        monkeypatch.setenv("AIRFLOW_CONN_SUPPORT_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
        yield fake, db


def test_the_typed_outputs_example_fills_typed_columns(setup: tuple[FakeDify, Path]) -> None:
    fake, db = setup
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = load_dag(Path(shutil.copy(EXAMPLE, dags / EXAMPLE.name)))
    dr = dag.test()
    assert str(dr.state) == "success"  # 2 of 50 unusable: under max_failed_ratio=0.05
    with sqlite3.connect(db) as conn:
        types = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(support_tickets_triage)")}
        rows = conn.execute(
            "SELECT id, status, error, answer, category, priority, needs_human, summary, tags "
            "FROM support_tickets_triage ORDER BY id"
        ).fetchall()
        source_cols = [r[1] for r in conn.execute("PRAGMA table_info(support_tickets)")]
    assert source_cols == ["id", "subject", "body"]  # the source is only read
    assert (types["category"], types["priority"], types["needs_human"], types["tags"]) == (
        "TEXT",
        "BIGINT",
        "BOOLEAN",
        "TEXT",
    )
    assert len(rows) == 50 and fake.calls() == 50
    for row_id, status, error, answer, category, priority, needs_human, summary, tags in rows:
        if row_id % 25 == 0:
            assert status == "failed" and "output 'priority' must be integer" in error
            assert json.loads(answer)["priority"] == "high" and category is None
        else:
            assert status == "succeeded" and category == "billing" and priority == 3 and needs_human == 0
            assert json.loads(tags) == ["billing", "ticket"] and summary.startswith("Body: Ticket body")
