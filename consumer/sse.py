"""Server-sent events: one Redis reader per watched run, fanned out to its clients.

A :class:`RunFeed` XREAD-BLOCKs on a run's live stream and serialises each entry's
updates once, for all of the run's clients.  Each client has a bounded queue; a
client that falls that far behind (a stalled connection) is dropped, by cancelling
its handler, and never slows the feed or the other clients.  A client resuming with
``Last-Event-ID`` first reads what it missed straight from the stream, then joins
the feed, skipping what it has already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis.asyncio as aioredis
import structlog

from runstream.codec import decode_payload
from runstream.consumer.subscribe import Resynced, Update, _id_tuple, missed_after
from runstream.consumer.updates import to_json
from runstream.errors import DecodeError
from runstream.events import TERMINAL_STATUSES, StatusChanged
from runstream.keys import Keys

__all__ = ["FeedHub", "Message"]

_log = structlog.get_logger("runstream.sse")
BLOCK_MS: Final = 1000


@dataclass(frozen=True, slots=True)
class Message:
    """One SSE message: the stream id, its JSON data, whether the run ended with it, and its
    SSE ``id:`` (the stream id on an entry's last message, ``<stream id>/<k>`` on its k-th
    before that, so a client resuming mid-entry gets the rest of the entry, not the next one).

    ``wire`` is the message as sent, framed once here for every client that gets it
    (a final one carries an ``end`` event after it, so clients know not to reconnect).
    """

    id: str
    data: str
    final: bool
    event_id: str
    wire: bytes = b""

    @classmethod
    def framed(cls, stream_id: str, data: str, final: bool, event_id: str) -> Message:
        wire = f"id: {event_id}\ndata: {data}\n\n" + ("event: end\ndata: {}\n\n" if final else "")
        return cls(stream_id, data, final, event_id, wire.encode())


def entry_messages(entry_id: str, fields: dict[bytes, bytes]) -> list[Message]:
    """The messages of one live-stream entry (one per event)."""
    try:
        events = decode_payload(fields[b"b"])
    except (DecodeError, KeyError):
        return []
    return [
        Message.framed(
            entry_id,
            json.dumps(to_json(Update(entry_id, e)), separators=(",", ":")),
            isinstance(e, StatusChanged) and e.status in TERMINAL_STATUSES,
            entry_id if k == len(events) - 1 else f"{entry_id}/{k}",
        )
        for k, e in enumerate(events)
    ]


@dataclass(eq=False)
class Client:
    """One SSE connection: its queue, and the task serving it (cancelled when dropped)."""

    queue: asyncio.Queue[Message]
    task: asyncio.Task[Any] | None
    dropped: bool = False


@dataclass(eq=False)
class RunFeed:
    """The one reader of a run's live stream in this server, and the clients it feeds."""

    run_id: str
    clients: set[Client] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class FeedHub:
    """All run feeds of one server."""

    def __init__(self, client: aioredis.Redis, keys: Keys, queue_size: int) -> None:
        self.client = client
        self.keys = keys
        self.queue_size = queue_size
        self.feeds: dict[str, RunFeed] = {}
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()  # every feed task, until it ends

    async def close(self) -> None:
        """Stop every feed (server shutdown)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def join(self, run_id: str, start: str) -> AsyncIterator[AsyncIterator[list[Message]]]:
        """Messages of the run after stream id ``start`` ("$" = from now): history, then live."""
        client = Client(asyncio.Queue(self.queue_size), asyncio.current_task())
        feed = self.feeds.get(run_id)
        if feed is None:
            # The feed's start is fixed before any client reads history, so history read
            # after it overlaps the feed (and is deduplicated) rather than leaving a gap.
            newest = cast("list[tuple[bytes, Any]]", await self.client.xrevrange(self.keys.live(run_id), count=1))
            feed = self.feeds.get(run_id)  # another client may have made it meanwhile
            if feed is None:
                feed = self.feeds[run_id] = RunFeed(run_id)
                start_id = newest[0][0] if newest else b"0-0"
                feed.task = asyncio.create_task(self._read(feed, start_id), name=f"feed-{run_id}")
                self._tasks.add(feed.task)
                feed.task.add_done_callback(self._tasks.discard)
        feed.clients.add(client)
        try:
            yield self._messages(client, run_id, start)
        finally:
            feed.clients.discard(client)
            if not feed.clients and self.feeds.get(run_id) is feed:
                # Not cancelled: a cancelled blocking read can wedge the Redis client. The
                # feed sees it has no clients after its current read (BLOCK_MS) and ends.
                del self.feeds[run_id]

    async def _messages(self, client: Client, run_id: str, start: str) -> AsyncIterator[list[Message]]:
        """Batches of messages: all that is waiting is written to the client in one go."""
        last = (0, 0)
        if start != "$":  # catch up from the stream itself, then follow the feed
            async for batch in self._history(run_id, start):
                yield batch
                if batch[-1].final:
                    return
                last = _id_tuple(batch[-1].id)
            last = max(last, _id_tuple(start.partition("/")[0]))
        while True:
            waiting = [await client.queue.get()]
            while not client.queue.empty():
                waiting.append(client.queue.get_nowait())
            batch = _until_final([m for m in waiting if start == "$" or _id_tuple(m.id) > last])
            if batch:
                yield batch
                if batch[-1].final:
                    return

    async def _history(self, run_id: str, start: str) -> AsyncIterator[list[Message]]:
        """What the stream holds after ``start`` ("<id>" or "<id>/<k>"), a batch per entry."""
        start, _, sent = start.partition("/")  # "<id>/<k>": the entry's messages after the k-th are due
        live = self.keys.live(run_id)
        if await missed_after(self.client, live, start):
            notice = json.dumps(to_json(Resynced(start, "the live stream was trimmed past this point")))
            yield [Message.framed(start, notice, False, start)]
        lower = start if sent else (f"({start}" if start != "0-0" else "-")
        entries = await self.client.xrange(live, min=lower)
        for raw_id, fields in cast("list[tuple[bytes, dict[bytes, bytes]]]", entries):
            messages = entry_messages(raw_id.decode(), fields)
            if sent and raw_id.decode() == start:
                messages = messages[int(sent) + 1 :]
            if messages:
                yield _until_final(messages)

    async def _read(self, feed: RunFeed, last: bytes) -> None:
        try:
            await self._follow(feed, last)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001  # a feed that dies must not leave its clients waiting forever
            _log.exception("sse_feed_failed", run_id=feed.run_id)
            for client in list(feed.clients):
                if client.task is not None:
                    client.task.cancel()

    async def _follow(self, feed: RunFeed, last: bytes) -> None:
        live = self.keys.live(feed.run_id)
        while feed.clients:
            reply = await self.client.xread({live: last}, count=256, block=BLOCK_MS)
            for _, entries in cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", reply or []):
                for raw_id, fields in entries:
                    last = raw_id
                    for message in entry_messages(raw_id.decode(), fields):
                        self._fan_out(feed, message)

    def _fan_out(self, feed: RunFeed, message: Message) -> None:
        for client in list(feed.clients):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                feed.clients.discard(client)
                client.dropped = True
                self.dropped += 1
                _log.warning("sse_client_dropped", run_id=feed.run_id, queued=client.queue.qsize())
                if client.task is not None:
                    client.task.cancel()


def _until_final(messages: list[Message]) -> list[Message]:
    """The messages up to and including a final one (nothing follows the end of a run)."""
    final = next((i for i, m in enumerate(messages) if m.final), None)
    return messages if final is None else messages[: final + 1]
