"""SQLite-file backend: processes on one machine (e.g. LocalExecutor tasks) share a budget.

One row per key holds the GCRA state; concurrency slots are rows ``(key, slot_id, expires_at)``.
Every grant is one ``BEGIN IMMEDIATE`` transaction (the write lock serialises grants across
processes; the clock is read after the lock is held). WAL + ``synchronous=NORMAL`` keep a grant at
tens of microseconds; a budget lost in a power cut only means a brief burst. One connection per
thread (sqlite3 connections must not be shared). The file must be on a local disk: SQLite locking
over NFS is unreliable. Times are ``time.time()``, comparable across processes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from airflow_dify.limits.base import PoolError, PoolSettings
from airflow_dify.limits.gcra import BudgetState, correct_tokens, reserve
from airflow_dify.limits.penalty import penalise
from airflow_dify.limits.pool import Busy, Clock, Grant, ReservingPool, Sleep, poll_delay

BUSY_TIMEOUT_S = 30.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS dify_pool_budget (
        key TEXT PRIMARY KEY, request_tat REAL NOT NULL, token_tat REAL NOT NULL,
        penalty_until REAL NOT NULL, penalty_step REAL NOT NULL, last_throttled REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dify_pool_slot (
        key TEXT NOT NULL, slot_id TEXT NOT NULL, expires_at REAL NOT NULL,
        PRIMARY KEY (key, slot_id))""",
)
_FIELDS = ("request_tat", "token_tat", "penalty_until", "penalty_step", "last_throttled")
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM dify_pool_budget WHERE key = ?"
_UPSERT = f"INSERT OR REPLACE INTO dify_pool_budget (key, {', '.join(_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?)"


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL, waiting out other processes doing the same.

    Changing the journal mode needs a moment of exclusive access and SQLite answers "database is
    locked" at once instead of honouring busy_timeout, so processes opening a new pool file
    together would fail; retry within the busy timeout. Once in WAL the mode sticks to the file.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(poll_delay(0.05))


class SqlitePool(ReservingPool):
    """Budget shared through a SQLite file.

    :param path: absolute path of the database file (created with its tables if missing).
    :param settings: limits; ``settings.key`` selects the row.
    :param clock: defaults to ``time.time`` (must be comparable across processes).
    :param sleep: defaults to ``time.sleep``.
    """

    def __init__(
        self, path: str, settings: PoolSettings, *, clock: Clock | None = None, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings, clock=clock or time.time, sleep=sleep or time.sleep)
        if not os.path.isdir(os.path.dirname(path) or "/"):
            raise PoolError(f"rate_limit_backend sqlite: directory of {path!r} does not exist")
        self._path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        with self._tx() as conn:
            for ddl in _SCHEMA:
                conn.execute(ddl)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                _enable_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise PoolError(f"rate_limit_backend sqlite: cannot open {self._path!r}: {exc}") from exc
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise PoolError(f"rate_limit_backend sqlite {self._path!r}: {exc}") from exc

    def _load(self, conn: sqlite3.Connection) -> BudgetState:
        row = conn.execute(_SELECT, (self.settings.key,)).fetchone()
        return BudgetState() if row is None else BudgetState(*row)

    def _save(self, conn: sqlite3.Connection, state: BudgetState) -> None:
        conn.execute(_UPSERT, (self.settings.key, *(getattr(state, f) for f in _FIELDS)))

    def _try_grant(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        key, cap = self.settings.key, self.settings.max_concurrency
        with self._tx() as conn:
            now = self._clock()  # read under the write lock: grants are ordered by it
            if cap is not None:
                conn.execute("DELETE FROM dify_pool_slot WHERE key = ? AND expires_at <= ?", (key, now))
                held, first = conn.execute(
                    "SELECT COUNT(*), MIN(expires_at) FROM dify_pool_slot WHERE key = ?", (key,)
                ).fetchone()
                if held >= cap:
                    return Busy(first - now)
            state = self._load(conn)
            start = reserve(state, self.rates, now, tokens, max_wait)
            if start is None:
                return None
            self._save(conn, state)
            slot_id = None
            if cap is not None:
                slot_id = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO dify_pool_slot (key, slot_id, expires_at) VALUES (?, ?, ?)",
                    (key, slot_id, start + self.settings.lease_seconds),
                )
            return Grant(slot_id, start - now)

    def _release(self, slot_id: str | None, token_delta: int) -> None:
        with self._tx() as conn:
            if slot_id is not None:
                conn.execute(
                    "DELETE FROM dify_pool_slot WHERE key = ? AND slot_id = ?", (self.settings.key, slot_id)
                )
            if token_delta:
                state = self._load(conn)
                correct_tokens(state, self.rates, self._clock(), token_delta)
                self._save(conn, state)

    def _penalise(self) -> float:
        with self._tx() as conn:
            now = self._clock()
            state = self._load(conn)
            until = penalise(state, now)
            self._save(conn, state)
        return until - now

    def _wait_for_slot(self, busy: Busy, seconds: float) -> None:
        self._sleep(poll_delay(seconds))

    # A grant is one short local transaction: run it in a worker thread (with that thread's own
    # connection) so the loop never waits on the file lock; the waits in between stay on the loop.
    async def _try_grant_async(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        return await asyncio.to_thread(self._try_grant, tokens, max_wait)

    async def _release_async(self, slot_id: str | None, token_delta: int) -> None:
        await asyncio.to_thread(self._release, slot_id, token_delta)

    async def _penalise_async(self) -> float:
        return await asyncio.to_thread(self._penalise)

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
