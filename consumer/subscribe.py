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

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import redis.asyncio as aioredis

from runstream.codec import decode_payload
from runstream.errors import DecodeError
from runstream.events import TERMINAL_STATUSES, Event, StatusChanged
from runstream.keys import Keys

__all__ = ["Resynced", "Update", "subscribe"]

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


async def _missed(client: aioredis.Redis, live: str, after: str) -> bool:
    """Whether entries after ``after`` have been trimmed off the stream."""
    try:
        info = cast("dict[bytes | str, Any]", await client.xinfo_stream(live))
    except aioredis.ResponseError:  # no stream yet: nothing to miss
        return False
    deleted = info.get("max-deleted-entry-id") or info.get(b"max-deleted-entry-id")
    if deleted is not None:  # Redis 7: exact
        text = deleted.decode() if isinstance(deleted, bytes) else str(deleted)
        return _id_tuple(text) > _id_tuple(after)
    first = info.get("first-entry") or info.get(b"first-entry")
    if first is None or after == "0-0":  # Redis 6.2, reading from the start: nothing known to be missed
        return False
    return _id_tuple(first[0].decode()) > _id_tuple(after)


async def subscribe(
    client: aioredis.Redis,
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
        if await _missed(client, live, last):
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
