"""What the bench's numbers are held against: one line per target (issue 17's done-when lines
among them) and the table ``python -m bench`` prints."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from bench.config import PEER_SCENARIOS, BenchConfig

#: (scenario, metric, value, target): the target's text is also its check (see :func:`met`).
Row = tuple[str, str, Any, str]


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def targets(results: dict[str, Any], cfg: BenchConfig) -> list[dict[str, Any]]:
    """One line per target: value, target, met (None when the value is missing)."""
    rows: list[Row] = []
    r = results
    if "server" in r:
        for kind in cfg.server_kinds:
            rows.append(
                (
                    "0 server",
                    f"FakeDify {kind}: req/s per server CPU s",
                    _get(r, "server", kind, "requests_per_server_cpu_second", "median"),
                    ">= 3000" if kind == "asyncio" else "-",
                )
            )
            rows.append(
                (
                    "0 server",
                    f"FakeDify {kind}: req/s (1 core)",
                    _get(r, "server", kind, "requests_per_second", "median"),
                    "-",
                )
            )
    if "peers" in r:
        rows += _peer_targets(r["peers"], cfg)
    if "bound" in r:
        for v in ("limited", "unlimited"):
            rows.append(("1 bound", f"{v}: achieved/bound", _get(r, "bound", v, "bound_ratio"), ">= 0.97"))
        for v in ("limited", "unlimited"):
            rows.append(
                (
                    "1 bound",
                    f"{v}: throughput with claims / without",
                    _get(r, "bound", "claims_throughput_ratio", v),
                    ">= 0.95",
                )
            )
        rows.append(
            (
                "1 bound",
                "limited: 60 s windows over RPM",
                _get(r, "bound", "limited", "server", "windows_over_60s"),
                "0",
            )
        )
        rows.append(
            (
                "1 bound",
                "limited: 1 s windows over RPM/60 (info)",
                _get(r, "bound", "limited", "server", "windows_over_1s"),
                "-",
            )
        )
    if "cost" in r:
        rows.append(("2 cost", "client CPU us/row", _get(r, "cost", "cpu_us_per_row"), "<= 400"))
        rows.append(("2 cost", "rows/s (latency 0)", _get(r, "cost", "rows_per_second"), "-"))
    if "memory" in r:
        sizes = "/".join(f"{n:,}" for n in cfg.memory_rows)
        rows.append(("3 memory", f"RSS diff MB ({sizes} rows)", _get(r, "memory", "rss_diff_mb"), "<= 50"))
        rows.append(("3 memory", "RSS ratio large/small", _get(r, "memory", "rss_ratio"), "-"))
    if "baselines" in r:
        for key, label in (
            ("operator_vs_seed", "operator / seed loop"),
            ("operator_vs_task_per_row", "operator / task-per-row"),
            ("operator_in_task_vs_seed", "operator in-task / seed loop (info)"),
        ):
            rows.append(
                (
                    "4 baselines",
                    label,
                    _get(r, "baselines", "ratios", key),
                    ">= 30" if "info" not in label else "-",
                )
            )
        for name in ("seed_loop", "task_per_row", "operator"):
            rows.append(("4 baselines", f"{name} rows/s", _get(r, "baselines", name, "rows_per_second"), "-"))
    if "pool" in r:
        for b in cfg.pool_backends:
            rows.append(
                ("5 pool", f"{b}: achieved/limit", _get(r, "pool", b, "achieved_over_limit"), ">= 0.95")
            )
            rows.append(
                (
                    "5 pool",
                    f"{b}: 60 s windows over RPM",
                    _get(r, "pool", b, "server", "windows_over_60s"),
                    "0",
                )
            )
            rows.append(
                (
                    "5 pool",
                    f"{b}: worst 1 s (pace {cfg.pool_rpm / 60:g}/s)",
                    _get(r, "pool", b, "server", "worst_1s"),
                    "-",
                )
            )
    return [
        {"scenario": scenario, "metric": metric, "value": value, "target": target, "met": met(target, value)}
        for scenario, metric, value, target in rows
    ]


def met(target: str, value: Any) -> bool | None:
    """Whether ``value`` meets ``target`` (``">= 0.97"``, ``"< 0.8"``, ``"0"``); None for ``"-"``
    (a number shown beside the targets) or a value that is missing or not a number."""
    if target == "-" or value is None or isinstance(value, str):
        return None
    op, _, bound = target.rpartition(" ")
    return bool(_COMPARE[op](value, float(bound)))


_COMPARE: dict[str, Callable[[Any, float], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    "": operator.eq,
}


def _peer_targets(p: dict[str, Any], cfg: BenchConfig) -> list[Row]:
    """Issue 17's done-when lines, and the peers' own numbers beside them (info)."""
    rows: list[Row] = []

    def s(sc: str, client: str, key: str) -> Any:
        return _get(p, sc, "summary", client, key)

    def q(sc: str, key: str) -> Any:
        return _get(p, sc, "ratios", key)

    if "a" in p:
        rows.append(("a 50ms/16", "project achieved/bound", s("a", "project", "bound_ratio"), ">= 0.97"))
        rows.append(
            ("a 50ms/16", "project / cookbook rows/s", q("a", "project_vs_cookbook_rows_per_second"), ">= 1")
        )
        for peer in ("cookbook", "tuned", "floor"):
            rows.append(("a 50ms/16", f"{peer} achieved/bound", s("a", peer, "bound_ratio"), "-"))
        floor = q("a", "project_vs_floor_rows_per_second")
        rows.append(("a 50ms/16", "project / transport floor rows/s", floor, "-"))
    if "b" in p:
        rows.append(
            ("b 0ms/16", "project / tuned CPU per row", q("b", "project_vs_tuned_cpu_per_row"), "<= 0.8")
        )
        for client in ("project", "tuned", "cookbook", "floor", "frame"):
            rows.append(("b 0ms/16", f"{client} CPU us/row", s("b", client, "cpu_us_per_row"), "-"))
        floor = q("b", "floor_vs_tuned_cpu_per_row")
        rows.append(("b 0ms/16", "transport floor / tuned CPU per row", floor, "-"))
        table = q("b", "project_vs_frame_cpu_per_row")
        rows.append(("b 0ms/16", "project (SQL table) / frame (no table) CPU", table, "-"))
    if "c" in p:
        rows.append(("c 2s/1024", "project achieved/bound", s("c", "project", "bound_ratio"), ">= 0.95"))
        rows.append(("c 2s/1024", "project / tuned peak RSS", q("c", "project_vs_tuned_peak_rss"), "<= 1.1"))
        rows.append(("c 2s/1024", "project threads (peak)", s("c", "project", "threads_peak"), "-"))
        for peer in ("tuned", "cookbook"):
            rows.append(("c 2s/1024", f"{peer} achieved/bound", s("c", peer, "bound_ratio"), "-"))
            rows.append(
                (
                    "c 2s/1024",
                    f"{peer} peak RSS MB / threads",
                    f"{s('c', peer, 'peak_rss_mb')} / {s('c', peer, 'threads_peak')}",
                    "-",
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
            )
        )
        rows.append(
            ("d RPM 6000", "project 60 s windows over RPM", s("d", "project", "windows_over_60s"), "0")
        )
        rows.append(
            ("d RPM 6000", "project / tuned CPU per row", q("d", "project_vs_tuned_cpu_per_row"), "<= 1")
        )
        for peer in ("tuned", "cookbook"):
            rows.append(
                (
                    "d RPM 6000",
                    f"{peer} worst 1 s / 60 s windows over",
                    f"{s('d', peer, 'server_worst_1s')} / {s('d', peer, 'windows_over_60s')}",
                    "-",
                )
            )
    for sc in cfg.peer_scenarios:
        share = max(
            (s(sc, c, "fake_share_of_one_core") or 0.0 for c in ("project", "tuned", "cookbook")), default=0.0
        )
        rows.append((f"{sc} (fake)", "FakeDify CPU share of one core (max)", share, "< 0.8"))
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
