"""``python -m airflow_dify.testing``: run FakeDify in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from airflow_dify.testing.apps import DEFAULT_FORMS, DEFAULT_MODES, FakeApp
from airflow_dify.testing.fake import FakeDify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_dify.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per generation call")
    parser.add_argument("--max-active-requests", type=int, default=0, help="per-app concurrency cap")
    parser.add_argument(
        "--rpm", dest="requests_per_minute", type=int, default=0, help="per-app requests per minute"
    )
    parser.add_argument("--token-ttl", type=float, default=3600, help="OAuth2 access-token lifetime (s)")
    parser.add_argument(
        "--max-records",
        type=int,
        default=10_000,
        help="request records kept for inspection (newest); bounds memory on long runs",
    )
    parser.add_argument(
        "--chat-key",
        default=os.environ.get("DIFY_FAKE_API_KEY") or None,
        help="fixed API key of the chat app (default: $DIFY_FAKE_API_KEY, else generated), so a "
        "connection can be configured before the fake starts (docker/compose.yaml)",
    )
    parser.add_argument(
        "--server",
        choices=("asyncio", "threaded"),
        default=None,
        help="HTTP server: asyncio (default, one event loop) or threaded (a thread per connection)",
    )
    parser.add_argument(
        "--print-env", action="store_true", help="print AIRFLOW_CONN_DIFY_DEFAULT for the chat app"
    )
    return parser


#: Flags passed to FakeDify under the same name.
_SERVER_OPTIONS = (
    "host",
    "port",
    "latency",
    "max_active_requests",
    "requests_per_minute",
    "token_ttl",
    "max_records",
    "server",
)


def connection_env(fake: FakeDify, mode: str = "chat") -> str:
    """``AIRFLOW_CONN_DIFY_DEFAULT=<json>`` pointing at the app of ``mode``."""
    conn = {
        "conn_type": "dify",
        "host": fake.url,
        "password": fake.app(mode).key,
        "extra": {"app_mode": mode},
    }
    return "AIRFLOW_CONN_DIFY_DEFAULT=" + json.dumps(conn)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apps = [
        FakeApp(mode=mode, key=args.chat_key if mode == "chat" else None, inputs=DEFAULT_FORMS[mode])
        for mode in DEFAULT_MODES
    ]
    fake = FakeDify(apps=apps, **{name: getattr(args, name) for name in _SERVER_OPTIONS})
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    fake.start()
    try:
        # The keys are printed on purpose: this is a local fake, and the user needs them to connect.
        for app in fake.apps:
            print(f"{app.mode}\t{app.name}\t{app.key}")
        print(f"url\t{fake.url}")
        print(f"token_url\t{fake.token_url}")
        if args.print_env:
            print(connection_env(fake))
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
