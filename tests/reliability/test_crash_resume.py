"""SIGKILL a batch process mid-run, re-run: every row answered once, at most max_concurrency re-asked."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

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


def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
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
        summary = run_batch(fake, db, concurrency=CONCURRENCY)
        assert summary.rows_selected == N - answered_at_kill
        rows = table_rows(db)
        assert all(r["status"] == "succeeded" for r in rows.values())
        # A request cut off by the kill before its body arrived was never processed (status 0, no body).
        asked = [prompt_of(r) for r in fake.requests if r.path in GENERATION and r.body]
        duplicates = len(asked) - len(set(asked))
        assert len(set(asked)) == N
        assert duplicates <= CONCURRENCY, f"{duplicates} requests repeated after the crash"
        print(f"killed at {answered_at_kill}/{N} saved rows; {duplicates} request(s) repeated on resume")
        for row in rows.values():
            assert asked.count(row["prompt"]) <= 2
