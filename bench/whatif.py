"""What-if tweaks that price the suggested client changes inside a real batch, bench-only.

Each patches ONE client instance (never the shipped modules on disk) so scenario 2 can show how
much of the CPU per row a change would save. The happy path only: these are measurements, not
replacements (error mapping, streaming and OAuth2 refresh are untouched or not exercised).

* ``trust_env_off``: ``session.trust_env = False`` so requests stops re-reading proxy variables
  (and the CA-bundle/.netrc settings) from ``os.environ`` on every call. The shipped fix would
  resolve them once at construction instead.
* ``shared_rng``: one ``random.Random`` for the back-off jitter instead of a new, urandom-seeded
  one per call (``RetryPolicy.retrying`` builds ``wait_retry_after_or_backoff()`` each call).
* ``urllib3``: blocking calls through ``urllib3.PoolManager`` + ``json.dumps/loads`` instead of
  ``requests.Session`` (requests is built on urllib3).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

TWEAKS = ("trust_env_off", "shared_rng", "urllib3")


class _Urllib3Response:
    """The slice of ``requests.Response`` that the blocking happy path reads."""

    __slots__ = ("status_code", "headers", "_data")

    def __init__(self, resp: Any) -> None:
        self.status_code = resp.status
        self.headers = resp.headers
        self._data = resp.data

    def json(self) -> Any:
        return json.loads(self._data)

    @property
    def text(self) -> str:
        return self._data.decode("utf-8", "replace")

    def close(self) -> None:
        return None


class _SharedRandom:
    """Stands in for the ``random`` module inside retry.py, whose only use is ``random.Random()``."""

    def __init__(self) -> None:
        self._rng = random.Random()

    def Random(self) -> random.Random:  # noqa: N802 - mirrors the module function it replaces
        return self._rng


def _use_urllib3(client: Any, maxsize: int) -> None:
    import urllib3

    transport = client._transport
    http = urllib3.PoolManager(maxsize=maxsize, retries=False, timeout=urllib3.Timeout(connect=10, read=300))
    base_headers = {k: v for k, v in transport.session.headers.items()}
    base_headers["Content-Type"] = "application/json"

    def request(method: str, path: str, ctx: Any, body: Any, headers: Any, stream: bool, auth: str) -> Any:
        merged = {**base_headers, "Authorization": auth, **(headers or {})}
        data = json.dumps(body).encode() if body is not None else None
        return _Urllib3Response(http.request(method, transport.base_url + path, body=data, headers=merged))

    transport._request = request


def apply(client: Any, tweaks: Iterable[str], maxsize: int) -> None:
    for tweak in tweaks:
        if tweak == "trust_env_off":
            client._transport.session.trust_env = False
        elif tweak == "shared_rng":
            import airflow_dify.client.retry as retry_module

            retry_module.random = _SharedRandom()  # type: ignore[assignment]
        elif tweak == "urllib3":
            _use_urllib3(client, maxsize)
        else:
            raise ValueError(f"unknown tweak {tweak!r}; expected one of {TWEAKS}")
