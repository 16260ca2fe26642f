"""The bench at tiny sizes (seconds, no thresholds), so it cannot rot: every scenario runs through
the real CLI, against real FakeDify / SQLite / Redis / dag.test(), and writes the results shape."""

from __future__ import annotations

import json
from numbers import Number
from pathlib import Path
from typing import Any

import pytest

from bench.run import main


@pytest.fixture(autouse=True)
def _work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_DIFY_BENCH_WORK", str(tmp_path / "work"))


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "results.json"
    code = main(["--smoke", "--out", str(out), *args])
    report = json.loads(out.read_text())
    errors = {k: v["error"] for k, v in report["scenarios"].items() if "error" in v}
    assert code == 0 and not errors, errors
    assert {"cores", "python", "airflow"} <= report["machine"].keys()
    for data in report["scenarios"].values():
        assert data["machine"] == report["machine"]
    return report


def positive(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and value > 0


def test_bound_cost_memory(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--scenarios", "bound,cost,memory")
    s = report["scenarios"]
    for variant in ("limited", "unlimited"):
        run = s["bound"][variant]
        assert positive(run["bound_ratio"]) and run["client"]["succeeded"] == s["bound"]["rows"]
        assert run["server"]["admitted"] == s["bound"]["rows"]
    assert s["bound"]["limited"]["server"]["windows_over_60s"] == 0  # the RPM budget holds at the server
    assert positive(s["cost"]["cpu_us_per_row"]) and positive(s["cost"]["rows_per_second"])
    profile = s["cost"]["profile"]
    assert all(positive(v) for v in profile["breakdown_cpu_us_per_call"].values())
    assert positive(profile["engine_sql_only_cpu_us_per_row"]) and profile["cprofile"]["top_tottime"]
    assert [r["rows"] for r in s["memory"]["runs"]] == [200, 1000]
    assert all(r["succeeded"] == r["rows"] and positive(r["peak_rss_mb"]) for r in s["memory"]["runs"])
    assert positive(s["memory"]["rss_ratio"])
    metrics = {t["metric"] for t in report["targets"]}
    assert "client CPU us/row" in metrics and "limited: achieved/bound" in metrics


@pytest.mark.redis
def test_shared_pool_sqlite_and_redis(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--scenarios", "pool")
    pool = report["scenarios"]["pool"]
    for backend in ("sqlite", "redis"):
        assert "error" not in pool[backend], pool[backend]
        assert pool[backend]["succeeded"] == pool["rows"]
        assert positive(pool[backend]["achieved_over_limit"])
        assert (
            sorted(pool[backend]["per_process_rows"])
            and sum(pool[backend]["per_process_rows"]) == pool["rows"]
        )


@pytest.mark.usefixtures("airflow_db")
def test_baselines_seed_task_per_row_operator(tmp_path: Path, airflow_home: Path) -> None:
    report = run_bench(
        tmp_path, "--scenarios", "baselines", "--airflow-home", str(airflow_home), "--no-migrate"
    )
    b = report["scenarios"]["baselines"]
    for name in ("seed_loop", "task_per_row", "operator"):
        assert b[name]["succeeded"] == b["rows"], name
        assert positive(b[name]["rows_per_second"])
    assert b["task_per_row"]["task_instances"] == b["rows"] + 1
    assert b["operator"]["summary"]["succeeded"] == b["rows"]
    assert all(positive(v) for v in b["ratios"].values())


def test_server_rate_and_peers(tmp_path: Path) -> None:
    """FakeDify's own rate (both servers) and issue 17's a/b/c/d with the cookbook-style peer, the
    tuned peer and the project, at tiny sizes: every run answers every row and reports its CPU,
    memory, threads and the server's windows; no timing is asserted."""
    report = run_bench(tmp_path, "--scenarios", "server,peers")
    server = report["scenarios"]["server"]
    for kind in ("threaded", "asyncio"):
        assert server[kind]["errors"] == 0
        for key in ("requests_per_second", "requests_per_server_cpu_second", "server_cpu_us_per_request"):
            assert positive(server[kind][key]["median"]), (kind, key)
        assert all(run["ok"] == run["requests"] > 0 for run in server["runs"][kind])
    peers = report["scenarios"]["peers"]
    assert peers["clients"] == ["cookbook", "tuned", "project", "floor", "frame"]
    for name in ("a", "b", "c", "d"):
        sc = peers[name]
        assert (sc["bound_rows_per_second"] is None) == (name == "b")
        only = {"floor": ("a", "b"), "frame": ("b",)}  # the breakdown clients run there only
        clients = [c for c in peers["clients"] if name in only.get(c, (name,))]
        assert set(sc["runs"]) == set(clients)
        for client in clients:
            [run] = sc["runs"][client]
            assert run["succeeded"] == sc["rows"] == run["server"]["admitted"], (name, client)
            for key in ("rows_per_second", "cpu_us_per_row", "peak_rss_mb", "threads_peak"):
                assert positive(run[key]), (name, client, key)
            assert positive(run["fake_cpu"]["cpu_seconds"]) and "share_of_one_core" in run["fake_cpu"]
            assert sum(run["server"]["arrivals_per_second"]) == sc["rows"]
            assert sc["summary"][client]["all_rows_answered"]
            if client not in ("project", "frame"):
                assert sum(run["client_launches_per_second"]) == run["client"]["launches"] == sc["rows"]
        assert all(positive(v) for v in sc["ratios"].values()), sc["ratios"]
    assert peers["d"]["summary"]["tuned"]["windows_over_60s"] == 0  # tiny runs stay under the budget
    assert peers["c"]["runs"]["cookbook"][0]["client"]["event_loop"] == "asyncio"
    assert peers["c"]["runs"]["tuned"][0]["client"]["event_loop"] == "uvloop"
    metrics = {t["metric"] for t in report["targets"]}
    assert {"project / tuned CPU per row", "FakeDify asyncio: req/s per server CPU s"} <= metrics
    assert "transport floor / tuned CPU per row" in metrics
    assert positive(peers["b"]["ratios"]["floor_vs_tuned_cpu_per_row"])
    assert "project / transport floor rows/s" in metrics and "floor achieved/bound" in metrics
    assert positive(peers["a"]["ratios"]["project_vs_floor_rows_per_second"])
    assert positive(peers["a"]["summary"]["floor"]["bound_ratio"])
    assert "project (SQL table) / frame (no table) CPU" in metrics
    assert positive(peers["b"]["ratios"]["project_vs_frame_cpu_per_row"])
