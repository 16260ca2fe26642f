"""Run the scenarios, print the table and write bench/results.json."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.common import REPO, machine_info, work_dir
from bench.config import PEER_CLIENTS, PEER_SCENARIOS, SCENARIOS, BenchConfig
from bench.scenario_baselines import baselines
from bench.scenario_peers import peers
from bench.scenario_server import server_rate
from bench.scenarios import bound_ratio, client_cost, memory, shared_pool

RUNNERS: dict[str, Callable[[BenchConfig], dict[str, Any]]] = {
    "server": server_rate,
    "peers": peers,
    "bound": bound_ratio,
    "cost": client_cost,
    "memory": memory,
    "baselines": baselines,
    "pool": shared_pool,
}
DEFAULT_OUT = REPO / "bench" / "results.json"


def run_suite(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every selected scenario in order; a failing one records its error and the rest still run."""
    work_dir()
    machine = machine_info()
    started = time.monotonic()
    results: dict[str, Any] = {}
    for name in cfg.scenarios:
        if time.monotonic() - started > cfg.deadline_seconds:
            results[name] = {"error": f"skipped: suite deadline of {cfg.deadline_seconds:.0f} s passed"}
            continue
        log(f"[bench] {name} ...")
        t0, load0 = time.monotonic(), os.getloadavg()[0]
        try:
            data = RUNNERS[name](cfg)
        except Exception as exc:  # record and go on: the other scenarios' numbers still count
            data = {"error": f"{type(exc).__name__}: {exc}"}
        data["seconds"] = round(time.monotonic() - t0, 1)
        # Other work on the machine skews every number: keep the 1-minute load next to them.
        data["loadavg_1m"] = {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)}
        data["machine"] = machine
        results[name] = data
        log(
            f"[bench] {name} done in {data['seconds']} s"
            + (f" (ERROR {data['error']})" if "error" in data else "")
        )
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "scenarios": results,
        "targets": targets(results, cfg),
    }


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def targets(results: dict[str, Any], cfg: BenchConfig) -> list[dict[str, Any]]:
    """One line per target: value, target, met (None when the value is missing)."""
    rows: list[tuple[str, str, Any, str, Callable[[Any], bool]]] = []
    r = results
    if "server" in r:
        for kind in cfg.server_kinds:
            check = (lambda x: x >= 3000) if kind == "asyncio" else (lambda x: True)
            rows.append(
                (
                    "0 server",
                    f"FakeDify {kind}: req/s per server CPU s",
                    _get(r, "server", kind, "requests_per_server_cpu_second", "median"),
                    ">= 3000" if kind == "asyncio" else "-",
                    check,
                )
            )
            rows.append(
                (
                    "0 server",
                    f"FakeDify {kind}: req/s (1 core)",
                    _get(r, "server", kind, "requests_per_second", "median"),
                    "-",
                    lambda x: True,
                )
            )
    if "peers" in r:
        rows += _peer_targets(r["peers"], cfg)
    if "bound" in r:
        for v in ("limited", "unlimited"):
            rows.append(
                (
                    "1 bound",
                    f"{v}: achieved/bound",
                    _get(r, "bound", v, "bound_ratio"),
                    ">= 0.97",
                    lambda x: x >= 0.97,
                )
            )
        for v in ("limited", "unlimited"):
            rows.append(
                (
                    "1 bound",
                    f"{v}: throughput with claims / without",
                    _get(r, "bound", "claims_throughput_ratio", v),
                    ">= 0.95",
                    lambda x: x >= 0.95,
                )
            )
        rows.append(
            (
                "1 bound",
                "limited: 60 s windows over RPM",
                _get(r, "bound", "limited", "server", "windows_over_60s"),
                "0",
                lambda x: x == 0,
            )
        )
        rows.append(
            (
                "1 bound",
                "limited: 1 s windows over RPM/60 (info)",
                _get(r, "bound", "limited", "server", "windows_over_1s"),
                "-",
                lambda x: True,
            )
        )
    if "cost" in r:
        rows.append(
            ("2 cost", "client CPU us/row", _get(r, "cost", "cpu_us_per_row"), "<= 400", lambda x: x <= 400)
        )
        rows.append(("2 cost", "rows/s (latency 0)", _get(r, "cost", "rows_per_second"), "-", lambda x: True))
    if "memory" in r:
        sizes = "/".join(f"{n:,}" for n in cfg.memory_rows)
        rows.append(
            (
                "3 memory",
                f"RSS diff MB ({sizes} rows)",
                _get(r, "memory", "rss_diff_mb"),
                "<= 50",
                lambda x: x <= 50,
            )
        )
        rows.append(
            ("3 memory", "RSS ratio large/small", _get(r, "memory", "rss_ratio"), "-", lambda x: True)
        )
    if "baselines" in r:
        for key, label in (
            ("operator_vs_seed", "operator / seed loop"),
            ("operator_vs_task_per_row", "operator / task-per-row"),
            ("operator_in_task_vs_seed", "operator in-task / seed loop (info)"),
        ):
            check = (lambda x: x >= 30) if "info" not in label else (lambda x: True)
            rows.append(
                (
                    "4 baselines",
                    label,
                    _get(r, "baselines", "ratios", key),
                    ">= 30" if "info" not in label else "-",
                    check,
                )
            )
        for name in ("seed_loop", "task_per_row", "operator"):
            rows.append(
                (
                    "4 baselines",
                    f"{name} rows/s",
                    _get(r, "baselines", name, "rows_per_second"),
                    "-",
                    lambda x: True,
                )
            )
    if "pool" in r:
        for b in cfg.pool_backends:
            rows.append(
                (
                    "5 pool",
                    f"{b}: achieved/limit",
                    _get(r, "pool", b, "achieved_over_limit"),
                    ">= 0.95",
                    lambda x: x >= 0.95,
                )
            )
            rows.append(
                (
                    "5 pool",
                    f"{b}: 60 s windows over RPM",
                    _get(r, "pool", b, "server", "windows_over_60s"),
                    "0",
                    lambda x: x == 0,
                )
            )
            rows.append(
                (
                    "5 pool",
                    f"{b}: worst 1 s (pace {cfg.pool_rpm / 60:g}/s)",
                    _get(r, "pool", b, "server", "worst_1s"),
                    "-",
                    lambda x: True,
                )
            )
    out = []
    for scenario, metric, value, target, check in rows:
        met = (
            None if value is None or isinstance(value, str) else bool(check(value)) if target != "-" else None
        )
        out.append({"scenario": scenario, "metric": metric, "value": value, "target": target, "met": met})
    return out


def _peer_targets(
    p: dict[str, Any], cfg: BenchConfig
) -> list[tuple[str, str, Any, str, Callable[[Any], bool]]]:
    """Issue 17's done-when lines, and the peers' own numbers beside them (info)."""
    rows: list[tuple[str, str, Any, str, Callable[[Any], bool]]] = []
    info = lambda x: True  # noqa: E731 - a row without a target

    def s(sc: str, client: str, key: str) -> Any:
        return _get(p, sc, "summary", client, key)

    def q(sc: str, key: str) -> Any:
        return _get(p, sc, "ratios", key)

    if "a" in p:
        rows.append(
            (
                "a 50ms/16",
                "project achieved/bound",
                s("a", "project", "bound_ratio"),
                ">= 0.97",
                lambda x: x >= 0.97,
            )
        )
        rows.append(
            (
                "a 50ms/16",
                "project / cookbook rows/s",
                q("a", "project_vs_cookbook_rows_per_second"),
                ">= 1",
                lambda x: x >= 1,
            )
        )
        for peer in ("cookbook", "tuned", "floor"):
            rows.append(("a 50ms/16", f"{peer} achieved/bound", s("a", peer, "bound_ratio"), "-", info))
        floor = q("a", "project_vs_floor_rows_per_second")
        rows.append(("a 50ms/16", "project / transport floor rows/s", floor, "-", info))
    if "b" in p:
        rows.append(
            (
                "b 0ms/16",
                "project / tuned CPU per row",
                q("b", "project_vs_tuned_cpu_per_row"),
                "<= 0.8",
                lambda x: x <= 0.8,
            )
        )
        for client in ("project", "tuned", "cookbook", "floor", "frame"):
            rows.append(("b 0ms/16", f"{client} CPU us/row", s("b", client, "cpu_us_per_row"), "-", info))
        floor = q("b", "floor_vs_tuned_cpu_per_row")
        rows.append(("b 0ms/16", "transport floor / tuned CPU per row", floor, "-", info))
        table = q("b", "project_vs_frame_cpu_per_row")
        rows.append(("b 0ms/16", "project (SQL table) / frame (no table) CPU", table, "-", info))
    if "c" in p:
        rows.append(
            (
                "c 2s/1024",
                "project achieved/bound",
                s("c", "project", "bound_ratio"),
                ">= 0.95",
                lambda x: x >= 0.95,
            )
        )
        rows.append(
            (
                "c 2s/1024",
                "project / tuned peak RSS",
                q("c", "project_vs_tuned_peak_rss"),
                "<= 1.1",
                lambda x: x <= 1.1,
            )
        )
        rows.append(("c 2s/1024", "project threads (peak)", s("c", "project", "threads_peak"), "-", info))
        for peer in ("tuned", "cookbook"):
            rows.append(("c 2s/1024", f"{peer} achieved/bound", s("c", peer, "bound_ratio"), "-", info))
            rows.append(
                (
                    "c 2s/1024",
                    f"{peer} peak RSS MB / threads",
                    f"{s('c', peer, 'peak_rss_mb')} / {s('c', peer, 'threads_peak')}",
                    "-",
                    info,
                )
            )
    if "d" in p:
        per_second = PEER_SCENARIOS["d"][2] / 60
        rows.append(
            (
                "d RPM 6000",
                "project worst 1 s window",
                s("d", "project", "server_worst_1s"),
                f"<= {per_second + 1:g}",
                lambda x: x <= per_second + 1,
            )
        )
        rows.append(
            (
                "d RPM 6000",
                "project 60 s windows over RPM",
                s("d", "project", "windows_over_60s"),
                "0",
                lambda x: x == 0,
            )
        )
        rows.append(
            (
                "d RPM 6000",
                "project / tuned CPU per row",
                q("d", "project_vs_tuned_cpu_per_row"),
                "<= 1",
                lambda x: x <= 1,
            )
        )
        for peer in ("tuned", "cookbook"):
            rows.append(
                (
                    "d RPM 6000",
                    f"{peer} worst 1 s / 60 s windows over",
                    f"{s('d', peer, 'server_worst_1s')} / {s('d', peer, 'windows_over_60s')}",
                    "-",
                    info,
                )
            )
    for sc in cfg.peer_scenarios:
        share = max(
            (s(sc, c, "fake_share_of_one_core") or 0.0 for c in ("project", "tuned", "cookbook")), default=0.0
        )
        rows.append(
            (f"{sc} (fake)", "FakeDify CPU share of one core (max)", share, "< 0.8", lambda x: x < 0.8)
        )
    return rows


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'scenario':<12} {'metric':<44} {'value':>12} {'target':>8}  status"]
    lines.append("-" * len(lines[0]))
    for t in report["targets"]:
        value = t["value"]
        shown = (
            "n/a"
            if value is None
            else f"{value:,.3f}".rstrip("0").rstrip(".")
            if isinstance(value, float)
            else value
            if isinstance(value, str)
            else f"{value:,}"
        )
        status = {True: "ok", False: "MISS", None: ""}[t["met"]]
        lines.append(f"{t['scenario']:<12} {t['metric']:<44} {shown:>12} {t['target']:>8}  {status}")
    errors = [f"{k}: {v['error']}" for k, v in report["scenarios"].items() if "error" in v]
    errors += [
        f"pool/{b}: {v['error']}"
        for b, v in report["scenarios"].get("pool", {}).items()
        if isinstance(v, dict) and "error" in v
    ]
    m = report["machine"]
    loads = [v["loadavg_1m"]["end"] for v in report["scenarios"].values() if "loadavg_1m" in v]
    lines.append(
        f"1-min load average after each scenario: {loads} (2 cores: above ~2 the numbers are skewed)"
    )
    lines.append(
        f"machine: {m['cores']} cores, Python {m['python']}, Airflow {m['airflow']}; "
        f"suite {report['elapsed_seconds']} s"
    )
    lines += [f"ERROR {e}" for e in errors]
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, Path]:
    p = argparse.ArgumentParser(prog="python -m bench", description="airflow-provider-dify benchmarks")
    p.add_argument(
        "--smoke", "--quick", action="store_true", help="tiny sizes (seconds): checks the bench runs"
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--memory-rows", type=_ints, help="table sizes for scenario 3, e.g. 100000,1000000")
    p.add_argument("--bound-rows", type=int)
    p.add_argument("--cost-rows", type=int)
    p.add_argument("--baseline-rows", type=int)
    p.add_argument("--pool-rows", type=int)
    p.add_argument("--peer-scenarios", help="comma list of a, b, c, d (scenario peers)")
    p.add_argument("--peer-repeats", type=int, help="repetitions of every peer scenario")
    p.add_argument("--peers", help="comma list of cookbook, tuned, project (scenario peers' clients)")
    p.add_argument("--server-repeats", type=int, help="repetitions of each FakeDify server's rate run")
    p.add_argument("--pool-backends", help="comma list of sqlite, redis")
    p.add_argument("--redis-url")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile/breakdown of scenario 2")
    p.add_argument("--deadline", type=float, help="seconds after which remaining scenarios are skipped")
    p.add_argument("--airflow-home", type=Path, help="reuse this AIRFLOW_HOME for scenario 4")
    p.add_argument("--no-migrate", action="store_true", help="the --airflow-home DB is already migrated")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    cfg = BenchConfig.smoke() if a.smoke else BenchConfig()
    names = tuple(s.strip() for s in a.scenarios.split(",") if s.strip())
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    changes: dict[str, Any] = {"scenarios": names, "profile": cfg.profile and not a.no_profile}
    for field_name, value in (
        ("memory_rows", a.memory_rows),
        ("bound_rows", a.bound_rows),
        ("cost_rows", a.cost_rows),
        ("baseline_rows", a.baseline_rows),
        ("pool_rows", a.pool_rows),
        ("redis_url", a.redis_url),
        ("deadline_seconds", a.deadline),
    ):
        if value is not None:
            changes[field_name] = value
    if a.airflow_home is not None:
        changes["airflow_home"] = a.airflow_home
    changes["airflow_migrate"] = not a.no_migrate
    if a.peer_scenarios:
        chosen = tuple(x.strip() for x in a.peer_scenarios.split(",") if x.strip())
        if set(chosen) - set(PEER_SCENARIOS):
            p.error(f"unknown peer scenario(s) in {a.peer_scenarios!r}; choose from a, b, c, d")
        changes["peer_scenarios"] = chosen
    if a.peers:
        clients = tuple(x.strip() for x in a.peers.split(",") if x.strip())
        if set(clients) - set(PEER_CLIENTS):
            p.error(f"unknown peer client(s) in {a.peers!r}; choose from {', '.join(PEER_CLIENTS)}")
        changes["peer_clients"] = clients
    if a.peer_repeats is not None:
        changes["peer_repeats"] = tuple((name, a.peer_repeats) for name in PEER_SCENARIOS)
    if a.server_repeats is not None:
        changes["server_repeats"] = a.server_repeats
    if a.pool_backends:
        changes["pool_backends"] = tuple(b.strip() for b in a.pool_backends.split(",") if b.strip())
    if a.memory_rows is not None and len(a.memory_rows) < 2:
        p.error("--memory-rows needs at least two sizes")
    return replace(cfg, **changes), a.out


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    report = run_suite(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(format_table(report))
    print(f"results: {out}")
    failed = any("error" in v for v in report["scenarios"].values())
    return 1 if failed else 0
