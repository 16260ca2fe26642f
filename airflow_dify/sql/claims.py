"""Row claims: a run marks the rows it is about to call, so an overlapping run never asks them too.

A claim is two columns on the table that holds the results (``claimed_by``, ``claimed_until``):
the owner and a lease end in epoch seconds. Rows are claimed a page at a time in one short
transaction, the lease is renewed while the run lives, and writing a row's result releases its
claim in the same UPDATE. Columns rather than a side table: the claim is taken by the statement
that locks the row, released by the statement that writes it, and costs no join when selecting.

Owners: ``<scope>:<try>:<nonce>``. A scope names what may take the claim over at once: an Airflow
task instance (dag, task, run, map index), so its next try resumes the rows of a try that crashed
without waiting for the lease (Airflow runs one try of a task instance at a time). Claims of other
owners are skipped and counted until their lease ends (about a minute after a crash).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Lease of a claim; renewed every third of it while the run is alive.
DEFAULT_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds claims: ``scope`` may take over its own earlier claims; ``token`` is this run."""

    scope: str
    token: str

    @classmethod
    def for_task(cls, dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> ClaimOwner:
        """One Airflow task instance; each try gets its own token under the same scope."""
        raw = f"{dag_id}\0{task_id}\0{run_id}\0{map_index}".encode()
        scope = hashlib.sha256(raw).hexdigest()[:24]
        return cls(scope, f"{scope}:{try_number}:{uuid.uuid4().hex[:12]}")

    @classmethod
    def named(cls, name: str) -> ClaimOwner:
        """A job of your own naming (a script run by cron): each run takes over what an earlier
        run of the same name left claimed when it crashed. Never share a name between jobs that
        may run at the same time."""
        scope = hashlib.sha256(f"named\0{name}".encode()).hexdigest()[:24]
        return cls(scope, f"{scope}:0:{uuid.uuid4().hex[:12]}")

    @classmethod
    def anonymous(cls) -> ClaimOwner:
        """A plain script or notebook run: takes over nothing but its own claims."""
        scope = uuid.uuid4().hex[:24]
        return cls(scope, f"{scope}:1:{uuid.uuid4().hex[:12]}")

    def may_take(self, claimed_by: Any, claimed_until: Any, now: float) -> bool:
        """Whether a row with this claim state may be claimed by this owner now."""
        if claimed_by is None or claimed_until is None:
            return True
        if str(claimed_by).startswith(self.scope + ":"):
            return True
        try:
            return float(claimed_until) < now
        except (TypeError, ValueError):
            return True  # an unreadable lease cannot protect anything


@dataclass
class HeldClaims:
    """The ids this run has claimed and not written yet, and when to renew their lease.

    :param lease: seconds a claim lasts without renewal.
    :param clock: epoch seconds (claims are compared across processes and machines).
    """

    lease: float = DEFAULT_LEASE_SECONDS
    clock: Callable[[], float] = time.time
    ids: dict[Any, None] = field(default_factory=dict)
    renewed_at: float = 0.0

    def until(self) -> float:
        """The lease end for a claim taken or renewed now."""
        return self.clock() + self.lease

    def took(self, ids: Iterable[Any]) -> None:
        now = self.clock()
        if not self.ids:
            self.renewed_at = now
        self.ids.update(dict.fromkeys(ids))

    def wrote(self, ids: Iterable[Any]) -> None:
        for row_id in ids:
            self.ids.pop(row_id, None)

    def due(self) -> bool:
        """Renew once a third of the lease has passed (two more chances before it ends)."""
        return bool(self.ids) and self.clock() - self.renewed_at >= self.lease / 3

    def renewing(self) -> list[Any]:
        self.renewed_at = self.clock()
        return list(self.ids)


def batches(values: list[Any], size: int = 500) -> Iterable[list[Any]]:
    """``IN (...)`` lists of at most ``size`` values (every engine has a parameter limit)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


__all__ = ["DEFAULT_LEASE_SECONDS", "ClaimOwner", "HeldClaims", "batches"]
