"""Every transport behind one sync interface, so a test body states the shared contract once.

An asyncio transport runs on a :class:`LoopThread`; :class:`SyncDriven` hands each call to that
loop and waits, which is exactly how a sync caller would drive it. Test-only glue: the engine
awaits the transport on its own loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_dify.client.aiohttp_transport import AiohttpTransport
from airflow_dify.client.http1_transport import Http1Transport
from airflow_dify.client.loop import LoopThread
from airflow_dify.client.transport import AsyncStreamedResponse, AsyncTransport, Request, Response
from airflow_dify.client.urllib3_transport import Urllib3Transport

KINDS = ("urllib3", "aiohttp", "http1")


class SyncDriven:
    """A sync :class:`~airflow_dify.client.transport.Transport` over an async one."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.inner = transport
        self.loop = LoopThread("test-transport")

    def send(self, request: Request) -> Response:
        return self.loop.run(self.inner.send(request))

    def stream(self, request: Request) -> _SyncStream:
        return _SyncStream(self.loop.run(self.inner.stream(request)), self.loop)

    def close(self) -> None:
        if not self.loop.loop.is_closed():
            self.loop.run(self.inner.close())
            self.loop.close()


class _SyncStream:
    def __init__(self, stream: AsyncStreamedResponse, loop: LoopThread) -> None:
        self.status = stream.status
        self.headers: Mapping[str, str] = stream.headers
        self._stream = stream
        self._loop = loop
        self._chunks = stream.aiter_bytes()

    def iter_bytes(self) -> Iterator[bytes]:
        async def next_chunk() -> bytes | None:
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return None

        while (chunk := self._loop.run(next_chunk())) is not None:
            yield chunk

    def read(self) -> bytes:
        return self._loop.run(self._stream.read())

    def close(self) -> None:
        async def close() -> None:
            self._stream.close()

        self._loop.run(close())


def transport_factory(kind: str) -> Callable[..., Any]:
    """``make(pool_size=, verify_ssl=)`` for ``kind`` ("urllib3" | "aiohttp" | "http1")."""
    if kind == "urllib3":
        return Urllib3Transport
    inner = AiohttpTransport if kind == "aiohttp" else Http1Transport
    return lambda **kw: SyncDriven(inner(**kw))
