"""docker/ stays consistent with the native system test (no Docker engine needed).

The compose file is parsed with PyYAML (anchors and ``<<`` merges resolved like compose does),
checked against a small schema of the compose keys it uses, and compared with
tests/system/airflow_env.py: the same AIRFLOW__/AIRFLOW_CONN_ names, the same DAG, pool, budget
and Redis dbs. The FakeDify service's command is run for real.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.system.airflow_env import (
    BROKER_DB,
    CELERY_NAMES,
    COMMON_NAMES,
    CONTAINER_ONLY_NAMES,
    DAG_FILE,
    DAG_ID,
    NATIVE_ONLY_NAMES,
    POOL,
    POOL_SLOTS,
    RATE_LIMIT_DB,
    Budget,
    airflow_env,
    new_keys,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker-1")
WORKERS = ("airflow-worker-1", "airflow-worker-2")

_STR_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}
_COMMAND = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
#: The subset of the compose specification this file uses; unknown keys are errors (typos).
SERVICE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
    "properties": {
        "image": {"type": "string"},
        "build": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"context": {"type": "string"}, "dockerfile": {"type": "string"}},
        },
        "command": _COMMAND,
        "entrypoint": _COMMAND,
        "environment": _STR_MAP,
        "volumes": {"type": "array", "items": {"type": "string", "pattern": r"^[^:]+:/[^:]*(:ro|:rw)?$"}},
        "ports": {"type": "array", "items": {"type": "string", "pattern": r"^\d+:\d+$"}},
        "user": {"type": "string"},
        "profiles": {"type": "array", "items": {"type": "string"}},
        "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
        "depends_on": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["condition"],
                "properties": {
                    "condition": {
                        "enum": ["service_started", "service_healthy", "service_completed_successfully"]
                    }
                },
            },
        },
        "healthcheck": {
            "type": "object",
            "additionalProperties": False,
            "required": ["test"],
            "properties": {
                "test": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "interval": {"type": "string"},
                "timeout": {"type": "string"},
                "retries": {"type": "integer"},
                "start_period": {"type": "string"},
            },
        },
    },
}
COMPOSE_SCHEMA = {
    "type": "object",
    "required": ["services"],
    "additionalProperties": False,
    "patternProperties": {"^x-": {}},
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "services": {"type": "object", "additionalProperties": SERVICE_SCHEMA},
        "volumes": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
    },
}


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with an empty environment: the defaults."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _env(compose: dict[str, Any], service: str) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in compose["services"][service]["environment"].items()}


def test_compose_matches_the_schema_and_references_resolve(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, COMPOSE_SCHEMA)
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services and dep != name, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        build = svc.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    # No dependency cycles: compose would refuse to start.
    seen: dict[str, int] = {}

    def visit(node: str) -> None:
        assert seen.get(node) != 1, f"dependency cycle through {node}"
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for dep in services[node].get("depends_on", {}):
            visit(dep)
        seen[node] = 2

    for name in services:
        visit(name)


def test_compose_runs_the_same_components_as_the_native_test(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "fakedify", "airflow-init", *AIRFLOW_SERVICES, *WORKERS} <= set(services)
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    for worker in WORKERS:
        assert services[worker]["command"] == "celery worker"
        assert _env(compose, worker)["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "2"
    init = "\n".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init
    assert f"airflow pools set {POOL} {POOL_SLOTS} " in init
    assert "scripts/system_seed.py" in init


def test_compose_uses_the_native_env_names(compose: dict[str, Any]) -> None:
    native = airflow_env(
        home=Path("/h"),
        dags=Path("/d"),
        logs=Path("/l"),
        metadata_db="m",
        api_port=1,
        log_port=2,
        executor="CeleryExecutor",
        dify_conn="{}",
        sql_conn="{}",
        table="t",
        keys=new_keys(),
        celery=dict.fromkeys(CELERY_NAMES, "x"),
    )
    expected = set(native) - set(NATIVE_ONLY_NAMES)
    assert set(COMMON_NAMES) | set(CELERY_NAMES) <= expected
    for service in (*AIRFLOW_SERVICES, *WORKERS, "airflow-init"):
        names = set(_env(compose, service)) - set(CONTAINER_ONLY_NAMES)
        assert names == expected, (service, sorted(names ^ expected))
    env = _env(compose, "airflow-scheduler")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(POOL_SLOTS)
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://redis:6379/{BROKER_DB}"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_compose_budget_matches_the_native_test(compose: dict[str, Any]) -> None:
    budget = Budget()
    env = _env(compose, "airflow-scheduler")
    dify = json.loads(env["AIRFLOW_CONN_DIFY_DEFAULT"])
    assert dify["conn_type"] == "dify" and dify["host"] == "http://fakedify:8089/v1"
    assert dify["extra"] == {
        "app_mode": "chat",
        "max_concurrency": budget.conn_max_concurrency,
        "requests_per_minute": budget.conn_rpm,
        "rate_limit_backend": f"redis://redis:6379/{RATE_LIMIT_DB}",
    }
    sql = json.loads(env["AIRFLOW_CONN_DIFY_SQL"])
    assert sql["conn_type"] == "postgres" and sql["schema"] == "dify"
    fake = compose["services"]["fakedify"]
    args = shlex.split(fake["command"])
    opts = dict(zip(args[3::2], args[4::2], strict=True))
    assert args[:3] == ["python", "-m", "airflow_dify.testing"]
    assert int(opts["--rpm"]) == budget.server_rpm
    assert int(opts["--max-active-requests"]) == budget.server_max_active
    assert float(opts["--latency"]) == budget.latency
    assert opts["--port"] == "8089"
    # The key the fake serves is the key the connection sends.
    assert _interpolate(fake["environment"]["DIFY_FAKE_API_KEY"]) == dify["password"]


def test_compose_mounts_the_dag_the_native_test_runs(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["airflow-scheduler"]["volumes"]
    mount = next(v for v in volumes if v.split(":")[1] == "/opt/airflow/dags")
    dags = (DOCKER / mount.split(":")[0]).resolve()
    assert dags == ROOT / "dags"
    source = (dags / DAG_FILE).read_text()
    assert f'dag_id="{DAG_ID}"' in source
    assert f'pool="{POOL}"' in source
    env = _env(compose, "airflow-scheduler")
    assert f'os.environ.get("DIFY_SHARDED_TABLE", "{env["DIFY_SHARDED_TABLE"]}")' in source


def test_dockerfile_pins_the_airflow_it_is_built_from() -> None:
    airflow_version = importlib.metadata.version("apache-airflow")
    text = (DOCKER / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == [f"apache/airflow:{airflow_version}"], "the image must match the tested Airflow"
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in text
    for copied in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


def test_docker_compose_config_when_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no `docker compose` plugin on this machine; the structural checks above still ran")
    result = subprocess.run(
        [docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_fakedify_service_command_serves_the_fixed_key() -> None:
    """Run the compose service's command (on 127.0.0.1) and call /v1/info with the fixed key."""
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "app-SystemTestFixedKey000001"
    env = {**os.environ, "DIFY_FAKE_API_KEY": key, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "airflow_dify.testing", "--port", str(port), "--rpm", "60"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/info", headers={"Authorization": f"Bearer {key}"}
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    info = json.loads(resp.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "FakeDify did not come up"
                time.sleep(0.2)
        assert info["mode"] == "chat"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
