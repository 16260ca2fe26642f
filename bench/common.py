"""Shared bench plumbing: machine info, the in-process FakeDify host, prompt tables, workers.

The server stays in the bench process (its stats and request log are readable there); clients
run as ``python -m bench.worker`` subprocesses that print one ``BENCH_RESULT {json}`` line.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from airflow_dify.testing import FakeDify
from airflow_dify.testing.asyncio_server import THREAD_NAME as FAKE_THREAD_NAME
from bench.baselines.peer_report import RESULT_PREFIX

REPO = Path(__file__).resolve().parent.parent
WORK_ENV = "AIRFLOW_DIFY_BENCH_WORK"


def work_dir() -> Path:
    """Scratch files (tables, pool file, worker logs, Airflow home): git-ignored bench/.work, or
    ``$AIRFLOW_DIFY_BENCH_WORK`` (the smoke test points it at a tmp dir)."""
    path = Path(os.environ.get(WORK_ENV) or REPO / "bench" / ".work")
    path.mkdir(parents=True, exist_ok=True)
    return path


GENERATION_PATHS = frozenset({"/chat-messages", "/completion-messages", "/workflows/run"})


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "airflow": _version("apache-airflow"),
        "airflow_provider_dify": _version("airflow-provider-dify"),
        "requests": _version("requests"),
        "urllib3": _version("urllib3"),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "git_commit": commit or None,
    }


# -- server ---------------------------------------------------------------------------------------
def start_fake(latency: float, *, keep_records: int | None) -> FakeDify:
    """FakeDify on 127.0.0.1; ``keep_records`` bounds the request log (a 1M-row run would grow it)."""
    return FakeDify(latency=latency, max_records=keep_records).start()


def fake_cpu_seconds() -> float:
    """User + sys seconds of FakeDify's serving thread (the asyncio server's one loop thread).

    Not the whole bench process: spawning a worker and parsing its output cost the bench's main
    thread 0.05-0.12 s per run at scenario b, which made the fake look busier than one core.
    Falls back to the process's CPU where threads cannot be told apart (the threaded server,
    no per-thread clock).
    """
    for thread in threading.enumerate():
        if thread.name == FAKE_THREAD_NAME and thread.ident is not None and thread.is_alive():
            try:
                return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (AttributeError, OSError):  # no per-thread clocks here
                break
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fake_cpu_view(cpu_seconds: float, wall_seconds: float | None, requests: int | None) -> dict[str, Any]:
    """FakeDify's CPU over one client run: when ``share_of_one_core`` nears 1, the number measured
    is the fake's ceiling, not the client's."""
    out: dict[str, Any] = {"cpu_seconds": round(cpu_seconds, 3)}
    if wall_seconds:
        out["share_of_one_core"] = round(cpu_seconds / wall_seconds, 3)
    if requests:
        out["cpu_us_per_request"] = round(cpu_seconds / requests * 1e6, 1)
    return out


def windows(times: Sequence[float], width: float, limit: float) -> dict[str, int]:
    """Worst count in any window ``[t, t + width)`` starting at a request, and how many such
    windows hold more than ``limit`` requests (two pointers; ``times`` sorted)."""
    worst = over = 0
    right = 0
    n = len(times)
    for left in range(n):
        right = max(right, left)
        while right < n and times[right] - times[left] < width:
            right += 1
        count = right - left
        worst = max(worst, count)
        over += count > limit
    return {"worst": worst, "over": over}


def server_view(fake: FakeDify, rpm: float | None) -> dict[str, Any]:
    """Server-side counts: worst 1 s / 60 s windows and the windows above the rate limit."""
    stats = fake.stats()
    out: dict[str, Any] = {
        "admitted": stats["admitted"],
        "rejected_429": stats["rejected_429"],
        "max_concurrency_seen": stats["max_concurrency_seen"],
        "worst_1s": stats["worst_1s"],
        "worst_60s": stats["worst_60s"],
    }
    records = [r for r in fake.requests if r.path in GENERATION_PATHS]
    starts = sorted(r.started for r in records)
    if starts:
        out["span_seconds"] = round(starts[-1] - starts[0], 3)
        # Time inside the fake's handler (configured latency + the fake's own work), so a gap to
        # the bound can be split between the server and the client.
        out["mean_service_ms"] = round(sum(r.ended - r.started for r in records) / len(records) * 1000, 2)
    if rpm and starts:
        # The limit is per minute; a 1 s window above rpm/60 is reported too (GCRA allows +1 there).
        out["windows_over_60s"] = windows(starts, 60.0, rpm)["over"]
        out["windows_over_1s"] = windows(starts, 1.0, rpm / 60.0)["over"]
    return out


def records_view(fake: FakeDify, start: float, end: float) -> dict[str, Any]:
    """Server-side counts for generation requests that arrived in ``[start, end]`` (monotonic
    clock, shared by all processes on Linux): for runs that share one server without a reset."""
    recs = [r for r in fake.requests if r.path in GENERATION_PATHS and start <= r.started <= end]
    starts = sorted(r.started for r in recs)
    events = sorted(
        [(r.started, 1) for r in recs] + [(r.ended, -1) for r in recs], key=lambda e: (e[0], e[1])
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return {
        "admitted": sum(r.status == 200 for r in recs),
        "requests": len(recs),
        "max_concurrency_seen": peak,
        "worst_1s": windows(starts, 1.0, float("inf"))["worst"],
        "worst_60s": windows(starts, 60.0, float("inf"))["worst"],
        "span_seconds": round(starts[-1] - starts[0], 3) if starts else 0.0,
    }


# -- data -----------------------------------------------------------------------------------------
def prompt(i: int) -> str:
    return f"Question #{i}: summarise the ticket in one line (語 ✓)."


def make_prompt_table(path: Path, rows: int, table: str = "prompts") -> Path:
    """A fresh SQLite table ``(id INTEGER PRIMARY KEY, prompt TEXT)``, filled by a generator."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, prompt TEXT)")
        db.executemany(f"INSERT INTO {table} VALUES (?, ?)", ((i, prompt(i)) for i in range(1, rows + 1)))
        db.commit()
    return path


def count_answered(path: Path, table: str = "prompts") -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'").fetchone()[0])


# -- workers --------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process failed or printed no result; the message points at its log."""


def worker_command(spec: dict[str, Any], module: str = "bench.worker") -> list[str]:
    return [sys.executable, "-m", module, json.dumps(spec)]


def spawn_worker(
    spec: dict[str, Any], log_name: str, env: dict[str, str] | None = None, module: str = "bench.worker"
) -> subprocess.Popen:
    """Start a worker (``python -m module '<spec>'``); its stdout+stderr go to
    bench/.work/logs/<log_name>.log."""
    logs = work_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = open(logs / f"{log_name}.log", "w")  # noqa: SIM115 - closed by collect_worker
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    cpu0 = fake_cpu_seconds()
    proc = subprocess.Popen(
        worker_command(spec, module), cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=full_env
    )
    proc.bench_cpu0 = cpu0  # type: ignore[attr-defined]
    proc.log_path = logs / f"{log_name}.log"  # type: ignore[attr-defined]
    proc.log_file = log_file  # type: ignore[attr-defined]
    return proc


def collect_worker(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    """Wait (bounded) for a worker and parse its last result line."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise WorkerError(f"worker timed out after {timeout:.0f} s; see {proc.log_path}") from None  # type: ignore[attr-defined]
    finally:
        proc.log_file.close()  # type: ignore[attr-defined]
    fake_cpu = fake_cpu_seconds() - proc.bench_cpu0  # type: ignore[attr-defined]
    text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(text.splitlines()[-15:])
        raise WorkerError(f"worker exited {proc.returncode}; see {proc.log_path}:\n{tail}")  # type: ignore[attr-defined]
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    # The bench process's CPU while this worker lived (FakeDify's; workers running at the same
    # time share it), over the worker's measured wall time.
    result["fake_cpu"] = fake_cpu_view(fake_cpu, result.get("wall_seconds"), None)
    return result


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC in this process (FakeDify's) while a client runs: a full collection over the
    request log stalled the fake's loop for tens of ms, and the requests that queued meanwhile were
    stamped together, a burst the client never sent (scenario d's worst 1 s read 105-111 with the
    GC on, 101 with it off, same client). Collected right after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()


def run_worker(
    spec: dict[str, Any],
    log_name: str,
    timeout: float,
    env: dict[str, str] | None = None,
    module: str = "bench.worker",
) -> dict[str, Any]:
    with paused_gc():
        return collect_worker(spawn_worker(spec, log_name, env, module), timeout)


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else 0.0


def ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0


def now() -> float:
    return time.perf_counter()
