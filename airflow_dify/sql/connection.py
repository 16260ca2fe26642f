"""One lazily opened, reusable DB-API connection with the housekeeping every statement needs.

Reads end their transaction at once (no snapshot or SQLite read lock is held while Dify calls
run); a failed statement is rolled back (PostgreSQL refuses everything after an error until
then); a connection that cannot even roll back is dropped and re-opened on next use.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow_dify.sql.dialects import Dialect, sqlite_text_factory

log = logging.getLogger(__name__)


def error_brief(exc: BaseException) -> str:
    """Driver error class and SQLSTATE only: driver messages can quote row values."""
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return f"{name} (SQLSTATE {sqlstate})" if sqlstate else name


class SqlConnection:
    """Owns the connection made by ``connect``; all use is serialised by ``lock``."""

    def __init__(self, connect: Callable[[], Any], dialect_name: str) -> None:
        self._connect = connect
        self._dialect_name = dialect_name
        self._conn: Any = None
        self._dialect: Dialect | None = None
        self.lock = threading.RLock()
        #: Open transaction() blocks (under ``lock``): a query inside one must not end it.
        self._depth = 0

    def get(self) -> tuple[Any, Dialect]:
        """The open connection and its dialect, connecting first if needed."""
        with self.lock:
            if self._conn is None:
                conn = self._connect()
                if self._dialect_name == "sqlite" and hasattr(conn, "text_factory"):
                    _prepare_sqlite(conn)
                elif getattr(conn, "autocommit", False) is True:
                    conn.autocommit = False  # a chunk write must be one transaction
                self._dialect = Dialect.for_connection(self._dialect_name, conn)
                self._conn = conn
            assert self._dialect is not None
            return self._conn, self._dialect

    @property
    def dialect_name(self) -> str:
        """The dialect this connection was made for (known before connecting)."""
        return self._dialect_name

    @property
    def dialect(self) -> Dialect:
        return self.get()[1]

    def discard(self) -> None:
        """Close and forget the connection (best effort: it may already be broken)."""
        with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    log.debug("closing a broken connection failed", exc_info=True)

    def rollback_quietly(self) -> None:
        """Roll back after a failure; drop the connection if even that fails."""
        with self.lock:
            if self._conn is None:
                return
            try:
                self._conn.rollback()
            except Exception:  # noqa: BLE001 - the next use reconnects
                self.discard()

    def _run(self, sql: str, params: Any, fetch: bool) -> tuple[list[tuple], list[str]]:
        with self.lock:
            conn, _ = self.get()
            try:
                cur = conn.cursor()
                try:
                    cur.execute(sql, params)
                    names = [d[0] for d in cur.description or ()]
                    rows = cur.fetchall() if fetch else []
                finally:
                    cur.close()
            except Exception:
                self.rollback_quietly()
                raise
            if self._depth:  # inside transaction(): its caller commits or rolls back
                return rows, names
            try:
                conn.rollback()  # end the read transaction now
            except Exception:
                self.discard()
                raise
            return rows, names

    def query(self, sql: str, params: Any = ()) -> list[tuple]:
        """Run a SELECT and return all its rows (callers page with LIMIT)."""
        return self._run(sql, params, fetch=True)[0]

    def column_names(self, sql: str) -> list[str]:
        """Names from the cursor description of ``sql`` (a ``WHERE 1=0`` probe)."""
        return self._run(sql, (), fetch=False)[1]

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one write transaction: committed on success, rolled back on error.

        SQLite starts it with ``BEGIN IMMEDIATE``: the write lock is taken before the first read,
        so a read-then-claim cannot interleave with another process doing the same.
        """
        with self.lock:
            conn, dialect = self.get()
            cur = conn.cursor()
            self._depth += 1
            try:
                if dialect.begin:
                    cur.execute(dialect.begin)
                yield cur
                conn.commit()
            except BaseException:
                self.rollback_quietly()
                raise
            finally:
                self._depth -= 1
                try:
                    cur.close()
                except Exception:  # noqa: BLE001 - a broken cursor on a discarded connection
                    log.debug("closing a cursor failed", exc_info=True)

    def execute_commit(self, sql: str, params: Any = None) -> int:
        """Run one statement in its own transaction; return the driver's rowcount (-1 unknown)."""
        with self.transaction() as cur:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, params)
            count = cur.rowcount
        return count if isinstance(count, int) else -1


def _md5_8(text: Any) -> int | None:
    """``int(md5(text)[:8], 16)``, the stable shard hash the other engines compute in SQL."""
    if text is None:
        return None
    return int(hashlib.md5(str(text).encode("utf-8")).hexdigest()[:8], 16)


def _prepare_sqlite(conn: Any) -> None:
    conn.text_factory = sqlite_text_factory
    if getattr(conn, "isolation_level", "") is None:
        conn.isolation_level = ""  # autocommit would make each row its own transaction
    conn.create_function("dify_md5_8", 1, _md5_8, deterministic=True)
    # Claims and group commits from several processes wait for the lock instead of failing.
    conn.execute("PRAGMA busy_timeout = 30000")
