"""A batch in its own process, for the SIGKILL test: python -m tests.reliability.crash_worker DB URL KEY C."""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_dify.batch.calls import make_row_caller
from airflow_dify.batch.rows import PromptBuilder
from airflow_dify.batch.runner import run_table_batch
from airflow_dify.batch.sql_table import SqlTable
from airflow_dify.client import DifyClient
from tests.reliability.batch_harness import FAST_RETRY


def main(db: str, url: str, key: str, concurrency: int) -> None:
    import sqlite3

    builder = PromptBuilder(family="chat", id_column="id", query_column="prompt")
    table = SqlTable(
        lambda: sqlite3.connect(Path(db)), "t", dialect="sqlite", read_columns=builder.read_columns
    )
    table.ensure_result_columns()
    client = DifyClient(url, key, retry=FAST_RETRY)
    run_table_batch(
        table, make_row_caller(client, builder, user="crash"), max_concurrency=concurrency, chunk_size=10
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
