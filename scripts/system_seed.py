"""Create the prompts table that ``dags/example_dify_sharded.py`` answers (PostgreSQL).

Used by the native system test and by docker/compose.yaml's ``seed`` service, so both start
from the same data. Ids span negative and positive values on purpose: the shard split must use
the true modulo, and negative ids are where a naive ``id % n`` goes wrong.

    python scripts/system_seed.py --dsn "host=127.0.0.1 user=postgres dbname=test" --rows 1300
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_TABLE = "dify_prompts"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def seed_ids(rows: int) -> list[int]:
    """``rows`` distinct ids, about a quarter of them negative."""
    first = -(rows // 4)
    return list(range(first, first + rows))


def prompt_for(row_id: int) -> str:
    """Unique per id, so the fake server's request log tells which row each call was for."""
    return f"Sharded question #{row_id}: summarise ticket {row_id} in one line."


def _connect(dsn: str) -> Any:
    # psycopg 3 in this repo's venv; the apache/airflow image ships psycopg2 with the postgres provider.
    try:
        import psycopg

        return psycopg.connect(dsn)
    except ImportError:
        import psycopg2

        return psycopg2.connect(dsn)


def seed(dsn: str, table: str = DEFAULT_TABLE, rows: int = 1300, *, replace: bool = True) -> list[int]:
    """(Re)create ``table`` with ``rows`` pending prompts; returns the ids."""
    if not _NAME.match(table):
        raise ValueError(f"not a plain [schema.]table name: {table!r}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    ids = seed_ids(rows)
    conn = _connect(dsn)
    try:
        cur = conn.cursor()
        if replace:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (id BIGINT PRIMARY KEY, prompt TEXT NOT NULL)")
        cur.execute(f"SELECT count(*) FROM {table}")
        if cur.fetchone()[0] == 0:
            cur.executemany(
                f"INSERT INTO {table} (id, prompt) VALUES (%s, %s)", [(i, prompt_for(i)) for i in ids]
            )
        conn.commit()
    finally:
        conn.close()
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("DIFY_SEED_DSN", "host=127.0.0.1 user=postgres"))
    parser.add_argument("--table", default=os.environ.get("DIFY_SHARDED_TABLE", DEFAULT_TABLE))
    parser.add_argument("--rows", type=int, default=int(os.environ.get("DIFY_SEED_ROWS", "1300")))
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep an existing table (and its answers) instead of re-creating it",
    )
    args = parser.parse_args(argv)
    ids = seed(args.dsn, args.table, args.rows, replace=not args.keep)
    print(f"{args.table}: {len(ids)} prompt rows (ids {ids[0]}..{ids[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
