"""Secrets at DEBUG: ``airflow dags test`` and ``airflow tasks test`` with DEBUG logging.

The key, the OAuth2 client secret and every access token are searched for in stdout, stderr, the
task logs and a dump of the metadata database the run wrote. The provider itself prints none of
them. What remains is Airflow's: when a task fetches a connection, Airflow registers its password
and its extra JSON with the secrets masker, and the in-process supervisor these two commands use
logs that registration at DEBUG with the value in it (task SDK ``InProcessSupervisorComms.send``:
``self.log.debug("Sending request", msg=msg)``). This test pins that remaining exposure: each such
secret at most once, and only on that line; tokens and normalised keys never.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from airflow_dify.testing import FakeDify, Fault
from tests.airflow_run import write_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db", "metadata_template")
#: The Airflow line that prints a secret it is told to mask (the one exposure left).
AIRFLOW_MASK_LINE = "MaskSecret"


def _run(cmd: list[str], home: Path, env: dict[str, str]) -> str:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(os.environ["DIFY_TEST_METADATA_TEMPLATE"]), home / "airflow.db")
    full = {
        **os.environ,
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *cmd], env=full, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    logs = "".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file())
    with closing(sqlite3.connect(home / "airflow.db")) as db:
        dump = "\n".join(db.iterdump())
    return "\n".join([done.stdout, done.stderr, logs, dump])


@pytest.mark.parametrize("command", ["dags test", "tasks test"])
@pytest.mark.parametrize("auth", ["api_key", "oauth2"])
def test_no_secret_at_debug_but_airflows_own_mask_registration(
    auth: str, command: str, sqlite_db: SqlDb, fake_dify: FakeDify, tmp_path: Path
) -> None:
    key = fake_dify.app("chat").key
    client_secret = "client-secret-debug-5c1e7f"
    conn: dict = {"conn_type": "dify", "host": fake_dify.url, "extra": {"app_mode": "chat"}}
    if auth == "oauth2":
        fake_dify.add_oauth_client("debugcheck", client_secret, app_mode="chat")
        fake_dify.token_ttl = 1  # several tokens during the run: each one would be a new leak
        fake_dify.latency = 0.03
        conn["extra"].update(
            {
                "auth_type": "oauth2",
                "token_url": fake_dify.token_url,
                "client_id": "debugcheck",
                "client_secret": client_secret,
            }
        )
    else:
        conn["password"] = f"Bearer {key}"  # normalised before use: a second form of the key
    fake_dify.faults.add(Fault("status", status=500, every=9))
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"debug check {i}") for i in range(1, 61)])
    dag_id = f"debug_{auth}_{command.split()[0]}"
    write_dag(
        dag_id, {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "max_concurrency": 4}
    )
    env = {"AIRFLOW_CONN_DIFY_TEST": json.dumps(conn), "AIRFLOW_CONN_SQL_TEST": sqlite_db.conn_json}
    cmd = (
        ["dags", "test", dag_id, "2026-02-01"]
        if command == "dags test"
        else ["tasks", "test", dag_id, "batch", "2026-02-01"]
    )
    haystack = _run(cmd, tmp_path / "home", env)
    assert "DEBUG" in haystack or "[debug" in haystack  # DEBUG logging really was on
    assert sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'") == [(60,)]

    tokens = fake_dify.issued_tokens
    if auth == "oauth2":
        assert len(tokens) >= 2, "the run should have refreshed its token"
    for token in tokens:
        assert token not in haystack, f"access token leaked ({token[:4]}...)"
    lines = haystack.splitlines()
    # Airflow's own registrations when it fetches the connection: the password once; the extra
    # JSON twice (as text, and as the dict its environment-variable backend parses).
    for secret, airflows_own in ((key, 1), (client_secret, 2)):
        where = [line for line in lines if secret in line]
        assert all(AIRFLOW_MASK_LINE in line for line in where), [w[:160] for w in where]
        assert len(where) <= airflows_own, f"{len(where)} lines carry the secret: the provider added some"
