"""Group commits: answered rows are written together, by count or by age, not one by one.

Each commit is a transaction (and on SQLite an fsync), so committing whatever completed at each
moment spends CPU on commit bookkeeping at high rates (773 commits for 5,000 rows at latency 0 and
concurrency 16). Rows wait here until ``commit_rows`` are ready or the oldest has waited
``commit_seconds``, then go in one transaction. The price is the crash bound: a crash (even
SIGKILL) loses at most ``max_concurrency`` calls in flight plus ``commit_rows - 1`` answers
waiting here; a re-run asks those rows again (with ``user_per_row`` it looks them up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from airflow_dify.batch.summary import BatchSummary
from airflow_dify.outcome import RowOutcome

if TYPE_CHECKING:
    from airflow_dify.batch.run import ResultSink

#: Measured at bench scenario b (latency 0, concurrency 16, SQLite, 5,000 rows, median of 3):
#: committing each completion group: 1,015 µs CPU/row, 521 rows/s, 773 commits; 64 rows or 50 ms:
#: 680-697 µs/row, 792-812 rows/s, ~90 commits. 128/0.1 s and 256/0.25 s measured no better
#: (within noise) while holding answers longer, so 64 rows it is. At a limited rate the age
#: decides instead: at RPM 6,000 (scenario d, 6,600 rows) 50 ms made 1,436 commits of ~5 rows and
#: 1,567 µs CPU/row; 0.5 s makes 138 commits and 1,107-1,113 µs/row (fewer fsyncs, and the engine
#: wakes the caller ~8 times a second instead of ~80: it holds completions ``commit_seconds / 4``).
#: The crash bound is in rows, so the longer age does not widen it.
DEFAULT_COMMIT_ROWS = 64
DEFAULT_COMMIT_SECONDS = 0.5


def save_margin(concurrency: int, commit_rows: int) -> int:
    """How close to the crash bound the unsaved count may come before a group is saved early.

    At the bound every slot waits until the caller has committed and released rows, so a commit
    that starts only there stalls every call for its hops and its fsync (scenario a, latency 50 ms,
    concurrency 16: 0.956 of the bound with the stall, 0.966 without). Saving a quarter of a
    group early (at most one wave of ``concurrency``) keeps the slots sending meanwhile.
    """
    return min(concurrency, commit_rows // 4)


class GroupCommit:
    """Answered rows not yet saved; :meth:`flush` writes them in one ``sink`` call.

    ``ledger_only`` rows (held back by the circuit breaker, maybe billed) ride in the same commit,
    so their ledger entries are as durable as the results.
    """

    def __init__(
        self,
        sink: ResultSink,
        summary: BatchSummary,
        *,
        rows: int = DEFAULT_COMMIT_ROWS,
        seconds: float = DEFAULT_COMMIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink, self.summary = sink, summary
        self.rows, self.seconds, self._clock = rows, seconds, clock
        self._saved: list[RowOutcome] = []
        self._ledger_only: list[RowOutcome] = []
        self._oldest: float | None = None

    @property
    def pending(self) -> int:
        """Answers waiting to be written (a crash would lose these)."""
        return len(self._saved) + len(self._ledger_only)

    def add(
        self, saved: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = (), since: float | None = None
    ) -> None:
        """Rows to save; ``since``: when the oldest of them was answered (``clock`` time; default
        now), so ``seconds`` counts from the answer, not from when it reached us."""
        if not saved and not ledger_only:
            return
        arrived = self._clock() if since is None else since
        if self._oldest is None or arrived < self._oldest:
            self._oldest = arrived
        self._saved.extend(saved)
        self._ledger_only.extend(ledger_only)

    def due(self) -> bool:
        """Enough rows, or the oldest has waited long enough."""
        if self._oldest is None:
            return False
        return self.pending >= self.rows or self._clock() - self._oldest >= self.seconds

    def wait_limit(self, longest: float) -> float:
        """How long the caller may block for more completions before this group is due."""
        if self._oldest is None:
            return longest
        return max(0.0, min(longest, self._oldest + self.seconds - self._clock()))

    def flush(self) -> int:
        """Write what is waiting in one transaction (kept for the next flush if the sink raises);
        returns how many rows it wrote (ledger-only rows included)."""
        if self._oldest is None:
            return 0
        saved, held = self._saved, self._ledger_only
        if held:
            self.sink.write_results(saved, held)
        else:
            self.sink.write_results(saved)
        self._saved, self._ledger_only, self._oldest = [], [], None
        self.summary.commits += 1
        for outcome in saved:
            self.summary.add(outcome)
        return len(saved) + len(held)


__all__ = ["DEFAULT_COMMIT_ROWS", "DEFAULT_COMMIT_SECONDS", "GroupCommit", "save_margin"]
