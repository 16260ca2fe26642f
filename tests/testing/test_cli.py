"""``python -m airflow_dify.testing`` runs a usable server and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import requests

from .fakedify_helpers import bearer


def test_cli_serves_and_stops() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_dify.testing", "--port", "0", "--latency", "0.01", "--print-env"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while "AIRFLOW_CONN_DIFY_DEFAULT" not in lines and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            head, _, rest = line.rstrip("\n").partition("\t" if "\t" in line else "=")
            lines[head] = rest
        assert {"chat", "completion", "workflow", "advanced-chat", "agent-chat", "token_url"} <= set(lines)
        conn = json.loads(lines["AIRFLOW_CONN_DIFY_DEFAULT"])
        assert conn["conn_type"] == "dify" and conn["host"].endswith("/v1")
        chat_key = lines["chat"].split("\t")[1]
        assert conn["password"] == chat_key
        resp = requests.post(
            f"{conn['host']}/chat-messages",
            json={"query": "hi", "inputs": {}, "user": "u"},
            headers=bearer(chat_key),
            timeout=10,
        )
        assert resp.status_code == 200 and resp.json()["answer"] == "Answer: hi"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
