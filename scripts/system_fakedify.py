"""FakeDify for the docker/ deployment: like ``python -m airflow_dify.testing``, with a fixed chat-app key.

The Airflow connection in docker/compose.yaml must know the API key before the fake starts, but
``python -m airflow_dify.testing`` generates fresh keys on every start; this wrapper takes the chat
app's key from ``DIFY_FAKE_API_KEY`` instead (the other apps keep generated keys).

    DIFY_FAKE_API_KEY=app-... python scripts/system_fakedify.py --host 0.0.0.0 --port 8089 --rpm 1200
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from airflow_dify.testing import FakeApp, FakeDify

MODES = ("chat", "completion", "workflow", "advanced-chat", "agent-chat")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per generation call")
    parser.add_argument("--max-active-requests", type=int, default=10, help="per-app concurrency cap")
    parser.add_argument("--rpm", type=int, default=1200, help="per-app requests per minute")
    args = parser.parse_args(argv)
    key = os.environ.get("DIFY_FAKE_API_KEY") or None
    apps = [FakeApp(mode=mode, key=key if mode == "chat" else None) for mode in MODES]
    fake = FakeDify(
        apps=apps,
        host=args.host,
        port=args.port,
        latency=args.latency,
        max_active_requests=args.max_active_requests,
        requests_per_minute=args.rpm,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with fake:
        print(f"FakeDify on {fake.url} (rpm={args.rpm}, max_active_requests={args.max_active_requests})")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
