"""A batch in its own process, for the SIGKILL test: ``python -m tests.reliability.crash_worker``.

Arguments: DB URL KEY C ROWS S (C: max_concurrency; ROWS, S: commit_rows, commit_seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import run_batch
from airflow_dify.client import DifyClient
from airflow_dify.sql.table import SqlTable
from tests.reliability.batch_harness import FAST_RETRY, JOB


def main(db: str, url: str, key: str, concurrency: int, commit_rows: int, commit_seconds: float) -> None:
    import sqlite3

    table = SqlTable(lambda: sqlite3.connect(Path(db)), "t", dialect="sqlite", owner=JOB)
    client = DifyClient(url, key, retry=FAST_RETRY)
    options = BatchOptions(
        app_mode="chat",
        user="crash",
        max_concurrency=concurrency,
        chunk_size=10,
        commit_rows=commit_rows,
        commit_seconds=commit_seconds,
    )
    run_batch(table, table, client, options)


if __name__ == "__main__":
    main(*sys.argv[1:4], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
