"""A batch in its own process, for the SIGKILL test: python -m tests.reliability.crash_worker DB URL KEY C."""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import run_batch
from airflow_dify.client import DifyClient
from airflow_dify.sql.table import SqlTable
from tests.reliability.batch_harness import FAST_RETRY, JOB


def main(db: str, url: str, key: str, concurrency: int) -> None:
    import sqlite3

    table = SqlTable(lambda: sqlite3.connect(Path(db)), "t", dialect="sqlite", owner=JOB)
    client = DifyClient(url, key, retry=FAST_RETRY)
    options = BatchOptions(app_mode="chat", user="crash", max_concurrency=concurrency, chunk_size=10)
    run_batch(table, table, client, options)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
