"""What a Redis says about its memory and durability: the figures runstream must check before it trusts it.

Only ``maxmemory-policy noeviction`` keeps a record whole (an evicting Redis drops keys of
live runs in silence), and only AOF or RDB keeps it through a restart.  The collector
refuses an evicting Redis and warns about one without persistence; the server does the
same and shows these figures in its health endpoint.  Both read them through
:func:`read_redis_settings`, which is the only place that parses these replies.

Sources: ``INFO memory`` (used memory, ``maxmemory``, the policy) and ``INFO persistence``
(``aof_enabled``), which a managed Redis still answers, and ``CONFIG GET save`` (the RDB
save points), which many refuse: a refused ``CONFIG`` (or ``INFO``) reads as
:data:`UNKNOWN`, never as an error.  On a Redis Cluster every primary is read and the
worst is reported: the fullest node's memory, an evicting policy if any node has one, the
least durable node's persistence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoPermissionError, ResponseError

from runstream.connection import RedisClient

__all__ = ["NO_EVICTION", "UNKNOWN", "RedisSettings", "read_redis_settings"]

#: The value of a setting the server would not tell (CONFIG or INFO refused).
UNKNOWN: Final = "unknown"
#: The one ``maxmemory-policy`` under which a full Redis refuses writes instead of dropping keys.
NO_EVICTION: Final = "noeviction"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """A Redis's memory and durability state, as :func:`read_redis_settings` read it.

    Attributes:
        used_memory: bytes in use (``used_memory``); 0 when INFO was refused.
        maxmemory: the memory limit in bytes, 0 for none (or unknown).
        maxmemory_policy: what a full Redis does (``noeviction``, ``allkeys-lru``, ...),
            or :data:`UNKNOWN`.
        aof_enabled: whether the append-only file is on; None when INFO was refused.
        save: the RDB save points as ``CONFIG GET save`` gives them (``"3600 1 300 100"``;
            ``""`` for none), or :data:`UNKNOWN` where CONFIG is refused.
        node: ``host:port`` of the node these figures are from (on a cluster, the
            fullest primary), or None when one Redis was read.
    """

    used_memory: int
    maxmemory: int
    maxmemory_policy: str
    aof_enabled: bool | None
    save: str
    node: str | None = None

    @property
    def evicting(self) -> bool | None:
        """Whether a full Redis drops keys rather than refuse writes; None when the policy is unknown."""
        if self.maxmemory_policy == UNKNOWN:
            return None
        return self.maxmemory_policy != NO_EVICTION

    @property
    def persistent(self) -> bool | None:
        """Whether writes survive a restart (AOF on, or RDB save points set); None when that is unknown."""
        if self.aof_enabled:
            return True
        if self.save not in ("", UNKNOWN):
            return True
        if self.aof_enabled is None or self.save == UNKNOWN:
            return None
        return False

    @property
    def memory_fraction(self) -> float | None:
        """``used_memory / maxmemory``, or None when there is no limit."""
        return self.used_memory / self.maxmemory if self.maxmemory else None


async def read_redis_settings(client: RedisClient) -> RedisSettings:
    """Read the memory and durability state of the Redis behind ``client``.

    Args:
        client: a client from :func:`runstream.connection.connect`, of one Redis or of a
            cluster (then every primary is read, and the worst reported).

    Returns:
        The state; a setting the server refuses to tell is :data:`UNKNOWN` (or None).

    Raises:
        redis.exceptions.RedisError: the server is out of reach or failed otherwise.
    """
    if not isinstance(client, RedisCluster):
        return await _read_node(client, None)
    states = await asyncio.gather(*(_read_node(client, node) for node in client.get_primaries()))
    return _worst(states)


async def _read_node(client: RedisClient, node: ClusterNode | None) -> RedisSettings:
    """One server's state; ``node`` names it on a cluster."""
    target = {} if node is None else {"target_nodes": node}
    try:
        memory: Mapping[str, object] = await client.info("memory", **target)
        persistence: Mapping[str, object] = await client.info("persistence", **target)
    except (NoPermissionError, ResponseError):
        memory, persistence = {}, {}
    try:
        # redis-py gives CONFIG GET's names and values as str, whatever decode_responses says.
        save: str | None = (await client.config_get("save", **target)).get("save")
    except (NoPermissionError, ResponseError):
        save = None
    aof = persistence.get("aof_enabled")
    return RedisSettings(
        used_memory=_int(memory.get("used_memory")),
        maxmemory=_int(memory.get("maxmemory")),
        maxmemory_policy=str(memory.get("maxmemory_policy", UNKNOWN)),
        aof_enabled=None if aof is None else bool(_int(aof)),
        save=UNKNOWN if save is None else save,
        node=None if node is None else node.name,
    )


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | str) else 0


def _worst(states: list[RedisSettings]) -> RedisSettings:
    """One state for a cluster's primaries: the fullest node's memory, the most evicting
    policy, the least durable node's persistence."""
    fullest = max(states, key=lambda s: (s.memory_fraction or 0.0, s.used_memory))
    policy = max(states, key=lambda s: {True: 2, None: 1, False: 0}[s.evicting]).maxmemory_policy
    durable = min(states, key=lambda s: {True: 2, None: 1, False: 0}[s.persistent])
    return RedisSettings(
        used_memory=fullest.used_memory,
        maxmemory=fullest.maxmemory,
        maxmemory_policy=policy,
        aof_enabled=durable.aof_enabled,
        save=durable.save,
        node=fullest.node,
    )
