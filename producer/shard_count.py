"""The shard count of a workspace, kept in Redis so that every process agrees on it.

Producers route a run's batches to ``crc32(run_id) % shards``; a collector reads
shards ``0 .. shards-1``.  A producer configured with more shards than the collectors
would strand batches on streams nobody reads, so the count lives in one key
(``Keys.shard_count``): every process raises it to its own setting when it connects,
it never goes down (a stream once written to stays read), and collectors grow to it
as soon as they see it (within a report period).
"""

from __future__ import annotations

from typing import Final

from redis.exceptions import NoPermissionError

from runstream.connection import RedisClient
from runstream.keys import Keys

__all__ = ["RAISE_SHARD_COUNT", "raise_shard_count"]

#: Raise KEYS[1] to ARGV[1] if it is lower; the count it holds after.
RAISE_SHARD_COUNT: Final = """
local recorded = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if recorded < wanted then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return recorded
"""


async def raise_shard_count(client: RedisClient, keys: Keys) -> int:
    """Raise the workspace's recorded shard count to ``keys.shards``; the count in force.

    A user whose ACL may not run scripts (a write-only producer) leaves the count as it
    is: ``keys.shards`` is returned and the collectors' own setting decides.
    """
    try:
        # EVAL, not EVALSHA: sent once per process and workspace, and never NOSCRIPT.
        recorded = await client.eval(RAISE_SHARD_COUNT, 1, keys.shard_count(), keys.shards)
    except NoPermissionError:
        return keys.shards
    return int(recorded)
