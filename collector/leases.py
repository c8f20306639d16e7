"""Shard leases: which collector reads which ingest shard, one at a time.

A lease is a key beside its shard (same slot) holding the owner's reader name, with
an expiry.  The owner renews it well before it expires; a collector that dies stops
renewing, and another takes the shard over once the key has expired.  Renewal and
release check the owner inside a script, so a collector never extends or drops a
lease that has meanwhile passed to another.
"""

from __future__ import annotations

from typing import Final

from runstream.connection import RedisClient

__all__ = ["Leases"]

#: Take or renew the lease: 0 if it is ours now, else the milliseconds until the holder's lapses.
_ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
return math.max(1, redis.call('PTTL', KEYS[1]))
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases:
    """Acquire, renew and release shard leases for one reader."""

    def __init__(self, client: RedisClient, owner: str, ttl_ms: int) -> None:
        self._client = client
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, key: str) -> float:
        """Take the lease if nobody holds it, or renew it if we do: 0.0 then.  Otherwise the
        seconds until its holder's lease lapses, unless renewed: when to try again."""
        return int(await self._acquire(keys=[key], args=[self.owner, self.ttl_ms])) / 1000

    async def release(self, key: str) -> None:
        """Give the lease back at once, if it is still ours."""
        await self._release(keys=[key], args=[self.owner])
