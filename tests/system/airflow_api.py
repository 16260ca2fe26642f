"""A few Airflow REST API v2 calls (stdlib only) for the system test, with bounded waits."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class AirflowApi:
    """``/api/v2`` of a local api-server run with ``simple_auth_manager_all_admins`` (no token needed)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body}")
        return body

    def healthy(self) -> bool:
        """Scheduler and dag-processor heartbeats are recent."""
        try:
            status, body = self.call("GET", "/api/v2/monitor/health", timeout=5)
        except OSError:
            return False
        if status != 200 or not isinstance(body, dict):
            return False
        parts = [body.get("scheduler") or {}, body.get("dag_processor") or {}]
        return all(p.get("status") == "healthy" for p in parts)

    def dag_ready(self, dag_id: str) -> bool:
        try:
            status, body = self.call("GET", f"/api/v2/dags/{dag_id}", timeout=5)
        except OSError:
            return False
        return status == 200 and isinstance(body, dict)

    def unpause(self, dag_id: str) -> None:
        status, body = self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if status != 200:
            raise AssertionError(f"unpause {dag_id} -> {status}: {body}")

    def trigger(self, dag_id: str, run_id: str) -> None:
        status, body = self.call(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None}
        )
        if status != 200:
            raise AssertionError(f"trigger {dag_id} -> {status}: {body}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int) -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
            f"?map_index={map_index}&deserialize=true"
        )
        return self.get(path)["value"]

    def asset_events(self, run_id: str) -> list[dict[str, Any]]:
        events = self.get("/api/v2/assets/events?limit=100&order_by=-timestamp")["asset_events"]
        return [e for e in events if e.get("source_run_id") == run_id]


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 1.0,
    check: Callable[[], None] = lambda: None,
) -> T:
    """Poll ``probe`` until it returns something truthy; ``check`` may raise to fail fast."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
