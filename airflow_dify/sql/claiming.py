"""The SQL of row claims: take a page's rows, renew their lease, give back what was not written.

See :mod:`airflow_dify.sql.claims` for what a claim is and who may take one over.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow_dify.sql.claims import ClaimOwner, HeldClaims, batches
from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.params import Params
from airflow_dify.sql.selection import status_terms

log = logging.getLogger("airflow_dify.sql.table")


class Claimer:
    """Claims on one table (the one that holds results) for one run.

    :param q_store: quoted table; ``q_id``, ``q_by``, ``q_until``, ``q_answered_at`` its columns.
    :param run_started: rows answered after this were answered by an overlapping run: not taken.
    """

    def __init__(
        self,
        db: SqlConnection,
        q_store: str,
        q_id: str,
        q_by: str,
        q_until: str,
        q_answered_at: str,
        owner: ClaimOwner,
        held: HeldClaims,
        run_started: dt.datetime,
    ) -> None:
        self.db, self.q_store, self.q_id = db, q_store, q_id
        self.q_by, self.q_until, self.q_answered_at = q_by, q_until, q_answered_at
        self.owner, self.held, self.run_started = owner, held, run_started

    def claimable_sql(self, params: Params, redo: str, q_status: str | None, now: float) -> str:
        """Still takeable and still to do, re-checked under the row lock: another run may have
        claimed, answered and released a row since its page was read."""
        by, until = self.q_by, self.q_until
        free = (
            f"({by} IS NULL OR {until} IS NULL OR {until} < {params.add(now)} "
            f"OR {by} LIKE {params.add(self.owner.scope + ':%')})"
        )
        terms = [free, *status_terms(params, redo, q_status)]
        answered = self.q_answered_at
        started = self.db.dialect.adapt("answered_at", self.run_started)
        terms.append(f"({answered} IS NULL OR {answered} < {params.add(started)})")
        return " AND ".join(terms)

    def claim(self, cur: Any, ids: list[Any], redo: str, q_status: str | None, now: float) -> set[Any]:
        """Claim ``ids`` inside the page's transaction (cursor ``cur``); return the ids now ours."""
        d, i, store = self.db.dialect, self.q_id, self.q_store
        params = Params(d, None)
        owner, lease = params.add(self.owner.token), params.add(self.held.until())
        mark = f"UPDATE {store} SET {self.q_by} = {owner}, {self.q_until} = {lease}"
        # Placeholders are added in the order they appear in the text.
        if d.name == "sqlite":  # BEGIN IMMEDIATE holds the write lock since the page was read
            cur.execute(f"{mark} WHERE {i} IN ({params.many(ids)})", params.values)
            return set(ids)
        if d.skip_locked:
            lock = Params(d, None)
            in_ids = lock.many(ids)
            cond = self.claimable_sql(lock, redo, q_status, now)
            cur.execute(
                f"SELECT {i} FROM {store} WHERE {i} IN ({in_ids}) AND {cond}{d.skip_locked}", lock.values
            )
            got = [r[0] for r in cur.fetchall()]
            if got:
                cur.execute(f"{mark} WHERE {i} IN ({params.many(got)})", params.values)
            return set(got)
        in_ids = params.many(ids)  # generic: optimistic, then read back which rows are ours
        cond = self.claimable_sql(params, redo, q_status, now)
        cur.execute(f"{mark} WHERE {i} IN ({in_ids}) AND {cond}", params.values)
        check = Params(d, None)
        mine = f"{i} IN ({check.many(ids)}) AND {self.q_by} = {check.add(self.owner.token)}"
        cur.execute(f"SELECT {i} FROM {store} WHERE {mine}", check.values)
        return {r[0] for r in cur.fetchall()}

    def _set_lease(self, ids: list[Any], lease: float | None) -> None:
        """Renew (``lease``) or drop (None) this run's claims on ``ids``."""
        for part in batches(ids):
            params = Params(self.db.dialect, None)
            if lease is None:
                sets = f"{self.q_until} = NULL, {self.q_by} = NULL"
            else:
                sets = f"{self.q_until} = {params.add(lease)}"
            mine = f"{self.q_by} = {params.add(self.owner.token)} AND {self.q_id} IN ({params.many(part)})"
            self.db.execute_commit(f"UPDATE {self.q_store} SET {sets} WHERE {mine}", params.values)

    def heartbeat(self) -> None:
        """Renew the lease of this run's unwritten claims when a third of it has passed."""
        if self.held.due():
            self._set_lease(self.held.renewing(), self.held.until())

    def release(self, table: str) -> None:
        """Give back claims on rows this run took but never wrote (stopped, budget, killed)."""
        ids = list(self.held.ids)
        if not ids:
            return
        try:
            self._set_lease(ids, None)
            self.held.wrote(ids)
        except Exception as exc:  # noqa: BLE001 - the leases expire by themselves
            log.warning(
                "table %s: releasing %d claim(s) failed (%s); they expire", table, len(ids), error_brief(exc)
            )


__all__ = ["Claimer"]
