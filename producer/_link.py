"""The sender's connection to one Redis destination: synchronous and lean.

The logger's sender thread wakes every few milliseconds and sends what gathered; what a
send costs in Python holding the GIL is what a training loop pays.  redis-py's asyncio
pipeline spends some 200 µs of it on one MULTI of one XADD, its synchronous one some 90;
packing the commands and reading the replies on a connection of our own, as here, about
40.  So the sender speaks to Redis through plain redis-py connections (which do the
handshake: TLS, AUTH with an ACL user, RESP2), one per node, and sends each node's
XADDs as one packed write, each stream's in one MULTI (see :mod:`runstream._channel`).

A Redis Cluster is met as :func:`runstream.connection.connect` meets it: the URL's node
is asked (``INFO cluster``), or a seed list names one.  The slot map is redis-py's
(:class:`redis.RedisCluster`); a send that meets MOVED, ASK or a lost node refreshes
it, and the channel tries again after its backoff.
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  # see below
import socket
import time
from collections.abc import Sequence
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode
from redis.exceptions import AskError, ClusterDownError, NoPermissionError, RedisError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream._spool import OutgoingBatch
from runstream.connection import (
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    known_cluster,
    remember_cluster,
    seed_nodes,
    with_node,
)

__all__ = ["Flight", "Link"]

# (encodings.idna, imported above: getaddrinfo looks the codec up on first use, and in a
# forked child, whose sender thread connects first, that lookup can fail with "unknown
# encoding: idna" when the import machinery was busy in another thread at the fork.)

_MOVED: Final = ("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN")


def _options() -> dict[str, Any]:
    return {
        "protocol": 2,
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }


def _xadd(batch: OutgoingBatch) -> tuple[Any, ...]:
    args: list[Any] = ["XADD", batch.stream, "*"]
    for field, value in batch.fields.items():
        args += (field, value)
    return tuple(args)


class Link:
    """Connections to the Redis of ``url``: its one server's, or each cluster node's in use.

    Used by one thread at a time (the sender); :meth:`interrupt` may come from another,
    to end a send that waits on a frozen Redis.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | redis.RedisCluster | None = None
        # redis-py's sync connections, which it leaves untyped: one per node, the sender's own.
        self._connections: dict[tuple[str, int], Any] = {}

    @property
    def cluster(self) -> bool:
        return isinstance(self._client, redis.RedisCluster)

    def client(self) -> redis.Redis | redis.RedisCluster:
        """redis-py's client of the destination (made on first use: it asks the node what it is)."""
        if self._client is None:
            self._client = _open(self.url)
        return self._client

    def eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.client().eval(script, len(keys), *keys, *args)

    def start(self, batches: Sequence[OutgoingBatch], atomic: bool) -> Flight:
        """Write the XADDs of ``batches``, each stream's in one MULTI when ``atomic``, one write per node.

        Their replies are read later (:meth:`Flight.finish`): the sender does not wait for them.

        Raises:
            RedisError, OSError: the commands could not be written (to some node).
        """
        client = self.client()
        if isinstance(client, redis.RedisCluster):
            by_node: dict[tuple[str, int], list[OutgoingBatch]] = {}
            cluster: Any = client  # its routing methods are untyped
            for batch in batches:
                node = cluster.get_node_from_key(batch.stream)
                by_node.setdefault((node.host, int(node.port)), []).append(batch)
        else:
            by_node = {("", 0): list(batches)}
        flight = Flight(self)
        try:
            for address, group in by_node.items():
                connection = self._connection(address)
                commands = _commands(group, atomic)
                flight.replies.append((connection, len(commands)))
                connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        except (RedisError, OSError) as exc:
            self.failed(exc)
            raise
        return flight

    def failed(self, exc: BaseException, *, in_step: bool = False) -> None:
        """After a failed send: the connections are dropped (their replies are out of step unless
        ``in_step``), and a cluster's slot map is refreshed if ``exc`` says it is stale."""
        if not in_step:
            for connection in self._connections.values():
                connection.disconnect()
            self._connections.clear()
        client = self._client
        if isinstance(client, redis.RedisCluster) and _reroutes(exc):
            with contextlib.suppress(RedisError, OSError):  # no node answers yet: the next send tries again
                client.nodes_manager.initialize()

    def _connection(self, address: tuple[str, int]) -> Any:
        connection = self._connections.get(address)
        if connection is None:
            client = self.client()
            if isinstance(client, redis.RedisCluster):
                node = cast("Any", client).get_node(host=address[0], port=address[1])
                if node is None or node.redis_connection is None:
                    raise RedisConnectionError(f"no cluster node at {address[0]}:{address[1]}")
                pool = node.redis_connection.connection_pool
            else:
                pool = client.connection_pool
            connection = self._connections[address] = pool.make_connection()
        return connection

    def interrupt(self) -> None:
        """End a send waiting on a frozen Redis (from another thread): its sockets are shut."""
        for connection in list(self._connections.values()):
            sock = getattr(connection, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.disconnect()
        self._connections.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


class Flight:
    """A send on its way: the connections its replies will come on, and how many on each."""

    __slots__ = ("link", "replies", "started")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.replies: list[tuple[Any, int]] = []
        self.started = time.monotonic()

    def landed(self, timeout: float = 0.0) -> bool:
        """Whether the replies have begun to arrive on every connection (waiting up to ``timeout``)."""
        return all(connection.can_read(timeout) for connection, _ in self.replies)

    def finish(self) -> None:
        """Read every reply (a reply that has begun arrives whole at once).

        Raises:
            RedisError, OSError: Redis refused some of the XADDs (or the connection was lost):
                the others may have been taken; a resend is harmless, each carries its seq.
        """
        refused: BaseException | None = None
        try:
            for connection, count in self.replies:
                for _ in range(count):  # every reply is read, so the connection stays in step
                    try:
                        reply = connection.read_response()
                    except ResponseError as exc:
                        refused = refused or exc
                        continue
                    if isinstance(reply, list):
                        refused = refused or next((r for r in reply if isinstance(r, ResponseError)), None)
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            raise
        if refused is not None:
            self.link.failed(refused, in_step=True)
            raise refused


def _commands(batches: list[OutgoingBatch], atomic: bool) -> list[tuple[Any, ...]]:
    """The XADDs of ``batches``; each stream's in one MULTI (a MULTI is one slot's, on a cluster) if ``atomic``."""
    commands: list[tuple[Any, ...]] = []
    stream: str | None = None
    for batch in batches:
        if atomic and batch.stream != stream:
            if stream is not None:
                commands.append(("EXEC",))
            commands.append(("MULTI",))
            stream = batch.stream
        commands.append(_xadd(batch))
    if atomic:
        commands.append(("EXEC",))
    return commands


def _reroutes(exc: BaseException) -> bool:
    """Whether ``exc`` says the slot map is stale: a redirect, a cluster down, or a node out of reach."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return True
    # (redis-py takes the MOVED and ASK off the message of the errors it makes of them.)
    return isinstance(exc, AskError | ClusterDownError | TryAgainError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(_MOVED)
    )


def _open(url: str) -> redis.Redis | redis.RedisCluster:
    """As :func:`runstream.connection.connect` opens a client, synchronously."""
    seeds = seed_nodes(url)
    if seeds is not None:
        return _cluster(with_node(url, seeds[0]), seeds)
    single: redis.Redis = redis.Redis.from_url(url, **_options())
    try:
        info = single.info("cluster")
    except (NoPermissionError, ResponseError):  # refused INFO (a write-only ACL): taken for one server
        return single
    except RedisConnectionError:
        single.close()
        known = known_cluster(url)
        if known is None:
            raise
        return _cluster(with_node(url, known[0]), known)  # the URL's node failed over: any node finds the rest
    except BaseException:
        single.close()
        raise
    if not info.get("cluster_enabled"):
        return single
    single.close()
    client = _cluster(url, [])
    remember_cluster(url, [(node.host, int(node.port)) for node in cast("Any", client).get_nodes()])
    return client


def _cluster(url: str, seeds: Sequence[tuple[str, int]]) -> redis.RedisCluster:
    parts = urlsplit(url)  # a cluster URL names no database; redis-py refuses the "/0" of its own URLs
    url = urlunsplit(parts._replace(path="" if parts.path in ("/0", "/") else parts.path))
    nodes = [cast("Any", ClusterNode)(host, port) for host, port in seeds] or None
    return redis.RedisCluster.from_url(url, startup_nodes=nodes, **_options())
