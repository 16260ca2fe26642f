"""Scenario "peers": issue 17's a/b/c/d, the two asyncio peers and the project in the same run.

For each scenario, one FakeDify (in this process, at the scenario's latency, no server-side
limits: the clients limit themselves and the server counts) serves, in turn and rotating the
order each repetition, the cookbook-style peer (``bench/baselines/cookbook_peer.py``), the tuned
asyncio peer (``bench/baselines/tuned_peer.py``) and the project (``bench.worker``'s batch over a
SQLite table). Every client is its own process; the peers read the same prompts from a JSONL
file and append results to one, the project reads and writes its table.

Per run: the client's rows/s, CPU µs/row (user + sys of its process), peak RSS, peak thread
count; the server's arrivals (worst 1 s and 60 s windows, windows over the limit, arrivals per
second) and FakeDify's CPU over the run, so a number that is really the fake's ceiling shows.
Ratios are of the medians over repetitions.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.baselines.peer_report import per_second, write_requests
from bench.common import (
    GENERATION_PATHS,
    fake_cpu_seconds,
    fake_cpu_view,
    make_prompt_table,
    prompt,
    ratio,
    run_worker,
    server_view,
    start_fake,
    work_dir,
)
from bench.config import BREAKDOWN_CLIENTS, FLOOR, FRAME, PEER_SCENARIOS, BenchConfig

PEER_MODULES = {
    "cookbook": "bench.baselines.cookbook_peer",
    "tuned": "bench.baselines.tuned_peer",
    FLOOR: "bench.baselines.transport_floor",
}
#: What is compared, per client: (key in a run's result, label).
METRICS = ("rows_per_second", "cpu_us_per_row", "peak_rss_mb", "threads_peak")


def bound(latency: float, concurrency: int, rpm: int) -> float | None:
    """min(RPM/60, concurrency/latency) rows/s; None when neither binds (latency 0, no RPM)."""
    limits = [rpm / 60.0] if rpm else []
    if latency > 0:
        limits.append(concurrency / latency)
    return min(limits) if limits else None


def _timeout(rows: int, rate: float | None) -> float:
    return rows / (rate or 300.0) * 4 + 90


def _prepare(
    name: str, scenario: str, fake: Any, rows: int, concurrency: int, rpm: int, rate: float | None
) -> tuple[dict[str, Any], str, float]:
    """(spec, worker module, timeout) of one client run; the project's table is made here, before
    the fake's CPU is metered."""
    work = work_dir()
    timeout = _timeout(rows, rate)
    if name in ("project", FRAME):  # the batch over a table, or the DataFrame path over a frame
        spec = {
            "url": fake.url,
            "key": fake.app("chat").key,
            "max_concurrency": concurrency,
            "pool_concurrency": concurrency,
            "rpm": rpm or None,
            "rss_interval": 1.0,
        }
        if name == FRAME:
            spec.update(kind="frame", rows=rows)
        else:
            spec.update(kind="batch", db=str(make_prompt_table(work / f"peers_{scenario}.db", rows)))
        return spec, "bench.worker", timeout
    results = work / f"peers_{scenario}_{name}_results.jsonl"
    results.write_text("")
    spec = {
        "url": fake.url,
        "key": fake.app("chat").key,
        "requests": str(work / f"peers_{scenario}_requests.jsonl"),
        "results": str(results),
        "concurrency": concurrency,
        "rpm": rpm or None,
        "timeout": timeout,
    }
    return spec, PEER_MODULES[name], timeout + 30


def _run_one(
    name: str, scenario: str, rep: int, fake: Any, rows: int, concurrency: int, rpm: int, rate: float | None
) -> dict[str, Any]:
    fake.reset()
    spec, module, timeout = _prepare(name, scenario, fake, rows, concurrency, rpm, rate)
    cpu0 = fake_cpu_seconds()
    client = run_worker(spec, f"peers_{scenario}_{name}_{rep}", timeout, module=module)
    fake_cpu = fake_cpu_seconds() - cpu0
    if "results" in spec:
        Path(spec["results"]).unlink(missing_ok=True)
    client.pop("fake_cpu", None)
    client.pop("rss_samples_s_rss_hwm_mb", None)
    launches = client.pop("launches_per_second", None)
    server = server_view(fake, rpm or None)
    records = fake.requests
    starts = sorted(r.started for r in records if r.path in GENERATION_PATHS)
    server["arrivals_per_second"] = per_second(starts, starts[0]) if starts else []
    # The fake burns CPU only while it serves: its share is over its own first-to-last request,
    # not the client's batch timer (which leaves out the pre-flight and may start late).
    served = max(r.ended for r in records) - min(r.started for r in records) if records else None
    out: dict[str, Any] = {
        "client": client,
        "server": server,
        "fake_cpu": {**fake_cpu_view(fake_cpu, served, fake.calls()), "served_seconds": served},
    }
    if launches is not None:
        out["client_launches_per_second"] = launches
    for key in METRICS:
        out[key] = client.get(key)
    out["succeeded"] = client.get("succeeded")
    out["bound_ratio"] = ratio(client.get("rows_per_second") or 0.0, rate) if rate else None
    return out


def _median(runs: list[dict[str, Any]], key: str, part: str | None = None) -> float | None:
    values = [(r[part] if part else r).get(key) for r in runs]
    numbers = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(numbers), 3) if numbers else None


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {key: _median(runs, key) for key in (*METRICS, "bound_ratio")}
    out["server_worst_1s"] = max((r["server"]["worst_1s"] for r in runs), default=None)
    out["server_worst_60s"] = max((r["server"]["worst_60s"] for r in runs), default=None)
    over = [r["server"].get("windows_over_60s") for r in runs if "windows_over_60s" in r["server"]]
    out["windows_over_60s"] = max(over) if over else None
    out["fake_share_of_one_core"] = max(
        (r["fake_cpu"].get("share_of_one_core") or 0.0 for r in runs), default=None
    )
    out["all_rows_answered"] = all(r["succeeded"] == r["client"].get("rows") for r in runs)
    return out


def _ratios(s: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    def rel(a: str, b: str, key: str) -> float | None:
        x, y = s.get(a, {}).get(key), s.get(b, {}).get(key)
        return ratio(x, y) if x is not None and y else None

    out = {
        "project_vs_tuned_cpu_per_row": rel("project", "tuned", "cpu_us_per_row"),
        "project_vs_cookbook_cpu_per_row": rel("project", "cookbook", "cpu_us_per_row"),
        "project_vs_tuned_rows_per_second": rel("project", "tuned", "rows_per_second"),
        "project_vs_cookbook_rows_per_second": rel("project", "cookbook", "rows_per_second"),
        "project_vs_tuned_peak_rss": rel("project", "tuned", "peak_rss_mb"),
        "project_vs_tuned_threads": rel("project", "tuned", "threads_peak"),
    }
    if FLOOR in s:
        out["project_vs_floor_rows_per_second"] = rel("project", FLOOR, "rows_per_second")
        out["floor_vs_tuned_cpu_per_row"] = rel(FLOOR, "tuned", "cpu_us_per_row")
        out["project_vs_floor_cpu_per_row"] = rel("project", FLOOR, "cpu_us_per_row")
    if FRAME in s:
        out["frame_vs_tuned_cpu_per_row"] = rel(FRAME, "tuned", "cpu_us_per_row")
        out["project_vs_frame_cpu_per_row"] = rel("project", FRAME, "cpu_us_per_row")
    return out


def peers(cfg: BenchConfig) -> dict[str, Any]:
    rows_of, repeats_of = dict(cfg.peer_rows), dict(cfg.peer_repeats)
    out: dict[str, Any] = {"clients": list(cfg.peer_clients)}
    for scenario in cfg.peer_scenarios:
        clients = tuple(c for c in cfg.peer_clients if scenario in BREAKDOWN_CLIENTS.get(c, (scenario,)))
        latency, concurrency, rpm = PEER_SCENARIOS[scenario]
        rows, repeats = rows_of[scenario], repeats_of.get(scenario, 1)
        rate = bound(latency, concurrency, rpm)
        write_requests(
            str(work_dir() / f"peers_{scenario}_requests.jsonl"), [(i, prompt(i)) for i in range(1, rows + 1)]
        )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
        fake = start_fake(latency, keep_records=None)
        try:
            for rep in range(repeats):
                order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                for name in order:
                    runs[name].append(_run_one(name, scenario, rep, fake, rows, concurrency, rpm, rate))
        finally:
            fake.stop()
        summary = {name: _summary(results) for name, results in runs.items()}
        out[scenario] = {
            "latency_s": latency,
            "concurrency": concurrency,
            "requests_per_minute": rpm or None,
            "rows": rows,
            "repeats": repeats,
            "bound_rows_per_second": round(rate, 2) if rate else None,
            "summary": summary,
            "ratios": _ratios(summary),
            "runs": runs,
        }
    return out
