"""Shard leases: which collector reads which ingest shard, one at a time.

A lease is a key beside its shard (same slot) holding the owner's reader name, with
an expiry.  The owner renews it well before it expires; a collector that dies stops
renewing, and another takes the shard over once the key has expired.  Renewal and
release check the owner inside a script, so a collector never extends or drops a
lease that has meanwhile passed to another.  None of the scripts is refused by a
full Redis (see ``_ACQUIRE``): the leases outlast an outage.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, cast

from runstream.connection import RedisClient

__all__ = ["Attempt", "Entries", "Leases"]

#: Stream entries as XREADGROUP gives them: (id, fields); fields None for one deleted while pending.
Entries = list[tuple[bytes, dict[bytes, bytes] | None]]

#: Take or renew the lease: -1 if we took it anew, 0 if we renewed it, else the milliseconds
#: until the holder's lapses.
#:
#: Both work while Redis is full (maxmemory reached, noeviction), so that a full Redis
#: neither takes a collector's shards away nor keeps it from taking them: renewing is a
#: PEXPIRE, which needs no memory; a free lease is taken with a SET, which does.  Redis
#: refuses a script without flags only its first write that needs memory (once a script
#: has written, its later writes are let through, to keep it atomic, on Redis 6.2 and 7.x
#: alike), so the DEL of the absent key, a write that needs none, goes first: the lease, a
#: few dozen bytes, may then pass maxmemory by that much.
_ACQUIRE: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
if holder then
  return math.max(1, redis.call('PTTL', KEYS[1]))
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return -1
"""
#: Read new entries of a shard only while its lease is ours: false if it is not; else {1, entries}
#: or, with none new, {0, the stream's last id} (what a wait for new ones starts from).
_READ: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local got = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
if got then
  return {1, got[1][2]}
end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    return {0, info[i + 1]}
  end
end
return {0, '0-0'}
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Attempt(NamedTuple):
    """What came of an :meth:`Leases.acquire`.

    Attributes:
        held: the lease is ours now.
        fresh: it was taken anew, not renewed: whoever held it before (another reader, or
            we, unaware that it had lapsed) may have left entries pending, to be claimed
            before anything new is read.
        lapses_in: when not held, seconds until the holder's lease lapses unless renewed.
    """

    held: bool
    fresh: bool
    lapses_in: float


class Leases:
    """Acquire, renew and release shard leases for one reader."""

    def __init__(self, client: RedisClient, owner: str, ttl_ms: int) -> None:
        self._client = client
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._acquire = client.register_script(_ACQUIRE)
        self._read = client.register_script(_READ)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, key: str) -> Attempt:
        """Take the lease if nobody holds it, or renew it if we do."""
        reply = int(await self._acquire(keys=[key], args=[self.owner, self.ttl_ms]))
        return Attempt(held=reply <= 0, fresh=reply < 0, lapses_in=max(0, reply) / 1000)

    async def read_new(self, key: str, stream: str, group: str, count: int) -> Entries | str | None:
        """The next new entries of ``stream`` for us (``group``), read only if the lease ``key``
        (in the stream's slot) is ours: None if it is not.  With no new entries, the stream's
        last id, for a wait on it (XREAD, which takes nothing) before the next read.

        Why: an XREADGROUP sent just before our lease lapsed, but run after another collector
        took the shard, would deliver to us entries the new owner never claims, to be
        applied after newer ones it read (and skipped as seen by the seq check).
        """
        reply = await self._read(keys=[key, stream], args=[self.owner, group, count])
        if reply is None:
            return None
        found, body = cast("tuple[int, Any]", reply)
        if not found:
            return cast("bytes", body).decode()
        return [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True))) for entry_id, fields in body]

    async def release(self, key: str) -> None:
        """Give the lease back at once, if it is still ours."""
        await self._release(keys=[key], args=[self.owner])
