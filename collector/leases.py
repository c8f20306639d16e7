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

_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
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
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, key: str) -> bool:
        """Take the lease if nobody holds it (or renew it if we do)."""
        if await self._client.set(key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return await self.renew(key)

    async def renew(self, key: str) -> bool:
        """Extend our lease; False if it is not ours (any more)."""
        return bool(await self._renew(keys=[key], args=[self.owner, self.ttl_ms]))

    async def release(self, key: str) -> None:
        """Give the lease back at once, if it is still ours."""
        await self._release(keys=[key], args=[self.owner])
