"""Where the client's CPU per row goes: a cost breakdown and a cProfile of the batch hot path.

Runs inside a ``bench.worker`` process against FakeDify (latency 0) in the bench process. Each
breakdown line is CPU µs per call of one layer measured alone, sequentially, so the layers can be
compared: engine + SQL without HTTP, raw ``requests``, raw ``urllib3``, the full ``DifyClient``
call, and the same with ``trust_env`` off (to price requests' per-call proxy/.netrc lookups).
The cProfile covers every thread of a real run_table_batch (py-spy/pyinstrument are not installed).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

GROUPS = (  # first match wins: (label, substrings of "file:line(function)")
    ("sockets (send/recv syscalls)", ("_socket.socket", "select.poll", "socket.py")),
    ("urllib3 (pool, connection)", ("urllib3/",)),
    ("http.client + email header parsing", ("http/client.py", "email/", "urllib/parse.py")),
    ("json encode/decode", ("json/",)),
    ("tenacity + retry policy", ("tenacity/", "retry.py", "random.py")),
    ("airflow_dify.client (parse, usage, Decimal)", ("airflow_dify/client/",)),
    ("airflow_dify.limits", ("airflow_dify/limits/",)),
    (
        "engine + SQL (airflow_dify.batch, airflow_dify.sql, sqlite3)",
        ("airflow_dify/batch/", "airflow_dify/sql/", "sqlite3"),
    ),
    ("threads/queues/futures", ("threading.py", "queue.py", "concurrent/", "_queue", "_thread")),
)


INCLUSIVE = (  # (label, file suffix, function): CPU per row including everything each one calls
    ("call_row (one row: build + client call + outcome)", "airflow_dify/batch/calls.py", "call_row"),
    ("  DifyClient.call", "airflow_dify/client/client.py", "call"),
    ("    Urllib3Transport.send", "airflow_dify/client/urllib3_transport.py", "send"),
    ("      urllib3 urlopen (socket I/O, http.client)", "urllib3/connectionpool.py", "urlopen"),
    ("    json_body (decode, status checks)", "airflow_dify/client/responses.py", "json_body"),
    ("  PromptBuilder.build", "airflow_dify/batch/rows.py", "build"),
    ("  outcome_from_result", "airflow_dify/batch/calls.py", "outcome_from_result"),
    ("SqlTable.write_results (per group)", "airflow_dify/sql/table.py", "write_results"),
    ("SqlTable._pages (reads and claims)", "airflow_dify/sql/table.py", "_pages"),
)


def _cpu_per_call(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm up: connection, caches
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def breakdown(url: str, key: str, n: int) -> dict[str, float]:
    """CPU µs per call for each layer, one thread, keep-alive connection, latency-0 server."""
    import urllib3

    from airflow_dify.client import DifyClient
    from airflow_dify.client.retry import RetryPolicy, call_with_retries
    from airflow_dify.client.transport import Request
    from airflow_dify.client.urllib3_transport import Urllib3Transport

    body = {
        "query": "Question #1: ok?",
        "inputs": {},
        "user": "bench",
        "response_mode": "blocking",
        "auto_generate_name": False,
    }
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    out: dict[str, float] = {}
    http = urllib3.PoolManager(maxsize=4)
    payload = json.dumps(body).encode()
    out["urllib3.PoolManager.request + json.loads"] = _cpu_per_call(
        lambda: json.loads(http.request("POST", f"{url}/chat-messages", body=payload, headers=headers).data),
        n,
    )
    http.clear()
    transport = Urllib3Transport(pool_size=4)
    request = Request("POST", f"{url}/chat-messages", headers, payload, (10.0, 300.0), "bench")
    out["Urllib3Transport.send + json.loads"] = _cpu_per_call(
        lambda: json.loads(transport.send(request).body), n
    )
    transport.close()
    client = DifyClient(url, key, pool_size=4)
    out["DifyClient.call"] = _cpu_per_call(
        lambda: client.call("chat", query="Question #1: ok?", user="bench"), n
    )
    client.close()
    policy = RetryPolicy()
    out["call_with_retries(tenacity) around a no-op"] = _cpu_per_call(
        lambda: call_with_retries(policy, "noop", lambda: None), n
    )
    return {k: round(v, 1) for k, v in out.items()}


class _Client:
    """Stands in for DifyClient in the batch: ``call`` runs ``fn`` (a canned result, or the real
    client's call under a profiler), so the rest of the path is exactly the shipped one."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def info(self) -> Any:
        from airflow_dify.client.models import AppInfo

        return AppInfo(name="bench", mode="chat")

    def parameters(self) -> dict[str, Any]:
        return {"user_input_form": []}

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)


def engine_sql_only(spec: dict[str, Any], result: Any) -> float:
    """CPU µs per row of run_batch + SQL read/write when every call returns a canned result."""
    from airflow_dify.batch.run import run_batch
    from bench.worker import open_batch

    pool, client, table, options = open_batch(spec)
    table.ensure_result_columns()
    t0 = time.process_time()
    summary = run_batch(table, table, _Client(lambda *a, **k: result), options)
    cpu = time.process_time() - t0
    client.close()
    table.close()
    return round(cpu / max(summary.processed, 1) * 1e6, 1)


def _group(key: tuple[str, int, str]) -> str:
    where = f"{key[0]}:{key[1]}({key[2]})"
    for label, needles in GROUPS:
        if any(n in where for n in needles):
            return label
    return "other"


def profiled_batch(spec: dict[str, Any], canned: Any = None, top: int = 20) -> dict[str, Any]:
    """cProfile every thread of one run_batch: the main thread plus one profiler per pool
    thread, each timed by its own thread's CPU clock, so blocking in recv/sleep costs nothing.
    With ``canned``, every call returns that result instead of going over HTTP."""
    from airflow_dify.batch.run import run_batch
    from bench.worker import open_batch

    pool, client, table, options = open_batch(spec)
    call = client.call if canned is None else (lambda *a, **k: canned)
    table.ensure_result_columns()
    profiles: dict[int, cProfile.Profile] = {}
    lock = threading.Lock()

    def profiled(*args: Any, **kwargs: Any) -> Any:
        ident = threading.get_ident()
        prof = profiles.get(ident)
        if prof is None:
            with lock:
                prof = profiles[ident] = cProfile.Profile(time.thread_time)
        return prof.runcall(call, *args, **kwargs)

    main = cProfile.Profile(time.thread_time)
    main.enable()
    summary = run_batch(table, table, _Client(profiled), options)
    main.disable()
    client.close()
    table.close()
    stats = pstats.Stats(main, *profiles.values())
    rows = max(summary.processed, 1)
    groups: dict[str, float] = defaultdict(float)
    entries = []
    for key, (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        groups[_group(key)] += tottime
        name = f"{key[0].rsplit('site-packages/', 1)[-1]}:{key[1]}({key[2]})"
        entries.append((tottime, ncalls, cumtime, name))
    entries.sort(reverse=True)
    total = sum(groups.values()) or 1.0
    inclusive = {}
    for label, suffix, func in INCLUSIVE:
        cum = sum(
            v[3]
            for k, v in stats.stats.items()
            if k[0].endswith(suffix) and k[2] == func  # type: ignore[attr-defined]
        )
        if cum:
            inclusive[label] = round(cum / rows * 1e6, 1)
    return {
        "rows": summary.processed,
        "note": "thread CPU time; cProfile inflates absolute times: use the shares, and the breakdown for µs",
        "profiled_cpu_us_per_row": round(total / rows * 1e6, 1),
        "inclusive_us_per_row": inclusive,
        "groups_share": {k: round(v / total, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_tottime": [
            {
                "function": name,
                "calls_per_row": round(nc / rows, 2),
                "tottime_us_per_row": round(t / rows * 1e6, 1),
            }
            for t, nc, _c, name in entries[:top]
        ],
    }


def profile_client(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_dify.client import DifyClient

    client = DifyClient(spec["url"], spec["key"])
    sample = client.call("chat", query="Question #0: ok?", user="bench")
    client.close()
    engine_spec = {**spec, "db": spec["db_engine"]}
    return {
        "breakdown_cpu_us_per_call": breakdown(spec["url"], spec["key"], int(spec["calls"])),
        "engine_sql_only_cpu_us_per_row": engine_sql_only(engine_spec, sample),
        "cprofile": profiled_batch(spec),
        "cprofile_engine_sql_only": profiled_batch(
            {**engine_spec, "db": spec["db_engine2"]},
            canned=sample,
            top=12,
        ),
    }
