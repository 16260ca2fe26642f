"""``python -m airflow_dify doctor``: check a ``dify`` connection (also the ``airflow-dify`` command).

The connection comes from Airflow (its metadata database or an ``AIRFLOW_CONN_*`` variable, by
``--conn-id``) or from ``--uri``: the JSON form of an Airflow connection, or
``dify://:KEY@host[:port]/v1?extra=value`` (``dify+http://`` for plain http).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from airflow_dify.doctor import diagnose, render


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_dify", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check a dify connection: verdict and fix per line")
    where = doctor.add_mutually_exclusive_group()
    where.add_argument(
        "--conn-id", default="dify_default", help="Airflow connection id (default dify_default)"
    )
    where.add_argument("--uri", help="the connection as JSON or dify://:KEY@host/v1?extra=value")
    doctor.add_argument(
        "--probe", action="store_true", help="spend one minimal call (reports latency, usage)"
    )
    return parser


def from_uri(uri: str) -> tuple[str | None, str | None, dict[str, Any]]:
    """(host, password, extra) of a connection given as JSON or as a ``dify://`` URI."""
    text = uri.strip()
    if text.startswith("{"):
        conn = json.loads(text)
        given = conn.get("extra") or {}
        return conn.get("host"), conn.get("password"), json.loads(given) if isinstance(given, str) else given
    parts = urlsplit(text)
    if parts.scheme not in ("dify", "dify+https", "dify+http"):
        raise SystemExit(f"--uri: expected JSON or dify://..., got a {parts.scheme or 'schemeless'} URI")
    scheme = "http" if parts.scheme == "dify+http" else "https"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    extra: dict[str, Any] = dict(parse_qsl(parts.query))
    if "__extra__" in extra:
        extra = json.loads(extra["__extra__"])
    password = unquote(parts.password) if parts.password else None
    return f"{scheme}://{netloc}{parts.path}", password, extra


def from_airflow(conn_id: str) -> tuple[str | None, str | None, dict[str, Any]]:
    """(host, password, extra) of an Airflow connection: environment variable or metadata database."""
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(conn_id)
    return conn.host, conn.password, conn.extra_dejson or {}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.uri:
        host, password, extra = from_uri(args.uri)
        title = "Dify connection from --uri"
    else:
        try:
            host, password, extra = from_airflow(args.conn_id)
        except Exception as exc:  # noqa: BLE001 - any backend's "not found" or "cannot connect"
            print(f"[FAIL] connection  {args.conn_id!r} cannot be resolved: {type(exc).__name__}: {exc}")
            print(
                "       fix: create it (airflow connections add ... --conn-type dify) or set AIRFLOW_CONN_..."
            )
            return 1
        title = f"Dify connection {args.conn_id!r} (from Airflow)"
    return render(list(diagnose(host, password, extra, probe=args.probe)), title)


if __name__ == "__main__":
    sys.exit(main())
