"""The batch engine on its own: in-memory rows, a scripted client, no HTTP, no SQL, no Airflow.

These run in milliseconds and pin the engine's promises: rows started but unsaved never more than
``max_concurrency + commit_rows - 1`` (what a crash may repeat), results saved in completion order in
group commits, the
budget cap and the stop signal stop new calls while in-flight ones are saved, a bad row or a bug
fails only its row.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest

from airflow_dify.batch.collector import YOUNG_THRESHOLD
from airflow_dify.batch.commits import save_margin
from airflow_dify.batch.engine import StopSignal
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import run_batch
from airflow_dify.client.models import AppInfo, DifyResult, Usage
from airflow_dify.outcome import STATUS_KEY, RowOutcome

WAIT = 5.0  # seconds: the longest any scripted call may block (each test ends far sooner)


class Rows:
    """A list of prompt rows as source and sink; records each write and what was in flight then."""

    id_column = "id"

    def __init__(self, n: int, client: ScriptedClient) -> None:
        self.rows = [{"id": i, "prompt": f"p{i}"} for i in range(1, n + 1)]
        self.client = client
        self.saved: dict[int, RowOutcome] = {}
        self.writes: list[list[int]] = []
        #: rows started but not saved, seen at each write (before it lands)
        self.outstanding_at_write: list[int] = []
        self.skipped_unchanged = 0
        self.skipped_claimed = 0

    def heartbeat(self) -> None:
        return None

    def prepare(
        self, read_columns: Sequence[str], current_hash: Callable[..., Any], outputs: Any = None
    ) -> None:  # noqa: E501
        assert list(read_columns) == ["prompt"]
        assert not outputs

    def count_todo(self, **_: Any) -> int:
        return len(self.rows)

    def iter_chunks(self, chunk_size: int, **_: Any) -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(self.rows), chunk_size):
            yield [{**r, STATUS_KEY: None} for r in self.rows[start : start + chunk_size]]

    def bind_app(self, app_mode: str, workflow_id: str | None) -> None:
        self.app = (app_mode, workflow_id)

    def write_results(self, outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        self.ledger_only = [*getattr(self, "ledger_only", []), *ledger_only]
        self.outstanding_at_write.append(self.client.started - len(self.saved))
        ids = [o.row_id for o in outcomes]
        assert not set(ids) & set(self.saved), "a row was written twice"
        self.writes.append(ids)
        self.saved.update({o.row_id: o for o in outcomes})


class ScriptedClient:
    """Answers ``p<i>`` with ``a<i>``, 100 tokens and 0.01 USD; ``hook(i)`` runs inside the call."""

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        self.hook = hook
        self.lock = threading.Lock()
        self.started = 0
        self.queries: list[str] = []

    def info(self) -> AppInfo:
        return AppInfo(name="scripted", mode="chat")

    def parameters(self) -> dict[str, Any]:
        return {"user_input_form": []}

    def call(self, family: str, *, query: str | None, **_: Any) -> DifyResult:
        assert query is not None
        with self.lock:
            self.started += 1
            self.queries.append(query)
        i = int(query[1:])
        if self.hook is not None:
            self.hook(i)
        usage = Usage(total_tokens=100, total_price=Decimal("0.01"), currency="USD")
        return DifyResult(mode="chat", answer=f"a{i}", usage=usage)


def run(rows: Rows, stop: StopSignal | None = None, **options: Any) -> Any:
    opts = BatchOptions(app_mode="chat", user="u", progress_seconds=3600, **options)
    return run_batch(rows, rows, rows.client, opts, stop=stop)


def test_every_row_is_answered_once_and_saved_once() -> None:
    client = ScriptedClient()
    rows = Rows(57, client)
    summary = run(rows, max_concurrency=4, chunk_size=10)
    assert sorted(rows.saved) == list(range(1, 58))
    assert all(o.answer == f"a{i}" and o.status == "succeeded" for i, o in rows.saved.items())
    assert sorted(client.queries) == sorted(f"p{i}" for i in range(1, 58))
    assert summary.succeeded == 57 and summary.total_price == Decimal("0.57")


@pytest.mark.parametrize("commit_rows", [1, 5])
def test_unsaved_rows_never_exceed_the_crash_bound(commit_rows: int) -> None:
    """Calls finish in bursts: rows started but unsaved stay <= max_concurrency + commit_rows - 1."""
    gate = threading.Semaphore(0)

    def hook(i: int) -> None:
        gate.acquire(timeout=WAIT)

    client = ScriptedClient(hook)
    rows = Rows(40, client)
    done = threading.Event()

    def release() -> None:
        while not done.is_set():
            for _ in range(3):
                gate.release()
            done.wait(0.002)

    feeder = threading.Thread(target=release, daemon=True)
    feeder.start()
    try:
        summary = run(rows, max_concurrency=3, chunk_size=7, commit_rows=commit_rows, commit_seconds=60)
    finally:
        done.set()
        feeder.join(WAIT)
    assert len(rows.saved) == 40
    assert summary.crash_bound == 3 + commit_rows - 1
    assert max(rows.outstanding_at_write) <= summary.crash_bound


def test_answers_are_written_in_groups_of_commit_rows() -> None:
    client = ScriptedClient()
    rows = Rows(95, client)
    summary = run(rows, max_concurrency=4, chunk_size=10, commit_rows=10, commit_seconds=60)
    sizes = [len(w) for w in rows.writes]
    # Groups of about commit_rows: saved up to save_margin rows early near the crash bound of 13
    # (a completion racing the check may make one smaller), never over the bound.
    typical = 10 - 1 - save_margin(4, 10)
    assert max(sizes) <= 13 and sum(sizes) == 95, sizes
    assert len(sizes) <= math.ceil(95 / typical) + 2, sizes
    assert summary.commits == len(sizes) and summary.succeeded == 95


def test_a_failed_commit_keeps_its_answers_for_the_next_one() -> None:
    """The database refuses a commit once: the answers are still written before the error leaves."""
    client = ScriptedClient()
    rows = Rows(20, client)
    original = rows.write_results
    refused: list[int] = []

    def write(outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        if not refused:
            refused.extend(o.row_id for o in outcomes)
            raise ConnectionError("database went away")
        original(outcomes, ledger_only)

    rows.write_results = write  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        run(rows, max_concurrency=2, commit_rows=4, commit_seconds=60)
    assert refused and set(refused) <= set(rows.saved)  # paid answers not lost


@pytest.mark.parametrize(
    ("option", "value"), [("commit_rows", 0), ("commit_seconds", -1), ("commit_seconds", "1")]
)
def test_bad_commit_settings_name_the_option(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        BatchOptions(app_mode="chat", **{option: value})


def test_a_slow_call_does_not_hold_finished_rows_back() -> None:
    slow_may_finish = threading.Event()

    def hook(i: int) -> None:
        if i == 1:
            assert slow_may_finish.wait(WAIT)

    client = ScriptedClient(hook)
    rows = Rows(6, client)
    original = rows.write_results

    def write(outcomes: Sequence[RowOutcome]) -> None:
        original(outcomes)
        if len(rows.saved) == 5:  # rows 2..6 saved while row 1 is still running
            slow_may_finish.set()

    rows.write_results = write  # type: ignore[method-assign]
    run(rows, max_concurrency=6)
    flat = [i for group in rows.writes for i in group]
    assert flat[-1] == 1 and sorted(flat[:-1]) == [2, 3, 4, 5, 6]


def test_budget_cap_stops_new_calls_and_leaves_the_rest_pending() -> None:
    client = ScriptedClient()
    rows = Rows(50, client)
    summary = run(rows, max_concurrency=1, max_total_tokens=1000)
    assert client.started == len(rows.saved) == 10  # 10 x 100 tokens reaches the cap exactly
    assert summary.stopped == "budget" and "max_total_tokens=1,000" in (summary.stopped_reason or "")
    assert summary.to_dict()["stopped_reason"] == summary.stopped_reason


def test_price_cap_projects_in_flight_calls() -> None:
    client = ScriptedClient()
    rows = Rows(50, client)
    summary = run(rows, max_concurrency=4, max_total_price="0.105")
    assert summary.total_price <= Decimal("0.105")
    assert summary.stopped == "budget" and len(rows.saved) == client.started < 50


def test_stop_signal_saves_calls_in_flight_and_starts_no_more() -> None:
    stop = StopSignal()
    # The stop comes while the first three calls are all running, before any of them returns.
    in_flight = threading.Barrier(3, action=lambda: stop.stop("killed"), timeout=WAIT)

    def hook(i: int) -> None:
        if i <= 3:
            in_flight.wait()

    client = ScriptedClient(hook)
    rows = Rows(30, client)
    summary = run(rows, stop=stop, max_concurrency=3)
    assert summary.stopped == "killed"
    assert client.started == 3 and sorted(rows.saved) == [1, 2, 3]


def test_a_bad_row_and_a_bug_fail_only_their_row() -> None:
    def hook(i: int) -> None:
        if i == 4:
            raise KeyError("boom")

    client = ScriptedClient(hook)
    rows = Rows(6, client)
    rows.rows[1]["prompt"] = None  # row 2: NULL prompt, no call
    summary = run(rows, max_concurrency=2)
    assert rows.saved[2].status == "failed" and rows.saved[2].error_code == "empty_prompt"
    assert rows.saved[4].status == "failed" and rows.saved[4].error_code == "internal_error"
    assert summary.succeeded == 4 and summary.failed == 2
    assert "p2" not in client.queries and client.started == 5


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("redo", "sometimes", "redo must be one of"),
        ("chunk_size", 0, "chunk_size"),
        ("max_failed_ratio", 1.5, "max_failed_ratio"),
        ("max_total_price", "ten", "max_total_price"),
        ("shard", (3, 2), "shard"),
        ("result_columns", {"anwser": "x"}, "unknown key"),
        ("app_mode", "assistant", "app_mode must be one of"),
    ],
)
def test_bad_options_name_the_option(option: str, value: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        BatchOptions(**{option: value})


def test_options_coerce_friendly_forms() -> None:
    opts = BatchOptions(max_total_price=1.5, result_columns={"answer": "category"}, input_columns=None)  # type: ignore[arg-type]
    assert opts.max_total_price == Decimal("1.5") and opts.result_columns.answer == "category"
    assert opts.input_columns == {} and opts.concurrency == 8
    assert opts.replace(max_concurrency=3).concurrency == 3


def _keys(mapping: Mapping[str, Any]) -> set[str]:
    return set(mapping)


def test_summary_reports_what_was_saved() -> None:
    client = ScriptedClient()
    rows = Rows(3, client)
    result = run(rows).to_dict()
    assert result["succeeded"] == 3 and result["total_tokens"] == 300 and result["total_price"] == "0.03"
    assert {"rows_selected", "failed", "prompt_tokens", "completion_tokens", "currency"} <= _keys(result)


class BrokenSecondPage(Rows):
    """The second page cannot be read (a dropped connection, a bad cast in ``where``)."""

    def iter_chunks(self, chunk_size: int, **_: Any) -> Iterator[list[dict[str, Any]]]:
        yield [{**r, STATUS_KEY: None} for r in self.rows[:chunk_size]]
        raise RuntimeError("page 2 cannot be read")


def test_answers_running_when_a_page_read_fails_are_still_saved() -> None:
    """Money first: the calls running when ``drive`` stops on an error were paid for; close()
    lets them end, and their answers are written before the error goes on."""
    gate = threading.Event()

    def hook(i: int) -> None:
        if i != 1:  # row 1 ends at once: the caller reads page 2 while 2-5 are in flight
            gate.wait(timeout=WAIT)

    client = ScriptedClient(hook)
    rows = BrokenSecondPage(20, client)
    threading.Timer(1.0, gate.set).start()  # long after page 2 failed (~commit_seconds / 4)
    with pytest.raises(RuntimeError, match="page 2"):
        run(rows, max_concurrency=4, chunk_size=8)
    assert client.started == 5  # 1-4, then 5 from the ready rows when 1 ended; 6-8 never started
    assert sorted(rows.saved) == [1, 2, 3, 4, 5]
    assert all(o.answer == f"a{i}" for i, o in rows.saved.items())


def test_the_collector_is_quiet_while_calls_run_and_restored_after() -> None:
    """run_batch freezes what was alive before it and collects the young less often, only while
    it runs (see batch/collector.py)."""
    before = gc.get_threshold()
    during: list[tuple[int, int]] = []
    client = ScriptedClient(lambda i: during.append((gc.get_threshold()[0], gc.get_freeze_count())))
    rows = Rows(5, client)
    run(rows, max_concurrency=2)
    assert len(during) == 5
    assert all(threshold == YOUNG_THRESHOLD and frozen > 0 for threshold, frozen in during)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
