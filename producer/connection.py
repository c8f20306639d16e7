"""The one factory for Redis clients, shared by the producer, collector and consumers.

Every part connects through :func:`connect` so the reply shapes are the same
everywhere: RESP2 is pinned (XREADGROUP answers differ under RESP3) and replies stay
bytes (payloads are binary msgpack).  ``redis://`` and ``rediss://`` URLs with a user
and password (Redis ACL) work as redis-py parses them.

A Redis Cluster needs nothing more than the URL of any one of its nodes: ``connect``
asks that node (``INFO cluster``) and, when cluster mode is on, hands out redis-py's
cluster client instead, which follows MOVED and ASK redirects and fail-overs.  A list
of seed nodes, ``redis://host1:7000,host2:7000,host3:7000``, always means a cluster.
Every key runstream writes together carries one hash tag (:mod:`runstream.keys`), so
the same code runs on both.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from types import TracebackType
from typing import Any, Final, TypeAlias, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream._guarded_connection import guard_cluster

__all__ = [
    "REDIS_CANNOT_PERSIST",
    "REDIS_FULL",
    "SOCKET_TIMEOUT",
    "RedisClient",
    "cluster_url",
    "connect",
    "is_cluster",
    "known_cluster",
    "mask_url",
    "remember_cluster",
    "seed_nodes",
    "single_node",
    "with_node",
    "write_refused",
]

#: What :func:`connect` gives: one server's client, or a cluster's.  Both speak the same
#: commands; only a pipeline's reach differs (see :func:`is_cluster`).
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

#: Seconds a command may wait on the socket; every blocking read uses a shorter BLOCK.
SOCKET_TIMEOUT: Final = 5.0
CONNECT_TIMEOUT: Final = 2.0
#: Connections a cluster client may open to each node.  redis-py's cluster client raises
#: past it rather than wait, so it is sized for a server's busiest moment.
CLUSTER_NODE_CONNECTIONS: Final = 1000
_QUERY_PASSWORD: Final = re.compile(r"((?:^|&)password=)[^&]*")
#: The nodes of each cluster this process has met, by each of its nodes.
_KNOWN_NODES: dict[tuple[str, int], list[tuple[str, int]]] = {}
#: Why Redis refused a write (see write_refused): maxmemory reached under noeviction, or a
#: disk it cannot save to (MISCONF, with stop-writes-on-bgsave-error).
REDIS_FULL: Final = "redis_full"
REDIS_CANNOT_PERSIST: Final = "redis_cannot_persist"
#: An error reply that refuses a write: "OOM ..." or "MISCONF ..." from a command (or, from a
#: pipeline, "... caused error: MISCONF ..."), "... @user_script: 1: -OOM ..." from a script on 6.2.
_REFUSED_WRITE: Final = re.compile(r"(?:^|: -?)(OOM|MISCONF) ")


def connect(url: str, *, retries: int = 3, socket_timeout: float = SOCKET_TIMEOUT) -> Connecting:
    """A Redis client for ``url`` (RESP2, bytes replies, bounded timeouts), a cluster's if ``url`` names one.

    Await it for the client, or use it as ``async with connect(url) as client:`` to
    have the client closed after.  Transient failures (connection refused or reset,
    timeouts) are retried ``retries`` times with exponential backoff; callers that keep
    their own backlog (the producer) pass a small number and retry on their own schedule.

    Raises:
        redis.exceptions.ConnectionError: a single URL's node is out of reach (it must
            answer to say whether it is part of a cluster).
    """
    return Connecting(url, retries, socket_timeout)


def single_node(url: str, *, retries: int = 3, socket_timeout: float = SOCKET_TIMEOUT) -> aioredis.Redis:
    """A client of the one server ``url`` names, without asking whether it is part of a cluster."""
    return aioredis.Redis.from_url(
        url, retry_on_error=[RedisConnectionError, RedisTimeoutError], **_options(retries, socket_timeout)
    )


def _options(retries: int, socket_timeout: float) -> dict[str, Any]:
    """What every client gets, of one server or of a cluster."""
    return {
        "protocol": 2,
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        "health_check_interval": 30,
    }


def is_cluster(client: RedisClient) -> bool:
    """Whether ``client`` is a cluster's: its pipelines run per node, in no set order between nodes."""
    return isinstance(client, RedisCluster)


def seed_nodes(url: str) -> list[tuple[str, int]] | None:
    """The nodes of a seed-list URL (``redis://a:7000,b:7001``), or None for a one-node URL."""
    hostports = urlsplit(url).netloc.rpartition("@")[2]
    if "," not in hostports:
        return None
    nodes = []
    for hostport in hostports.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a seed node must be HOST:PORT, not {hostport!r} (in {mask_url(url)})")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


class Connecting:
    """What :func:`connect` returns: awaitable for the client, or an async context manager
    that closes it after (as aiohttp's ``session.get`` is both)."""

    __slots__ = ("_client", "retries", "socket_timeout", "url")

    def __init__(self, url: str, retries: int, socket_timeout: float) -> None:
        self.url = url
        self.retries = retries
        self.socket_timeout = socket_timeout
        self._client: RedisClient | None = None

    def __await__(self) -> Generator[Any, None, RedisClient]:
        return self._open().__await__()

    async def __aenter__(self) -> RedisClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _options(self) -> dict[str, Any]:
        return _options(self.retries, self.socket_timeout)

    async def _open(self) -> RedisClient:
        seeds = seed_nodes(self.url)
        if seeds is not None:
            return self._cluster(with_node(self.url, seeds[0]), seeds)
        single = single_node(self.url, retries=self.retries, socket_timeout=self.socket_timeout)
        try:
            clustered = await _cluster_enabled(single)
        except RedisConnectionError:
            await single.aclose()
            known = known_cluster(self.url)
            if known is None:
                raise
            # The node this URL names is down (failed over, say), but this process has
            # met its cluster: any node it knew finds the rest.
            return self._cluster(with_node(self.url, known[0]), known)
        except BaseException:
            await single.aclose()
            raise
        if not clustered:
            return single
        await single.aclose()
        client = self._cluster(self.url, [])
        try:
            client = await client.initialize()
        except BaseException:
            await client.aclose()
            raise
        remember_cluster(self.url, [(node.host, int(node.port)) for node in client.get_nodes()])
        return client

    def _cluster(self, url: str, seeds: list[tuple[str, int]]) -> RedisCluster:
        # The cluster client follows MOVED, ASK and TRYAGAIN itself; its retries are for the
        # errors of a fail-over (connection lost, CLUSTERDOWN), as many as a node's.
        return guard_cluster(
            RedisCluster.from_url(
                cluster_url(url),
                startup_nodes=[ClusterNode(host, port) for host, port in seeds] or None,
                max_connections=CLUSTER_NODE_CONNECTIONS,
                **self._options(),
            )
        )


def text_hash(raw: Any) -> dict[str, str]:
    """A hash as HGETALL answers it (bytes to bytes), as text."""
    return {k.decode(): v.decode() for k, v in cast("dict[bytes, bytes]", raw).items()}


def remember_cluster(url: str, nodes: list[tuple[str, int]]) -> None:
    """Note the ``nodes`` of the cluster ``url`` names, by each of them (see :func:`known_cluster`)."""
    parts = urlsplit(url)
    for node in [*nodes, (parts.hostname or "localhost", parts.port or 6379)]:
        _KNOWN_NODES[node] = nodes


def known_cluster(url: str) -> list[tuple[str, int]] | None:
    """The nodes this process has met of the cluster whose node ``url`` names (None: it met none).

    The node a URL names may be down (failed over): any node of its cluster finds the rest.
    """
    parts = urlsplit(url)
    return _KNOWN_NODES.get((parts.hostname or "localhost", parts.port or 6379))


def with_node(url: str, node: tuple[str, int]) -> str:
    """``url`` naming only ``node`` (its user, password and options kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host = f"[{node[0]}]" if ":" in node[0] else node[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{node[1]}"))


def cluster_url(url: str) -> str:
    """``url`` as a cluster client takes it: a cluster URL names no database, and redis-py
    refuses the "/0" that its own URLs carry."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="" if parts.path in ("/0", "/") else parts.path))


async def _cluster_enabled(client: aioredis.Redis) -> bool:
    """Whether the node behind ``client`` runs in cluster mode.  A user refused INFO (a
    write-only producer's ACL) is taken to be on one server: name a cluster's seeds to say otherwise."""
    try:
        info = await client.info("cluster")
    except (NoPermissionError, ResponseError):
        return False
    return bool(info.get("cluster_enabled"))


def write_refused(exc: BaseException) -> str | None:
    """Why Redis refused a write, if ``exc`` is such a refusal: :data:`REDIS_FULL` or
    :data:`REDIS_CANNOT_PERSIST`; None for any other error.

    Either way Redis wrote nothing of the refused command (a script without flags is
    refused its first write that needs memory, so it wrote nothing either): the write is
    to be tried again once Redis has room, never taken for a bad one.
    """
    if isinstance(exc, OutOfMemoryError):
        return REDIS_FULL
    if not isinstance(exc, ResponseError):
        return None
    match = _REFUSED_WRITE.search(str(exc))
    if match is None:
        return None
    return REDIS_FULL if match.group(1) == "OOM" else REDIS_CANNOT_PERSIST


def mask_url(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***``, for logs and reprs.

    Both places redis-py reads a password from are masked: the user info and a
    ``password=`` query argument.  The rest of the URL is kept as written (IPv6
    brackets, case, even a port that does not parse: a repr must not raise).
    """
    if url is None:
        return None
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}:***@{hostport}" if at and colon else parts.netloc
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
