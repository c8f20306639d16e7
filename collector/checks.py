"""What a collector checks of its Redis before it starts: that it keeps run records whole.

A Redis with any ``maxmemory-policy`` but ``noeviction`` drops keys once it is full
(72% of a 12 M-point run vanished under ``allkeys-lru``, and a run lost its experiment
and left the listings, without a word): the collector refuses it.  A Redis that
persists nothing (no AOF, no RDB save points) loses every record when it restarts: the
collector says so, loudly, and runs.  The facts come from
:func:`runstream.redis_settings.read_redis_settings`, which the server reads as well.
"""

from __future__ import annotations

from structlog.typing import FilteringBoundLogger as BoundLogger

from runstream.connection import RedisClient, mask_url
from runstream.errors import ConfigError
from runstream.redis_settings import NO_EVICTION, read_redis_settings

__all__ = ["check_redis"]


async def check_redis(client: RedisClient, url: str, log: BoundLogger) -> None:
    """Refuse a Redis that evicts keys when full; warn about one that persists nothing.

    Raises:
        ConfigError: its ``maxmemory-policy`` is not ``noeviction`` (the message says how to set it).
    """
    state = await read_redis_settings(client)
    facts = {"maxmemory": state.maxmemory, "maxmemory_policy": state.maxmemory_policy, "save": state.save}
    if state.evicting:
        log.error("redis_evicts", **facts)
        raise ConfigError(
            f"Redis at {mask_url(url)} has maxmemory-policy {state.maxmemory_policy}: once full it would "
            f"evict run records without a word, and only {NO_EVICTION} keeps them whole. Set it: "
            f"CONFIG SET maxmemory-policy {NO_EVICTION} (and maxmemory-policy {NO_EVICTION} in redis.conf)"
        )
    if state.evicting is None:
        log.warning("redis_eviction_policy_unknown", hint=f"make sure maxmemory-policy is {NO_EVICTION}")
    if state.persistent is False:
        log.warning(
            "redis_not_persistent",
            **facts,
            aof_enabled=state.aof_enabled,
            hint="a restart of this Redis loses every run record: turn on AOF (CONFIG SET appendonly yes, "
            "and appendonly yes in redis.conf) or RDB save points (CONFIG SET save '3600 1 300 100')",
        )
