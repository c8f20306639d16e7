"""Live subscriptions: follow a run's updates as the collector applies them.

A subscriber XREAD BLOCKs on the run's live stream from a stream id: from the
beginning, from now, or from the last id it saw (so a reconnecting client misses
nothing, as SSE's ``Last-Event-ID`` does).  Each entry carries the events of one
applied batch (metric points, status, tags, files, output lines), compacted as
:mod:`runstream.collector.aggregate` says.  A subscriber whose resume point has been
trimmed off the capped stream gets a :class:`Resynced` first: what it missed is in
the record, to be read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from redis.exceptions import ResponseError

from runstream.codec import decode_payload
from runstream.connection import RedisClient
from runstream.errors import DecodeError
from runstream.events import TERMINAL_STATUSES, Event, StatusChanged
from runstream.keys import Keys

__all__ = ["Resynced", "Update", "follow_sync", "missed_after", "subscribe"]

#: Milliseconds one XREAD waits (shorter than the client's socket timeout).
BLOCK_MS: Final = 1000


@dataclass(frozen=True, slots=True)
class Update:
    """One event of a run, with the live-stream id to resume after it."""

    id: str
    event: Event


@dataclass(frozen=True, slots=True)
class Resynced:
    """Entries after ``after`` were trimmed before this subscriber read them: re-read the record."""

    after: str
    reason: str


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def missed_after(client: RedisClient, live: str, after: str) -> bool:
    """Whether entries after ``after`` may have been trimmed off the stream.

    Errs on the side of a resync (harmless: the record is read again) where Redis
    cannot tell whether the trimmed entries came after ``after``.
    """
    try:
        info = cast("dict[bytes | str, Any]", await client.xinfo_stream(live))
    except ResponseError:  # no stream yet: nothing to miss
        return False

    def field(name: str) -> Any:
        return info.get(name, info.get(name.encode()))

    deleted = field("max-deleted-entry-id")  # Redis 7: XDEL'd entries
    if deleted is not None and _id_tuple(_text(deleted)) > _id_tuple(after):
        return True
    if after == "0-0":  # from the start: anything removed from the head was missed
        added = field("entries-added")  # Redis 7
        return added is not None and int(added) > int(field("length"))
    first = field("first-entry")
    return first is not None and _id_tuple(_text(first[0])) > _id_tuple(after)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def subscribe(
    client: RedisClient,
    keys: Keys,
    run_id: str,
    *,
    start: Literal["beginning", "now"] | str = "beginning",
    until_final: bool = True,
) -> AsyncIterator[Update | Resynced]:
    """The run's updates as they are applied, in order, each once.

    Args:
        start: "beginning", "now", or a live-stream id to resume after.
        until_final: stop after the update that makes the run Completed, Failed or Canceled.
    """
    live = keys.live(run_id)
    if start == "now":
        newest = cast("list[tuple[bytes, Any]]", await client.xrevrange(live, count=1))
        last = newest[0][0].decode() if newest else "0-0"
    else:
        last = "0-0" if start == "beginning" else start
        if await missed_after(client, live, last):
            yield Resynced(last, "the live stream was trimmed past this point")
    while True:
        reply = await client.xread({live: last}, count=256, block=BLOCK_MS)
        for _, entries in cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", reply or []):
            for raw_id, fields in entries:
                last = raw_id.decode()
                try:
                    events = decode_payload(fields[b"b"])
                except (DecodeError, KeyError):
                    continue  # written by the collector: cannot happen short of a foreign writer
                for event in events:
                    yield Update(last, event)
                    if until_final and isinstance(event, StatusChanged) and event.status in TERMINAL_STATUSES:
                        return


def follow_sync(
    updates: Callable[[], AsyncGenerator[Update | Resynced, None]],
    loop: asyncio.AbstractEventLoop,
    *,
    bound: int = 1024,
) -> Iterator[Update | Resynced]:
    """Iterate an async update stream from synchronous code.

    The async iterator runs on ``loop`` (another thread's); items cross over through a
    bounded queue.  Leaving the ``for`` loop early (break, exception) stops it.
    """
    items: queue.Queue[Update | Resynced | BaseException | None] = queue.Queue(maxsize=bound)

    async def pump() -> None:
        try:
            # Closed here, in this task, when it ends or is cancelled: left to the garbage
            # collector, the loop's finalizer would close it later from a task of its own,
            # and "aclose(): asynchronous generator is already running" reached stderr.
            async with contextlib.aclosing(updates()) as stream:
                async for item in stream:
                    await asyncio.to_thread(items.put, item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # handed to the consuming thread, raised there
            items.put(exc)
            return
        items.put(None)

    future = asyncio.run_coroutine_threadsafe(pump(), loop)
    try:
        while (item := items.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        future.cancel()
