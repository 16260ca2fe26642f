"""Shared rate-limit pool: concurrency + requests/min + tokens/min, for threads, processes, hosts.

``open_pool(backend, settings)`` picks the backend from the ``rate_limit_backend`` setting:

* ``None`` / ``""`` / ``"memory"``: threads of one process (default);
* ``"sqlite:////abs/path.db"`` (or ``sqlite:///abs/path.db``): processes on one machine, the file
  on a local disk;
* ``"redis://host:port/db"`` / ``"rediss://..."``: workers on many machines.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow_dify.limits.base import (
    Permit,
    PoolError,
    PoolSettings,
    PoolTimeout,
    RateLimitPool,
    UnlimitedPool,
    derive_pool_key,
)
from airflow_dify.limits.pool import Clock, Sleep

__all__ = [
    "Permit",
    "PoolError",
    "PoolSettings",
    "PoolTimeout",
    "RateLimitPool",
    "UnlimitedPool",
    "derive_pool_key",
    "open_pool",
]

_FORMS = "'memory', 'sqlite:////absolute/path.db' or 'redis://host:port/db' ('rediss://' for TLS)"


def _invalid(backend: str, why: str) -> PoolError:
    # Only the scheme is echoed: a Redis URL may carry a password.
    scheme = backend.split(":", 1)[0][:20]
    return PoolError(f"invalid rate_limit_backend ({scheme}:...): {why}; accepted forms: {_FORMS}")


def _sqlite_path(backend: str) -> str:
    parts = urlsplit(backend)
    if parts.netloc or parts.query or parts.fragment:
        raise _invalid(backend, "sqlite needs an absolute path after 'sqlite:///'")
    path = "/" + parts.path.lstrip("/")
    if path == "/" or not parts.path.startswith("/"):
        raise _invalid(backend, "sqlite needs an absolute path after 'sqlite:///'")
    return path


def _check_redis(backend: str) -> None:
    parts = urlsplit(backend)
    try:
        port = parts.port
    except ValueError:
        raise _invalid(backend, "the port is not a number") from None
    if not parts.hostname:
        raise _invalid(backend, "a host is required")
    if port is not None and not 0 < port < 65536:
        raise _invalid(backend, "the port is out of range")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise _invalid(backend, "the database must be a number (redis://host:port/0)")


def open_pool(
    backend: str | None,
    settings: PoolSettings,
    *,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
) -> RateLimitPool:
    """Open the pool for ``settings`` on ``backend`` (see the module docstring for the forms).

    :param clock: inject a clock (seconds) for deterministic tests; each backend has its own
        default (monotonic in memory, wall time in SQLite, the server's TIME in Redis).
    :param sleep: inject the matching sleep function.
    :raises PoolError: invalid URL or settings, or the backend is unreachable.
    """
    if backend is not None and not isinstance(backend, str):
        raise _invalid(type(backend).__name__, "not a string")
    name = (backend or "").strip() or "memory"  # an empty form field means the default
    scheme = name.split(":", 1)[0].lower() if ":" in name else name.lower()
    if scheme == "memory" and name.lower() == "memory":
        kind = "memory"
    elif scheme == "sqlite" and name.lower().startswith("sqlite://"):
        kind = "sqlite"
    elif scheme in ("redis", "rediss") and "://" in name:
        kind = "redis"
    else:
        raise _invalid(name, "unknown backend")

    if kind == "sqlite":
        path = _sqlite_path(name)
    elif kind == "redis":
        _check_redis(name)

    unlimited = (
        settings.max_concurrency is None
        and settings.requests_per_minute is None
        and settings.tokens_per_minute is None
    )
    if unlimited:
        return UnlimitedPool(settings)
    if kind == "memory":
        from airflow_dify.limits.memory import MemoryPool

        return MemoryPool(settings, clock=clock, sleep=sleep)
    if kind == "sqlite":
        from airflow_dify.limits.sqlite import SqlitePool

        return SqlitePool(path, settings, clock=clock, sleep=sleep)
    from airflow_dify.limits.redis import RedisPool

    return RedisPool(name, settings, clock=clock, sleep=sleep)
