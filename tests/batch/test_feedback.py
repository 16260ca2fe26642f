"""The Airflow-free review core: decisions per row, and send_feedback over a real SQLite table and
FakeDify (no Airflow, no mocks)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_dify.batch.errors import FeedbackStoppedError, PreflightError
from airflow_dify.batch.feedback import NO_MESSAGE, WORKFLOW_APP, decide, send_feedback
from airflow_dify.client import DifyClient, RetryPolicy
from airflow_dify.sql.dialects import InvalidText
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.reviews import ReviewColumns, ReviewRow, ReviewTable, signature
from airflow_dify.testing import FakeDify

FAST = RetryPolicy(max_attempts=3, max_elapsed=10.0, initial_wait=0.01, max_wait=0.05)


def row(
    verdict: object = None, note: object = None, sent: str | None = None, message_id: object = "m"
) -> ReviewRow:
    return ReviewRow(1, message_id, verdict, note, sent, None)


@pytest.mark.parametrize(
    ("r", "action", "rating", "content"),
    [
        (row("like"), "send", "like", None),
        (row(" DisLike ", "  too long  "), "send", "dislike", "too long"),
        (row("like", sent="like"), "unchanged", None, None),
        (row("like", "n", sent=signature("like", "n")), "unchanged", None, None),
        (row("like", "edited", sent=signature("like", "n")), "send", "like", "edited"),
        (row(None, "kept note", sent="like"), "send", None, None),  # a revocation carries no note
        (row(None, sent="null"), "unchanged", None, None),
        (row(None, "note only"), "unchanged", None, None),  # nothing to send, nothing to revoke
        (row("good"), "invalid", None, None),
        (row("like", InvalidText(b"\xff")), "invalid", None, None),
        (row("like", message_id=None), "not_reviewable", None, None),
        (row("like", message_id="  "), "not_reviewable", None, None),
    ],
)
def test_decide(r: ReviewRow, action: str, rating: str | None, content: str | None) -> None:
    d = decide(r)
    assert d.action == action
    if action == "send":
        assert (d.rating, d.content) == (rating, content)
        assert d.signature == signature(rating, content)


def test_workflow_apps_make_every_changed_row_not_reviewable() -> None:
    assert decide(row("like"), WORKFLOW_APP).error == WORKFLOW_APP
    assert decide(row("good"), WORKFLOW_APP).action == "not_reviewable"
    assert decide(row("like", message_id=None)).error == NO_MESSAGE


def test_signatures_are_short_and_tell_notes_apart() -> None:
    assert signature("like", None) == "like" and signature(None, "x") == "null"
    a, b = signature("dislike", "a" * 10_000), signature("dislike", "b")
    assert a != b and len(a) <= 64 and a.startswith("dislike:")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "reviews.db"


def connector(path: Path) -> Callable[[], sqlite3.Connection]:
    return lambda: sqlite3.connect(path, check_same_thread=False)


def answered_table(path: Path, fake: FakeDify, client: DifyClient, n: int, user: str = "u") -> list[str]:
    """An answered table as the batch leaves it: id + message_id (asked as ``user``)."""
    ids = [client.chat(f"Q{i}", user=user).message_id for i in range(n)]
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, prompt TEXT, message_id VARCHAR(64))")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i + 1, f"Q{i}", m) for i, m in enumerate(ids)])
    return ids


def test_core_sends_records_and_revokes_without_airflow(db: Path, fake_dify: FakeDify) -> None:
    with DifyClient(fake_dify.url, fake_dify.app().key, retry=FAST) as client:
        ids = answered_table(db, fake_dify, client, 6)
        with ReviewTable(connector(db), "t", dialect="sqlite") as reviews:
            assert send_feedback(reviews, client, user="u").selected == 0  # creates the columns
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE t SET review_verdict = 'like', review_note = 'ok' WHERE id <= 4")
            summary = send_feedback(reviews, client, user="u", max_concurrency=3, page_size=2)
            assert (summary.selected, summary.sent) == (4, 4)
            assert sorted(f.message_id for f in fake_dify.feedbacks) == sorted(ids[:4])
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE t SET review_verdict = NULL WHERE id = 1")
            # Revoked in Dify meanwhile (e.g. in its UI): "nothing to revoke" still ends revoked.
            client.feedback(ids[0], rating=None, user="u")
            summary = send_feedback(reviews, client, user="u")
            assert (summary.revoked, summary.failed, summary.skipped_unchanged) == (1, 0, 3)
            with sqlite3.connect(db) as conn:
                sent = dict(conn.execute("SELECT id, feedback_sent FROM t").fetchall())
            assert sent[1] == "null" and sent[2] == signature("like", "ok") and sent[5] is None


def test_summary_adds_up_when_stopped(db: Path, fake_dify: FakeDify) -> None:
    with DifyClient(fake_dify.url, fake_dify.app().key, retry=FAST) as client:
        answered_table(db, fake_dify, client, 8)
        with ReviewTable(connector(db), "t", dialect="sqlite") as reviews:
            send_feedback(reviews, client, user="u")
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE t SET review_verdict = 'dislike'")
            fake_dify.app().api_enabled = False  # GET /info itself is refused: nothing is sent
            with pytest.raises(PreflightError, match="403"):
                send_feedback(reviews, client, user="u")
            fake_dify.app().api_enabled = True
            with pytest.raises(FeedbackStoppedError) as caught:
                send_feedback(reviews, client, user="someone-else", max_concurrency=1)
            s = caught.value.summary
            assert s.stopped == "not_found" and s.sent == 0
            total = s.sent + s.revoked + s.skipped_unchanged + s.not_reviewable + s.failed + s.left_pending
            assert total == s.selected == 8
            assert "user='someone-else'" in str(caught.value)


def test_columns_the_provider_did_not_create_are_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, message_id TEXT, feedback_sent INTEGER)")
    reviews = ReviewTable(connector(db), "t", dialect="sqlite")
    with pytest.raises(SqlTableError, match=r"did not create: feedback_sent \(INTEGER\).*review_columns="):
        reviews.prepare()
    renamed = ReviewTable(
        connector(db),
        "t",
        dialect="sqlite",
        columns=ReviewColumns.with_overrides({"feedback_sent": "fb_sent"}),
    )
    assert "fb_sent" in renamed.prepare()
    with pytest.raises(SqlTableError, match="unknown key"):
        ReviewColumns.with_overrides({"verdict": "x"})


def test_a_table_without_results_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, prompt TEXT)")
    with pytest.raises(SqlTableError, match="message_id.*DifyBatchOperator first"):
        ReviewTable(connector(db), "t", dialect="sqlite").prepare()
    with pytest.raises(SqlTableError, match="DifyBatchOperator first"):
        ReviewTable(connector(db), "t", dialect="sqlite", results_table="t_dify").prepare()
