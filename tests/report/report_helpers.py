"""Answered tables with realistic usage spread over several days, written through the real sink."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections import defaultdict
from decimal import Decimal
from typing import Any

from airflow_dify.outcome import FAILED, SUCCEEDED, RowOutcome
from airflow_dify.sql.table import SqlTable
from airflow_dify.testing import answer_text, make_usage
from tests import databases
from tests.sql_fixtures import SqlDb

START = dt.date(2026, 3, 1)


def connector(sql_db: SqlDb) -> Any:
    if sql_db.kind == "sqlite":
        return lambda: sqlite3.connect(sql_db.sqlite_path, check_same_thread=False)
    return lambda: databases.connect(sql_db.kind)


def outcome(i: int, day: dt.date, rnd: random.Random, currency: str = "USD") -> RowOutcome:
    at = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(
        seconds=rnd.randrange(86_400), microseconds=rnd.randrange(10**6)
    )
    if rnd.random() < 0.1:  # a failed call: no usage, sometimes a latency
        return RowOutcome(
            i, FAILED, error="invalid_param: x", answered_at=at, latency_ms=rnd.choice([None, 5])
        )
    prompt = f"prompt {i} " + "x" * rnd.randrange(400)
    usage = make_usage(prompt, answer_text(prompt, {}), 1.0)
    return RowOutcome(
        i,
        SUCCEEDED,
        answer="a",
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        total_tokens=usage["total_tokens"],
        total_price=Decimal(usage["total_price"]),
        currency=currency,
        latency_ms=rnd.randrange(200, 30_000),
        answered_at=at,
    )


def make_answered_table(
    sql_db: SqlDb,
    table: str,
    n: int,
    days: int,
    seed: int,
    *,
    eur_every: int = 0,
    pending: int = 5,
    start: dt.date = START,
) -> None:
    """``n`` answered rows over ``days`` consecutive days from ``start``, plus ``pending`` unanswered."""
    sql_db.create_prompts(table, [(i, f"p{i}") for i in range(1, n + pending + 1)])
    rnd = random.Random(seed)
    rows = [
        outcome(
            i, start + dt.timedelta(days=i % days), rnd, "EUR" if eur_every and i % eur_every == 0 else "USD"
        )
        for i in range(1, n + 1)
    ]
    with SqlTable(connector(sql_db), table, dialect=sql_db.kind) as sink:
        sink.ensure_result_columns()
        for k in range(0, len(rows), 250):
            sink.write_results(rows[k : k + 250])


def source_truth(
    sql_db: SqlDb, table: str, since: dt.date | None = None
) -> dict[tuple[dt.date, str], dict[str, Any]]:
    """Per (UTC day, currency) sums straight from the source rows, computed independently."""
    truth: dict[tuple[dt.date, str], dict[str, Any]] = defaultdict(
        lambda: {"rows": 0, "failed": 0, "prompt": 0, "completion": 0, "total": 0, "price": Decimal(0)}
    )
    for at, status, p, c, t, price, cur in sql_db.query(
        f"SELECT answered_at, status, prompt_tokens, completion_tokens, total_tokens, total_price, currency "
        f"FROM {table} WHERE answered_at IS NOT NULL"
    ):
        day = dt.date.fromisoformat(at[:10]) if isinstance(at, str) else at.astimezone(dt.timezone.utc).date()
        if since is not None and day < since:
            continue
        g = truth[(day, cur or "")]
        g["rows"] += 1
        g["failed"] += status == FAILED
        g["prompt"] += p or 0
        g["completion"] += c or 0
        g["total"] += t or 0
        g["price"] += Decimal(str(price)) if price is not None else Decimal(0)
    return dict(truth)
