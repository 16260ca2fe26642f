"""A real Airflow API server (UI + REST) in a temporary AIRFLOW_HOME, for browser tests.

Started through a tiny launcher so the server can carry the upstream fix for the Test button on
connections without a port (apache/airflow#73298): Airflow 3.3.2's UI posts ``port: 0`` for a
stored NULL port and the API then refuses to reuse the stored key ("The host or port to test
differs from the stored connection"), which breaks Test for every connection type that hides
the port, ``dify`` included. The patch is applied only when the running Airflow lacks the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LAUNCHER = """\
import sys

from airflow.api_fastapi.core_api.routes.public import connections as routes

_original = getattr(routes, "_same_endpoint", None)
if _original is not None and not _original(0, None):
    def _same_endpoint(requested, stored):
        # apache/airflow#73298: the UI sends port 0 for "no port"; nothing addresses port 0.
        return _original(None if requested == 0 else requested, stored)

    routes._same_endpoint = _same_endpoint
    print("airflow_ui: applied the apache/airflow#73298 port-0 fix", flush=True)

from airflow.__main__ import main

sys.argv = ["airflow", "api-server", "--host", "127.0.0.1", "--port", sys.argv[1], "--workers", "1"]
main()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowUI:
    """``airflow db migrate`` then the API server on a free 127.0.0.1 port, in its own process group."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "api-server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__WORKERS": "1",
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> AirflowUI:
        (self.home / "dags").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        launcher = self.home / "launch_api_server.py"
        launcher.write_text(LAUNCHER)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(launcher), str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() ends it and anything it spawned
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"api-server exited early:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"api-server not healthy after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # anything the server left in its group
            os.killpg(proc.pid, signal.SIGKILL)
