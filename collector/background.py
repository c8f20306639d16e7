"""A collector in a background thread of this process, with its own event loop.

For programs that want the pipeline in one process (``runstream up``, a notebook,
the tests and benchmarks); services run ``runstream collector`` instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType
from typing import Self

from runstream.collector.service import Collector, CollectorSettings, CollectorStats, collector_client

__all__ = ["BackgroundCollector"]


class BackgroundCollector:
    """Run a :class:`Collector` in a daemon thread; ``stop`` ends it as SIGTERM would."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.collector: Collector | None = None
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"collector-{settings.reader}", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._stop, self._loop = asyncio.Event(), asyncio.get_running_loop()
            async with collector_client(self.settings.workspace.redis_url) as client:
                self.collector = Collector(self.settings, client)
                self._ready.set()
                await self.collector.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001  # kept for stop() to raise in the caller's thread
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 10.0) -> Self:
        """Start, and return once the collector has published its first report."""
        self._thread.start()
        self._ready.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.error is None and (self.collector is None or not self.collector.stats.updated_at):
            if time.monotonic() > deadline:
                raise TimeoutError("the collector did not report within the timeout")
            time.sleep(0.01)
        if self.error is not None:
            raise self.error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in hand, release the leases, and wait for the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def stats(self) -> CollectorStats:
        if self.collector is None:
            raise RuntimeError("the collector has not started")
        return self.collector.stats

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
