"""Reviews back to Dify: real dag.test() runs of DifyBatchOperator then DifyFeedbackOperator
against FakeDify (a real HTTP server) on SQLite, PostgreSQL and MySQL/MariaDB tables.

Every assertion about what was sent reads FakeDify's own record of the requests it received.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.testing import FakeDify, Fault
from airflow_dify.testing.faults import FEEDBACK_PATH
from tests.airflow_run import load_dag, run_batch_dag, xcom
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db", "dify_conn")

FEEDBACK_DAG = """\
import datetime as dt
import json

from airflow.sdk import DAG

from airflow_dify.operators.feedback import DifyFeedbackOperator

KWARGS = json.loads({kwargs!r})

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    DifyFeedbackOperator(task_id="feedback", **KWARGS)
"""
REVIEW_COLUMNS = {"review_verdict", "review_note", "feedback_sent_at", "feedback_sent", "feedback_error"}


def run_feedback_dag(dag_id: str, **kwargs: Any) -> tuple[str, dict[str, Any] | None]:
    """dag.test() a one-task feedback DAG; (task state, summary XCom). The same ``dag_id`` as the
    batch's makes the default ``user`` (``airflow-<dag_id>``) the batch's."""
    kwargs.setdefault("sql_conn_id", "sql_test")
    kwargs.setdefault("dify_conn_id", "dify_test")
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(FEEDBACK_DAG.format(dag_id=dag_id, kwargs=json.dumps(kwargs)))
    dr = load_dag(path).test()
    ti = next(t for t in dr.get_task_instances() if t.task_id == "feedback")
    return str(ti.state), xcom(dag_id, dr.run_id, key="summary", task_id="feedback")


def answer(dag_id: str, table: str, **kwargs: Any) -> None:
    kwargs = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", **kwargs}
    state, summary = run_batch_dag(dag_id, max_concurrency=8, chunk_size=16, **kwargs)
    assert state == "success" and summary is not None and summary["failed"] == 0, summary


def feedback_posts(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/feedbacks")]


def posted(fake: FakeDify) -> list[tuple[str, Any, Any, Any]]:
    """(message id, rating, user, content) of every feedback POST FakeDify received, sorted."""
    out = [
        (r.path.split("/")[2], r.body.get("rating"), r.body.get("user"), r.body.get("content"))
        for r in feedback_posts(fake)
    ]
    return sorted(out, key=lambda t: t[0])


def set_verdict(sql_db: SqlDb, table: str, row_id: int, verdict: str | None, note: str | None = None) -> None:
    sql_db.execute(
        f"UPDATE {table} SET review_verdict = ?, review_note = ? WHERE id = ?", (verdict, note, row_id)
    )


def rows_by_id(sql_db: SqlDb, table: str) -> dict[int, dict[str, Any]]:
    cols = "id, message_id, review_verdict, review_note, feedback_sent, feedback_sent_at, feedback_error"
    return {int(r["id"]): r for r in sql_db.records(f"SELECT {cols} FROM {table}")}


def registered(sql_db: SqlDb, table: str) -> set[str]:
    rows = sql_db.query("SELECT column_name FROM airflow_dify_columns WHERE table_name = ?", (table,))
    return {str(r[0]) for r in rows}


def expected(verdict: str, note: str | None, user: str, message_id: str) -> tuple[str, Any, Any, Any]:
    return (message_id, verdict, user, note)


def test_verdicts_are_sent_once_changed_ones_again_and_cleared_ones_revoked(
    sql_db: SqlDb, fake_dify: FakeDify
) -> None:
    table = unique_table()
    dag_id = f"reviews_{sql_db.kind}"
    user = f"airflow-{dag_id}"  # the batch's default user, and so the feedback's
    sql_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 41)])
    try:
        answer(dag_id, table)
        asked = {r.body["user"] for r in fake_dify.requests if r.path == "/chat-messages"}
        assert asked == {user}

        # First run: nothing reviewed yet; it creates (and registers) the review columns.
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success" and summary is not None
        assert summary["selected"] == 0 and summary["sent"] == 0 and feedback_posts(fake_dify) == []
        assert registered(sql_db, table) >= REVIEW_COLUMNS

        # Analysts review 30 of the 40 answers; every third one with a note.
        for i in range(1, 31):
            set_verdict(sql_db, table, i, "like" if i % 2 else "dislike", f"note {i}" if i % 3 == 0 else None)
        set_verdict(sql_db, table, 7, " Like ")  # typed loosely: still a like
        before = rows_by_id(sql_db, table)
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success"
        want = sorted(
            expected(
                "like" if i % 2 else "dislike",
                f"note {i}" if i % 3 == 0 else None,
                user,
                before[i]["message_id"],
            )
            for i in range(1, 31)
        )
        assert posted(fake_dify) == want
        assert len(feedback_posts(fake_dify)) == 30 and len(fake_dify.feedbacks) == 30
        assert summary == {
            "selected": 30,
            "sent": 30,
            "revoked": 0,
            "skipped_unchanged": 0,
            "not_reviewable": 0,
            "failed": 0,
            "left_pending": 0,
            "stopped": None,
            "error_codes": {},
        }
        after = rows_by_id(sql_db, table)
        for i in range(1, 41):
            reviewed = i <= 30
            assert (after[i]["feedback_sent"] is not None) is reviewed, i
            assert (after[i]["feedback_sent_at"] is not None) is reviewed, i
            assert after[i]["feedback_error"] is None, i
        assert after[1]["feedback_sent"] == "like" and after[3]["feedback_sent"].startswith("like:")
        assert fake_dify.rating(after[3]["message_id"]) == ("like", "note 3")

        # A re-run sends nothing.
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success" and feedback_posts(fake_dify) == []
        assert summary["skipped_unchanged"] == 30 and summary["sent"] == 0

        # Five changes: three verdicts flipped, one note added, one note edited.
        set_verdict(sql_db, table, 1, "dislike")
        set_verdict(sql_db, table, 2, "like")
        set_verdict(sql_db, table, 5, "dislike", "wrong year")
        set_verdict(sql_db, table, 4, "dislike", "too vague")
        set_verdict(sql_db, table, 6, "dislike", "note 6, edited")
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success"
        m = {i: after[i]["message_id"] for i in after}
        assert posted(fake_dify) == sorted(
            [
                (m[1], "dislike", user, None),
                (m[2], "like", user, None),
                (m[5], "dislike", user, "wrong year"),
                (m[4], "dislike", user, "too vague"),
                (m[6], "dislike", user, "note 6, edited"),
            ]
        )
        assert summary["sent"] == 5 and summary["skipped_unchanged"] == 25

        # A verdict cleared after it was sent: revoked once, with rating null.
        set_verdict(sql_db, table, 9, None, "note 9")
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success"
        assert [r.body for r in feedback_posts(fake_dify)] == [{"rating": None, "user": user}]
        assert feedback_posts(fake_dify)[0].path == f"/messages/{m[9]}/feedbacks"
        assert summary["revoked"] == 1 and summary["sent"] == 0
        assert fake_dify.rating(m[9]) is None
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert feedback_posts(fake_dify) == [] and summary["skipped_unchanged"] == 30

        # A message deleted in Dify: that row fails, recorded; the other change is sent.
        fake_dify.delete_message(m[11])
        set_verdict(sql_db, table, 11, "dislike")
        set_verdict(sql_db, table, 12, "like")
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success"
        assert sorted((r.path.split("/")[2], r.status) for r in feedback_posts(fake_dify)) == sorted(
            [(m[11], 404), (m[12], 200)]
        )
        assert fake_dify.feedbacks == [(m[12], "like", user, None)]
        assert summary["failed"] == 1 and summary["sent"] == 1
        assert summary["error_codes"] == {"not_found": 1}
        final = rows_by_id(sql_db, table)
        assert "Message Not Exists." in final[11]["feedback_error"]
        assert final[12]["feedback_error"] is None and final[12]["feedback_sent"] == "like"
        # Settled: not sent again until its verdict changes.
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success" and feedback_posts(fake_dify) == []
    finally:
        sql_db.drop(table)


def test_workflow_rows_are_not_reviewable(sql_db: SqlDb, fake_dify: FakeDify, dify_conn: Any) -> None:
    dify_conn("workflow")
    table = unique_table()
    dag_id = f"reviews_workflow_{sql_db.kind}"
    sql_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 11)])
    try:
        answer(dag_id, table, input_columns={"question": "prompt"})
        run_feedback_dag(dag_id, table=table)  # creates the review columns
        for i in range(1, 7):
            set_verdict(sql_db, table, i, "like", "fine")
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert state == "success" and summary is not None
        assert feedback_posts(fake_dify) == [] and fake_dify.feedbacks == []
        assert [(r.method, r.path) for r in fake_dify.requests] == [("GET", "/info")]
        assert summary["not_reviewable"] == 6 and summary["selected"] == 6 and summary["sent"] == 0
        rows = rows_by_id(sql_db, table)
        for i in range(1, 11):
            error = rows[i]["feedback_error"]
            assert (error is not None and "workflow" in error) is (i <= 6), i
            assert rows[i]["feedback_sent"] is None
        # Counted again on the next run (the verdicts are still there), still nothing sent.
        fake_dify.reset()
        state, summary = run_feedback_dag(dag_id, table=table)
        assert summary is not None and summary["not_reviewable"] == 6 and feedback_posts(fake_dify) == []
    finally:
        sql_db.drop(table)


def test_results_table_holds_the_reviews_and_where_filters(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    source, results = unique_table("src"), unique_table("res")
    dag_id = f"reviews_results_{sql_db.kind}"
    sql_db.create_prompts(
        source,
        [(i, f"Question {i}", "en" if i % 2 else "de") for i in range(1, 13)],
        columns="id INTEGER PRIMARY KEY, prompt TEXT, lang VARCHAR(8)",
    )
    try:
        answer(dag_id, source, results_table=results)
        run_feedback_dag(dag_id, table=source, results_table=results)
        source_cols = {c.lower() for c in sql_db._run(f"SELECT * FROM {source} WHERE 1=0", (), True)[1]}
        assert not (REVIEW_COLUMNS & source_cols)
        for i in range(1, 13):
            set_verdict(sql_db, results, i, "dislike")
        fake_dify.reset()
        state, summary = run_feedback_dag(
            dag_id,
            table=source,
            results_table=results,
            where="lang = ?" if sql_db.kind == "sqlite" else "lang = %s",
            where_parameters=["en"],
        )
        assert state == "success" and summary is not None
        rows = rows_by_id(sql_db, results)
        assert posted(fake_dify) == sorted(
            (rows[i]["message_id"], "dislike", f"airflow-{dag_id}", None) for i in range(1, 13, 2)
        )
        assert summary["selected"] == 6 and summary["sent"] == 6
        assert registered(sql_db, results) >= REVIEW_COLUMNS
    finally:
        sql_db.drop(results)
        sql_db.drop(source)


def test_wrong_user_stops_without_settling_then_the_right_one_sends(
    sqlite_db: SqlDb, fake_dify: FakeDify
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 9)])
    answer("reviews_user_batch", table, user="support-bot")
    run_feedback_dag("reviews_user_feedback", table=table, user="support-bot")
    for i in range(1, 9):
        set_verdict(sqlite_db, table, i, "like")
    fake_dify.reset()
    # Another DAG's default user (airflow-reviews_user_feedback) did not ask these messages.
    state, summary = run_feedback_dag("reviews_user_feedback", table=table)
    assert state == "failed" and summary is not None and summary["stopped"] == "not_found"
    assert {r.status for r in feedback_posts(fake_dify)} == {404} and fake_dify.feedbacks == []
    assert all(r["feedback_sent"] is None for r in rows_by_id(sqlite_db, table).values())
    fake_dify.reset()
    state, summary = run_feedback_dag("reviews_user_feedback", table=table, user="support-bot")
    assert state == "success" and summary is not None and summary["sent"] == 8
    assert {(f.rating, f.user) for f in fake_dify.feedbacks} == {("like", "support-bot")}
    assert all(r["feedback_error"] is None for r in rows_by_id(sqlite_db, table).values())


def test_refused_key_stops_at_once_and_the_rest_is_sent_next_run(
    sqlite_db: SqlDb, fake_dify: FakeDify
) -> None:
    table = unique_table()
    dag_id = "reviews_auth"
    sqlite_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 11)])
    answer(dag_id, table)
    run_feedback_dag(dag_id, table=table)
    for i in range(1, 11):
        set_verdict(sqlite_db, table, i, "dislike")
    fake_dify.reset()
    fake_dify.faults.add(Fault("status", path=FEEDBACK_PATH, after=3, status=401, code="unauthorized"))
    state, summary = run_feedback_dag(dag_id, table=table, max_concurrency=1)
    assert state == "failed" and summary is not None
    assert summary["stopped"] == "auth" and summary["sent"] == 3
    assert [r.status for r in feedback_posts(fake_dify)] == [200, 200, 200, 401]  # no retry, no more
    rows = rows_by_id(sqlite_db, table)
    assert sum(r["feedback_sent"] is not None for r in rows.values()) == 3
    fake_dify.reset()
    state, summary = run_feedback_dag(dag_id, table=table, max_concurrency=1)
    assert state == "success" and summary is not None and summary["sent"] == 7
    assert summary["skipped_unchanged"] == 3 and len(feedback_posts(fake_dify)) == 7


def test_transient_errors_are_retried(sqlite_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table()
    dag_id = "reviews_transient"
    sqlite_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 7)])
    answer(dag_id, table)
    run_feedback_dag(dag_id, table=table)
    for i in range(1, 7):
        set_verdict(sqlite_db, table, i, "like")
    fake_dify.reset()
    fake_dify.faults.add(Fault("status", path=FEEDBACK_PATH, on=[2, 4], status=503))
    state, summary = run_feedback_dag(dag_id, table=table, max_concurrency=2)
    assert state == "success" and summary is not None and summary["sent"] == 6
    assert sorted(r.status for r in feedback_posts(fake_dify)) == [200] * 6 + [503] * 2
    assert len(fake_dify.feedbacks) == 6


def test_analysts_own_columns_invalid_verdicts_and_foreign_feedback_columns(
    sqlite_db: SqlDb, fake_dify: FakeDify
) -> None:
    table = unique_table()
    dag_id = "reviews_columns"
    sqlite_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 5)])
    answer(dag_id, table)
    # Analysts added their own verdict column (renamed) before the provider ran: it is only read.
    sqlite_db.execute(f"ALTER TABLE {table} ADD COLUMN verdict TEXT")
    sqlite_db.execute(f"UPDATE {table} SET verdict = ? WHERE id IN (1, 2)", ("like",))
    sqlite_db.execute(f"UPDATE {table} SET verdict = ? WHERE id = 3", ("good",))
    state, summary = run_feedback_dag(dag_id, table=table, review_columns={"review_verdict": "verdict"})
    assert state == "success" and summary is not None
    assert summary["sent"] == 2 and summary["failed"] == 1
    assert summary["error_codes"] == {"invalid_verdict": 1}
    assert len(feedback_posts(fake_dify)) == 2
    errors = {
        r["id"]: r["feedback_error"] for r in sqlite_db.records(f"SELECT id, feedback_error FROM {table}")
    }
    assert "'like' or 'dislike'" in errors[3] and errors[1] is None
    assert "verdict" not in registered(sqlite_db, table)  # the analysts' column stays theirs

    # A feedback column the provider did not create is refused before anything is sent.
    other = unique_table()
    sqlite_db.create_prompts(other, [(1, "Question 1")])
    answer("reviews_foreign", other)
    sqlite_db.execute(f"ALTER TABLE {other} ADD COLUMN feedback_error TEXT")
    fake_dify.reset()
    state, _ = run_feedback_dag("reviews_foreign", table=other)
    assert state == "failed" and feedback_posts(fake_dify) == []
