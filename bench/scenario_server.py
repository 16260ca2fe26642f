"""Scenario "server": FakeDify's own rate, so no other number is mistaken for its ceiling.

For each server (threaded, asyncio), interleaved and repeated: ``python -m airflow_dify.testing``
in its own process pinned to core 0, and the lean load generator (:mod:`bench.loadgen`) pinned
to core 1, sending blocking chat calls at latency 0 on keep-alive connections. Measured: requests/s,
the server process's CPU (from /proc: user + sys over the load), and the rate per server CPU
second, which is what one core can serve whatever else the machine does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, ratio, run_worker, work_dir
from bench.config import BenchConfig

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _pin(cpu: int) -> set[int] | None:
    """``{cpu}`` when this machine has it and another core besides, else None (no pinning)."""
    try:
        usable = os.sched_getaffinity(0)
    except AttributeError:
        return None
    return {cpu} if cpu in usable and len(usable) > 1 else None


def proc_cpu_seconds(pid: int) -> float:
    """User + sys seconds of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def start_server(kind: str, log: Path) -> tuple[subprocess.Popen, str, str]:
    """FakeDify (``kind`` server) in its own process on core 0; (process, /v1 URL, chat key)."""
    cores = _pin(0)
    cmd = [sys.executable, "-m", "airflow_dify.testing", "--port", "0", "--server", kind]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115 - the child owns it
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,  # noqa: PLW1509
    )
    url = key = ""
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline and not (url and key):
        line = proc.stdout.readline()
        if not line:
            break
        fields = line.rstrip("\n").split("\t")
        if fields[0] == "url":
            url = fields[1]
        elif fields[0] == "chat" and len(fields) == 3:
            key = fields[2]
    if not (url and key):
        stop_server(proc)
        raise RuntimeError(f"FakeDify ({kind}) did not start; see {log}")
    return proc, url, key


def stop_server(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _one(cfg: BenchConfig, kind: str, rep: int) -> dict[str, Any]:
    logs = work_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    proc, url, key = start_server(kind, logs / f"server_{kind}_{rep}_fake.log")
    try:
        cores = _pin(1)
        spec = {
            "url": url,
            "key": key,
            "requests": cfg.server_requests,
            "seconds": cfg.server_seconds,
            "connections": cfg.server_connections,
            "cpu": min(cores) if cores else None,
        }
        cpu0 = proc_cpu_seconds(proc.pid)
        load = run_worker(spec, f"server_{kind}_{rep}", cfg.server_seconds + 90, module="bench.loadgen")
        cpu = proc_cpu_seconds(proc.pid) - cpu0
    finally:
        stop_server(proc)
    load.pop("fake_cpu", None)  # the bench process serves nothing here: the fake is its own process
    wall, done = load["wall_seconds"], load["requests"]
    return {
        **load,
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_share_of_one_core": round(cpu / wall, 3) if wall else None,
        "server_cpu_us_per_request": round(cpu / done * 1e6, 1) if done else None,
        "requests_per_server_cpu_second": round(done / cpu, 1) if cpu else None,
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def server_rate(cfg: BenchConfig) -> dict[str, Any]:
    """Each server kind, ``server_repeats`` times, alternating."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in cfg.server_kinds}
    for rep in range(cfg.server_repeats):
        order = list(cfg.server_kinds) if rep % 2 == 0 else list(reversed(cfg.server_kinds))
        for kind in order:
            runs[kind].append(_one(cfg, kind, rep))
    out: dict[str, Any] = {
        "requests_per_run": cfg.server_requests,
        "seconds_per_run": cfg.server_seconds,
        "connections": cfg.server_connections,
        "pinned": _pin(0) is not None,
        "runs": runs,
    }
    for kind, results in runs.items():
        out[kind] = {
            key: _stats([r[key] for r in results if r.get(key) is not None])
            for key in (
                "requests_per_second",
                "requests_per_server_cpu_second",
                "server_cpu_us_per_request",
                "server_cpu_share_of_one_core",
                "loadgen_cpu_us_per_request",
            )
        }
        out[kind]["errors"] = sum(r["errors"] for r in results)
    if {"threaded", "asyncio"} <= runs.keys():
        out["asyncio_vs_threaded"] = ratio(
            out["asyncio"]["requests_per_second"]["median"], out["threaded"]["requests_per_second"]["median"]
        )
    return out
