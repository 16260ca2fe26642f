"""quiet_collector: the collector's settings change only while a batch runs, and come back whole."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from airflow_dify.batch.collector import YOUNG_THRESHOLD, quiet_collector


@pytest.fixture(autouse=True)
def _clean_collector() -> Iterator[None]:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()
    gc.enable()


def test_inside_old_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    with quiet_collector():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_nested_and_concurrent_runs_share_one_change_until_the_last_ends() -> None:
    before = gc.get_threshold()
    inner_started, inner_may_end = threading.Event(), threading.Event()
    seen: list[int] = []

    def other_run() -> None:
        with quiet_collector():
            inner_started.set()
            inner_may_end.wait(5)
        seen.append(gc.get_threshold()[0])  # the first run still runs

    with quiet_collector():
        worker = threading.Thread(target=other_run)
        worker.start()
        assert inner_started.wait(5)
        with quiet_collector():
            pass
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # the nested run's end changed nothing
        inner_may_end.set()
        worker.join(5)
        assert seen == [YOUNG_THRESHOLD] and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_an_error_inside_still_restores() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), quiet_collector():
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_process_that_froze_its_own_objects_keeps_them_frozen() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with quiet_collector():
        assert gc.get_freeze_count() >= frozen
    assert gc.get_freeze_count() >= frozen  # not unfrozen by us


def test_a_disabled_collector_is_left_alone() -> None:
    gc.disable()
    before = gc.get_threshold()
    with quiet_collector():
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert not gc.isenabled() and gc.get_threshold() == before
