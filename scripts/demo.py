"""The README demo: FakeDify + SQLite + ``airflow dags test example_dify_batch``, then a look at the table.

Everything stays on 127.0.0.1 and under demo-output/; run it as often as you like (the table is
re-created each time, so every run answers all rows; run the DAG twice to see it resume).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from airflow_dify.testing import FakeDify

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"
ROWS = 300

SUBJECTS = [
    ("Invoice charged twice", "My card was billed two times for the March invoice."),
    ("App crashes on login", "Since the last update the app closes right after I enter my password."),
    ("Change account email", "I need to move my account to my new work address."),
    ("Refund request", "Please refund the annual plan, I switched to monthly by mistake."),
    ("Export to CSV broken", "The CSV export produces an empty file for reports over 1,000 lines."),
    ("顧客サポートへの質問", "請求書の宛名を変更できますか? 🙏"),
]


def make_table(path: Path) -> None:
    rng = random.Random(7)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS support_tickets")
        db.execute(
            "CREATE TABLE support_tickets (id INTEGER PRIMARY KEY, subject TEXT NOT NULL, body TEXT NOT NULL)"
        )
        db.executemany(
            "INSERT INTO support_tickets (id, subject, body) VALUES (?, ?, ?)",
            [(i, *rng.choice(SUBJECTS)) for i in range(1, ROWS + 1)],
        )


def main() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    home = OUT / "airflow"
    home.mkdir(parents=True)
    db_path = OUT / "support.db"
    make_table(db_path)
    with FakeDify(latency=0.05) as fake:
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW_CONN_DIFY_DEFAULT=json.dumps(
                {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key}
            ),
            AIRFLOW_CONN_SUPPORT_DB=json.dumps({"conn_type": "sqlite", "host": str(db_path)}),
        )
        airflow = [sys.executable, "-m", "airflow"]
        print(f"FakeDify on {fake.url}; SQLite table support_tickets with {ROWS} rows in {db_path}")
        subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        print("Running: airflow dags test example_dify_batch")
        run = subprocess.run(
            [*airflow, "dags", "test", "example_dify_batch"], env=env, text=True, capture_output=True
        )
        (OUT / "dags-test.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-4000:])
            print(f"airflow dags test failed (exit {run.returncode}); full log in {OUT / 'dags-test.log'}")
            return run.returncode
        calls = fake.calls()
        print("Running it again: the table is fully answered, so the re-run should make no call")
        again = subprocess.run(
            [*airflow, "dags", "test", "example_dify_batch"], env=env, text=True, capture_output=True
        )
        (OUT / "dags-test-rerun.log").write_text(again.stdout + again.stderr)
        rerun_calls = fake.calls() - calls
    with sqlite3.connect(db_path) as db:
        sample = db.execute(
            "SELECT id, subject, status, answer, total_tokens, total_price, currency, latency_ms "
            "FROM support_tickets ORDER BY id LIMIT 5"
        ).fetchall()
        counts = dict(
            db.execute("SELECT coalesce(status, 'pending'), count(*) FROM support_tickets GROUP BY 1")
        )
        tokens = db.execute(
            "SELECT sum(prompt_tokens), sum(completion_tokens), sum(total_tokens) FROM support_tickets"
        ).fetchone()
        prices = [
            Decimal(p)
            for (p,) in db.execute("SELECT total_price FROM support_tickets WHERE total_price IS NOT NULL")
        ]
    print("\nSample of answered rows:")
    for row_id, subject, status, answer, total, price, currency, latency in sample:
        print(
            f"  #{row_id:<4} {status:<9} {subject[:28]:<28} -> {answer[:60]!r}  "
            f"[{total} tokens, {price} {currency}, {latency} ms]"
        )
    print(f"\nRows by status: {counts}; Dify calls made: {calls}; calls made by the re-run: {rerun_calls}")
    print(f"Tokens: prompt {tokens[0]}, completion {tokens[1]}, total {tokens[2]}")
    print(f"Total price: {sum(prices, Decimal(0))} USD (summed as Decimal over {len(prices)} rows)")
    return 0 if counts.get("succeeded") == ROWS and again.returncode == 0 and rerun_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
