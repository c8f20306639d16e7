"""A shard's ingest stream: its consumer group made, and what the group acked trimmed.

Both work on a full Redis (``maxmemory`` reached under ``noeviction``).  Making a group
that is there already is no write, though a full Redis refuses it all the same, so its
refusal is only an outage when the group is not there.  Trimming is one script that
needs no memory: the acked entries it frees are room for the batches that wait.

The trim is by MINID below the group's oldest pending entry or, with none pending, at
its last-delivered id (entries not yet delivered are the lag, and stay); never by a
fixed MAXLEN, which on Redis 7 deletes entries still pending.  The two looks and the
trim are one atomic step: an entry read between two separate replies would be pending
below a last-delivered id read after them, and trimmed.
"""

from __future__ import annotations

import contextlib
from typing import Final

from redis.exceptions import ResponseError

from runstream.collector.outage import WritesRefusedError
from runstream.connection import RedisClient, write_refused
from runstream.keys import INGEST_GROUP

__all__ = ["Streams"]

#: KEYS[1] the stream, ARGV[1] the group: trim what the group acked; the entries trimmed.
_TRIM: Final = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local minid = pending[1] ~= 0 and pending[2]
if not minid then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last = nil, nil
    for i = 1, #group, 2 do
      if group[i] == 'name' then
        name = group[i + 1]
      elseif group[i] == 'last-delivered-id' then
        last = group[i + 1]
      end
    end
    if name == ARGV[1] then
      minid = last
    end
  end
end
if not minid then
  return 0
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', minid)
"""


class Streams:
    """Makes and trims the ingest streams' consumer group (:data:`~runstream.keys.INGEST_GROUP`)."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._trim = client.register_script(_TRIM)

    async def make_group(self, stream: str) -> None:
        """Make the ingest group of ``stream`` (and the stream) unless it is there.

        Raises:
            WritesRefusedError: Redis is full and the group is not there.
        """
        try:
            await self._client.xgroup_create(stream, INGEST_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            cause = write_refused(exc)
            if cause is None:
                return  # BUSYGROUP: it is there
            with contextlib.suppress(ResponseError):  # no stream (so no group) yet
                groups = await self._client.xinfo_groups(stream)
                if any(g["name"] in (INGEST_GROUP, INGEST_GROUP.encode()) for g in groups):
                    return
            raise WritesRefusedError(cause, str(exc)) from exc

    async def trim(self, stream: str) -> int:
        """Drop the acked entries of ``stream`` (approximately: whole stream nodes); how many went."""
        return int(await self._trim(keys=[stream], args=[INGEST_GROUP]))
