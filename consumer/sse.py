"""Server-sent events: one Redis reader per watched run, fanned out to its clients.

A :class:`RunFeed` XREAD-BLOCKs on a run's live stream, frames each reply's updates
once, and writes them to every client that has caught up, straight to its socket's
transport: a delivery costs one write, not a queue hop and a task switch, which is
what lets one process serve a thousand watchers of a run.  A client whose unsent
bytes pass ``client_buffer`` (a stalled connection) is dropped, by cancelling its
handler, and never slows the feed or the other clients.  A client resuming with
``Last-Event-ID`` first gets what it missed straight from the stream, with what the
feed brought meanwhile held for it, then goes live.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import structlog
from aiohttp_sse import EventSourceResponse

from runstream.codec import decode_payload
from runstream.connection import RedisClient
from runstream.consumer.subscribe import Resynced, Update, _id_tuple, missed_after
from runstream.consumer.updates import to_json
from runstream.errors import DecodeError
from runstream.events import TERMINAL_STATUSES, StatusChanged
from runstream.keys import Keys

__all__ = ["FeedHub", "Message"]

_log = structlog.get_logger("runstream.sse")
BLOCK_MS: Final = 1000
RETRY: Final = b"retry: 1000\n\n"


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
    """One SSE connection.

    Until it has caught up (the history it asked for, then what the feed queued
    meanwhile in ``backlog``) its handler writes to it; from then on (``live``) the
    feed writes each message to it directly, once for all clients, with no queue or
    task switch per client.  ``done`` resolves when the run ended or it was dropped.
    """

    response: EventSourceResponse
    transport: asyncio.Transport
    task: asyncio.Task[Any] | None
    done: asyncio.Future[None]
    chunked: bool  # the response's body goes in HTTP/1.1 chunks (not so for an HTTP/1.0 client)
    backlog: list[Message] = field(default_factory=list)
    backlog_bytes: int = 0
    live: bool = False
    sent: tuple[int, int] = (0, 0)  # the newest stream id written by the handler (history may pass the feed)


@dataclass(eq=False)
class RunFeed:
    """The one reader of a run's live stream in this server, and the clients it feeds."""

    run_id: str
    clients: set[Client] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class FeedHub:
    """All run feeds of one server.

    ``client_buffer`` is how many bytes may wait, unsent, for one client (its socket
    not keeping up, or its catching up not done) before it is dropped.
    """

    def __init__(self, client: RedisClient, keys: Keys, client_buffer: int) -> None:
        self.client = client
        self.keys = keys
        self.client_buffer = client_buffer
        self.feeds: dict[str, RunFeed] = {}
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()  # every feed task, until it ends

    async def close(self) -> None:
        """Stop every feed (server shutdown)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stream(
        self, run_id: str, start: str, response: EventSourceResponse, transport: asyncio.Transport
    ) -> None:
        """Write the run's messages after stream id ``start`` ("$" = from now) to ``response``:
        history, then live, until the run ends or the client is dropped."""
        # Sends the headers (the feed writes to the transport itself, after them) and asks
        # browsers to reconnect after 1 s rather than their default 3 s.
        await response.write(RETRY)
        loop = asyncio.get_running_loop()
        client = Client(response, transport, asyncio.current_task(), loop.create_future(), response.chunked)
        feed = await self._feed(run_id)
        feed.clients.add(client)
        try:
            if await self._catch_up(client, run_id, start):
                client.live = True  # no await since the backlog was found empty: nothing slipped by
                # Also ends when the connection does (its pings fail) or the server stops streaming.
                closed = asyncio.ensure_future(response.wait())
                try:
                    await asyncio.wait((client.done, closed), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
        finally:
            feed.clients.discard(client)
            if not feed.clients and self.feeds.get(run_id) is feed:
                # Not cancelled: a cancelled blocking read can wedge the Redis client. The
                # feed sees it has no clients after its current read (BLOCK_MS) and ends.
                del self.feeds[run_id]

    async def _feed(self, run_id: str) -> RunFeed:
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
        return feed

    async def _catch_up(self, client: Client, run_id: str, start: str) -> bool:
        """Write the history after ``start``, then the backlog; False if the run ended meanwhile."""
        last = (0, 0)
        if start != "$":  # catch up from the stream itself, then follow the feed
            async for batch in self._history(run_id, start):
                await client.response.write(b"".join(m.wire for m in batch))
                if batch[-1].final:
                    return False
                last = _id_tuple(batch[-1].id)
            last = max(last, _id_tuple(start.partition("/")[0]))
        while client.backlog:
            waiting, client.backlog, client.backlog_bytes = client.backlog, [], 0
            batch = _until_final([m for m in waiting if _id_tuple(m.id) > last])
            if batch:
                await client.response.write(b"".join(m.wire for m in batch))
                if batch[-1].final:
                    return False
                last = _id_tuple(batch[-1].id)
        client.sent = last
        return True

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
            messages: list[Message] = []
            for _, entries in cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", reply or []):
                for raw_id, fields in entries:
                    last = raw_id
                    messages.extend(entry_messages(raw_id.decode(), fields))
            if messages:
                self._fan_out(feed, _until_final(messages))

    def _fan_out(self, feed: RunFeed, batch: list[Message]) -> None:
        """Write ``batch`` to each live client; queue it for the others.

        The bytes are framed once (SSE, then the HTTP chunk) and go straight to each
        client's transport: one buffered write each, which never blocks (a transport
        that has ``client_buffer`` bytes waiting means a client that is dropped).
        """
        data, final, first = b"".join(m.wire for m in batch), batch[-1].final, _id_tuple(batch[0].id)
        chunk = _http_chunk(data)
        for client in list(feed.clients):
            if client.done.done():
                continue
            if not client.live:
                client.backlog.extend(batch)
                client.backlog_bytes += len(data)
                if client.backlog_bytes > self.client_buffer:
                    self._drop(feed, client, client.backlog_bytes)
                continue
            if client.transport.is_closing():  # the client went away: its handler ends
                feed.clients.discard(client)
                client.done.set_result(None)
                continue
            if (waiting := client.transport.get_write_buffer_size()) > self.client_buffer:
                self._drop(feed, client, waiting)
                continue
            payload = chunk if client.chunked else data
            if first <= client.sent:  # the handler's history went past the feed: skip what it sent
                fresh = b"".join(m.wire for m in batch if _id_tuple(m.id) > client.sent)
                if not fresh:
                    continue
                payload = _http_chunk(fresh) if client.chunked else fresh
            client.transport.write(payload)
            if final:
                client.done.set_result(None)

    def _drop(self, feed: RunFeed, client: Client, waiting: int) -> None:
        feed.clients.discard(client)
        self.dropped += 1
        _log.warning("sse_client_dropped", run_id=feed.run_id, waiting_bytes=waiting)
        if client.task is not None:
            client.task.cancel()


def _http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _until_final(messages: list[Message]) -> list[Message]:
    """The messages up to and including a final one (nothing follows the end of a run)."""
    final = next((i for i, m in enumerate(messages) if m.final), None)
    return messages if final is None else messages[: final + 1]
