"""The cost report on real SQLite and PostgreSQL answered tables: exact totals, idempotent, chart."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_dify.report.chart import render_cost_chart
from airflow_dify.report.cost import CostReport, utc_date
from airflow_dify.report.usage import DailyUsage, percentile, totals
from tests.report.report_helpers import START, connector, make_answered_table, source_truth
from tests.sql_fixtures import SqlDb, unique_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_matches_source(stored: list[DailyUsage], sql_db: SqlDb, table: str) -> None:
    truth = source_truth(sql_db, table)
    mine = {(r.date, r.currency): r for r in stored if r.table_name == table}
    assert set(mine) == set(truth)
    for key, t in truth.items():
        r = mine[key]
        assert (r.row_count, r.failed_count) == (t["rows"], t["failed"]), key
        assert (r.prompt_tokens, r.completion_tokens, r.total_tokens) == (
            t["prompt"],
            t["completion"],
            t["total"],
        )
        assert r.total_price == t["price"], key  # Decimal: exact, not approximately
        assert r.succeeded_count + r.failed_count == r.row_count


def test_summary_equals_source_sums_and_rerun_is_idempotent(sql_db: SqlDb) -> None:
    a, b, summary = unique_table("ans_a"), unique_table("ans_b"), unique_table("cost")
    make_answered_table(sql_db, a, n=700, days=5, seed=1, eur_every=9)
    make_answered_table(sql_db, b, n=300, days=3, seed=2)
    try:
        with CostReport(connector(sql_db), dialect=sql_db.kind, summary_table=summary) as report:
            made = report.run({a: "classifier", b: "summariser"})
            stored = report.load()
            assert_matches_source(stored, sql_db, a)
            assert_matches_source(stored, sql_db, b)
            assert {r.app for r in stored if r.table_name == a} == {"classifier"}
            assert len(stored) == len(made) == 5 * 3 + 3 * 2  # USD + EUR + '' (failures) per day of a
            grand = totals(stored)
            src_price = sum((t["price"] for t in source_truth(sql_db, a).values()), Decimal(0))
            src_price += sum((t["price"] for t in source_truth(sql_db, b).values()), Decimal(0))
            assert sum(map(Decimal, grand["total_price_by_currency"].values())) == src_price
            assert grand["rows"] == 1000 and set(grand["total_price_by_currency"]) == {"EUR", "USD"}

            # Same input, same table: nothing duplicated.
            report.run({a: "classifier", b: "summariser"})
            assert report.load() == stored

            # More rows answered on day 2 of table b; re-report only from day 2 on.
            sql_db.execute(
                f"UPDATE {b} SET status = 'succeeded', total_tokens = 1000, total_price = ?, "
                f"currency = 'USD', answered_at = ? WHERE status IS NULL",
                (
                    "0.1234567",
                    "2026-03-02T23:59:59.999999+00:00"
                    if sql_db.kind == "sqlite"
                    else dt.datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
                ),
            )
            report.run({b: "summariser"}, since=START + dt.timedelta(days=1))
            again = report.load()
            assert_matches_source(again, sql_db, b)
            day2 = next(
                r
                for r in again
                if r.table_name == b and r.date == dt.date(2026, 3, 2) and r.currency == "USD"
            )
            before = next(
                r
                for r in stored
                if r.table_name == b and r.date == dt.date(2026, 3, 2) and r.currency == "USD"
            )
            assert day2.row_count == before.row_count + 5
            assert day2.total_price == before.total_price + 5 * Decimal("0.1234567")
            assert [r for r in again if r.table_name == a] == [r for r in stored if r.table_name == a]
            raw = sql_db.query(f"SELECT COUNT(*) FROM {summary}")[0][0]
            assert raw == len(again)
    finally:
        for t in (a, b, summary):
            sql_db.drop(t)


def test_latency_percentiles_are_nearest_rank(sqlite_db: SqlDb) -> None:
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 95)) == (50, 95)
    assert percentile([30, 10, 20], 50) == 20
    table, summary = unique_table("lat"), unique_table("cost")
    sqlite_db.create_prompts(
        table,
        [
            (
                i,
                "p",
                "succeeded",
                i * 10,
                f"2026-03-0{1 + i % 2}T10:00:00.000000+00:00",
                "0.5",
                "USD",
                None,
                None,
                None,
            )
            for i in range(1, 41)
        ],
        columns="id INTEGER PRIMARY KEY, prompt TEXT, status TEXT, latency_ms INTEGER, answered_at TEXT, "
        "total_price TEXT, currency TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, "
        "total_tokens INTEGER",
    )
    with CostReport(connector(sqlite_db), dialect="sqlite", summary_table=summary) as report:
        rows = report.run([table])
    odd, even = (
        (r for r in rows if r.date == dt.date(2026, 3, 2)),
        (r for r in rows if r.date == dt.date(2026, 3, 1)),
    )
    odd_r, even_r = next(odd), next(even)
    # day 2 holds odd i: latencies 10, 30, ..., 390 (20 values): rank 10 -> 190, rank 19 -> 370.
    assert (odd_r.p50_latency_ms, odd_r.p95_latency_ms) == (190, 370)
    assert (even_r.p50_latency_ms, even_r.p95_latency_ms) == (200, 380)
    assert odd_r.total_price == Decimal("10.0") and odd_r.app == "unspecified" and odd_r.total_tokens == 0


def test_answered_at_forms_and_bad_arguments(sqlite_db: SqlDb) -> None:
    assert utc_date("2026-03-01T23:30:00.000000-02:00") == dt.date(2026, 3, 2)
    assert utc_date(dt.datetime(2026, 3, 1, 23, 30)) == dt.date(2026, 3, 1)
    assert utc_date(None) is None
    with CostReport(connector(sqlite_db), dialect="sqlite") as report:
        with pytest.raises(ValueError, match="at least one"):
            report.run([])
        with pytest.raises(ValueError, match="before"):
            report.run(["t"], since=dt.date(2026, 1, 2), until=dt.date(2026, 1, 1))
        with pytest.raises(Exception, match="invalid SQL identifier"):
            report.run(["t; DROP TABLE x"])


def test_chart_is_a_png_with_content(tmp_path: Path) -> None:
    rows = [
        DailyUsage(
            START + dt.timedelta(days=d),
            t,
            "app",
            cur,
            row_count=10,
            total_tokens=1000 * (d + 1) * k,
            total_price=Decimal("0.0123456") * (d + 1) * k,
        )
        for d in range(6)
        for k, t in enumerate(("tickets", "reviews"), start=1)
        for cur in ("USD",)
    ]
    path = render_cost_chart(rows, tmp_path / "sub" / "cost.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    empty = render_cost_chart([], tmp_path / "empty.png", stack_by="app")
    assert empty.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="stack_by"):
        render_cost_chart(rows, tmp_path / "x.png", stack_by="currency")
