"""One event loop on one background thread, for sync code that drives coroutines.

The batch engine's caller stays a plain sync loop (it writes to SQL between completions), and the
client tests drive the async client from sync test bodies: both hand coroutines to this thread.
uvloop is used when it is installed (fewer CPU microseconds per call than asyncio's own loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is importable, else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # optional (not on Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """Runs an event loop forever on a daemon thread until :meth:`close`.

    :param name: the thread's name (shows in thread dumps and py-spy).
    """

    def __init__(self, name: str = "dify-loop") -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; the future is thread-safe."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result here."""
        return self.submit(coro).result()

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def close(self) -> None:
        """Cancel what is still pending on the loop, stop it and join the thread."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            self.submit(_cancel_others()).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def _cancel_others() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["LoopThread", "new_event_loop"]
