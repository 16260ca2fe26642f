"""SIGKILL a batch process mid-run, re-run: every row answered, at most the crash bound re-asked.

The bound is ``max_concurrency + commit_rows - 1``: calls in flight plus answers waiting for their
group commit. Checked with commits of 1 row (the old bound, max_concurrency) and of 10 rows held
up to 60 s (so the kill always finds a group waiting).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from airflow_dify.testing import FakeDify
from tests.reliability.batch_harness import (
    GENERATION,
    make_table,
    prompt_of,
    run_batch,
    table_rows,
)

N = 120
CONCURRENCY = 4


def _answered(db: Path) -> int:
    with closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM t WHERE status IS NOT NULL").fetchone()[0]
        except sqlite3.OperationalError:  # result columns not created yet
            return 0


@pytest.mark.parametrize(("commit_rows", "commit_seconds"), [(1, 0.0), (10, 60.0)])
def test_sigkill_mid_run_then_resume(tmp_path: Path, commit_rows: int, commit_seconds: float) -> None:
    db = tmp_path / "rows.db"
    make_table(db, N)
    with FakeDify(latency=0.05) as fake:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.crash_worker",
                str(db),
                fake.url,
                fake.app("chat").key,
                str(CONCURRENCY),
                str(commit_rows),
                str(commit_seconds),
            ],
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while _answered(db) < 30 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, "the batch finished before it could be killed"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        answered_at_kill = _answered(db)
        assert 30 <= answered_at_kill < N
        summary = run_batch(fake, db, concurrency=CONCURRENCY, commit_rows=commit_rows)
        assert summary.rows_selected == N - answered_at_kill
        rows = table_rows(db)
        assert all(r["status"] == "succeeded" for r in rows.values())
        # A request cut off by the kill before its body arrived was never processed (status 0, no body).
        asked = [prompt_of(r) for r in fake.requests if r.path in GENERATION and r.body]
        duplicates = len(asked) - len(set(asked))
        assert len(set(asked)) == N
        bound = CONCURRENCY + commit_rows - 1
        assert summary.crash_bound == bound
        assert duplicates <= bound, f"{duplicates} requests repeated after the crash (bound {bound})"
        print(f"killed at {answered_at_kill}/{N} saved rows; {duplicates} request(s) repeated on resume")
        for row in rows.values():
            assert asked.count(row["prompt"]) <= 2
