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
import os
import select
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any, Final, cast

import hiredis
import redis
from redis._parsers.base import BaseParser  # its error classes by message, as redis-py's parsers use them
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.exceptions import AskError, ClusterDownError, NoPermissionError, RedisError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.utils import get_lib_version

from runstream._spool import OutgoingBatch
from runstream.connection import (
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    cluster_url,
    known_cluster,
    remember_cluster,
    seed_nodes,
    with_node,
)

__all__ = ["Flight", "Link"]


# What the sender's first connection would import lazily is imported here, in the thread that
# imports runstream: getaddrinfo's idna codec (above), and what importlib.metadata needs (the
# email parser) to read redis-py's version for CLIENT SETINFO. An import under way in the
# sender thread when the process forks leaves the child a half-initialized module, and the
# child's sender then fails with "unknown encoding: idna" or "cannot import name 'Parser'".
get_lib_version()  # type: ignore[no-untyped-call,unused-ignore]  # (untyped before redis-py 8.2)

_MOVED: Final = ("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN")


def _options() -> dict[str, Any]:
    return {
        # No retries of redis-py's own: a failed send is the channel's to retry, after its
        # backoff, and a frozen Redis must hold the sender one socket timeout, not several.
        "retry": Retry(NoBackoff(), 0),
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
        self._wires: dict[tuple[str, int], _Wire] = {}  # one per node, the sender's own

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
                wire = self._wire(address)
                commands = _commands(group, atomic)
                flight.replies.append((wire, len(commands), []))
                wire.write(commands)
        except (RedisError, OSError) as exc:
            self.failed(exc)
            raise
        return flight

    def failed(self, exc: BaseException, *, in_step: bool = False) -> None:
        """After a failed send: the connections are dropped (their replies are out of step unless
        ``in_step``), and a cluster's slot map is refreshed if ``exc`` says it is stale."""
        if not in_step:
            for wire in self._wires.values():
                wire.connection.disconnect()
            self._wires.clear()
        client = self._client
        if isinstance(client, redis.RedisCluster) and _reroutes(exc):
            with contextlib.suppress(RedisError, OSError):  # no node answers yet: the next send tries again
                client.nodes_manager.initialize()

    def _wire(self, address: tuple[str, int]) -> _Wire:
        wire = self._wires.get(address)
        if wire is None:
            client = self.client()
            if isinstance(client, redis.RedisCluster):
                node = cast("Any", client).get_node(host=address[0], port=address[1])
                if node is None or node.redis_connection is None:
                    raise RedisConnectionError(f"no cluster node at {address[0]}:{address[1]}")
                pool = node.redis_connection.connection_pool
            else:
                pool = client.connection_pool
            wire = self._wires[address] = _Wire(pool.make_connection())
        return wire

    def interrupt(self) -> None:
        """End a send waiting on a frozen Redis (from another thread): its sockets are shut."""
        for wire in list(self._wires.values()):
            sock = getattr(wire.connection, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for wire in self._wires.values():
            wire.connection.disconnect()
        self._wires.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


class _Wire:
    """One node's connection as the sender speaks to it.

    redis-py's connection does the handshake (TLS, AUTH, RESP2); then, where the socket is
    plain TCP or a unix socket (not TLS), the sender writes and reads the
    socket itself: commands packed and replies parsed by hiredis in C.  A tick of the sender
    runs cold (its caches gone after a linger asleep), and the fewer Python frames it passes
    through, the shorter it holds the GIL the training loop needs; redis-py's reply path is a
    few frames per reply.  Over TLS it is redis-py's own path.
    """

    __slots__ = ("connection", "reader", "sock")

    def __init__(self, connection: Any) -> None:  # redis-py's sync connections are untyped
        self.connection = connection
        self.sock: socket.socket | None = None  # the socket ``reader`` reads (None: redis-py's path)
        self.reader: Any = None

    def write(self, commands: list[tuple[Any, ...]]) -> None:
        connection = self.connection
        if connection._sock is None:  # (dropped after a failure): connect anew
            connection.connect()
        sock = connection._sock  # the handshake is done: the socket is ours to write
        if isinstance(sock, ssl.SSLSocket):
            self.sock = None
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            return
        if sock is not self.sock:
            self.sock, self.reader = sock, hiredis.Reader()
        sock.sendall(b"".join(map(hiredis.pack_command, commands)))

    def collect(self, replies: list[Any], want: int, timeout: float) -> bool:
        """Add to ``replies`` those that came, up to ``want`` (waiting up to ``timeout``); whether all did."""
        sock, reader = self.sock, self.reader
        if sock is None:  # redis-py's path
            connection = self.connection
            while len(replies) < want:
                if not connection.can_read(timeout):
                    return False
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return True
        while len(replies) < want:
            reply = reader.gets()
            if reply is not False:
                replies.append(_error(reply) if isinstance(reply, hiredis.ReplyError) else reply)
                continue
            try:
                # os.read, not sock.recv: a socket with a timeout (redis-py's are) polls up to
                # the timeout before it reads; its descriptor is non-blocking, so this never waits.
                data = os.read(sock.fileno(), 1 << 16)
            except BlockingIOError:
                if timeout <= 0 or not select.select([sock], [], [], timeout)[0]:
                    return False
                timeout = 0.0
                continue
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            reader.feed(data)
        return True


class Flight:
    """A send on its way: the nodes its replies will come from, how many from each, those come so far."""

    __slots__ = ("link", "replies", "started")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.replies: list[tuple[_Wire, int, list[Any]]] = []
        self.started = time.monotonic()

    def landed(self, timeout: float = 0.0) -> bool:
        """Whether every reply came (waiting up to ``timeout`` for them)."""
        try:
            return all(wire.collect(got, want, timeout) for wire, want, got in self.replies)
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            raise

    def finish(self) -> None:
        """Read what replies are left (waiting for them) and say whether Redis took every XADD.

        Raises:
            RedisError, OSError: Redis refused some of the XADDs (or the connection was lost):
                the others may have been taken; a resend is harmless, each carries its seq.
        """
        if not self.landed(SOCKET_TIMEOUT):
            exc = RedisTimeoutError(f"no reply from Redis within {SOCKET_TIMEOUT:.0f} s")
            self.link.failed(exc)
            raise exc
        refused: BaseException | None = None
        for _, _, got in self.replies:  # every reply was read, so the connections stay in step
            for reply in got:
                if isinstance(reply, ResponseError):
                    refused = refused or reply
                elif isinstance(reply, list):
                    refused = refused or next(
                        (r for r in reply if isinstance(r, ResponseError | hiredis.ReplyError)), None
                    )
        if isinstance(refused, hiredis.ReplyError):
            refused = _error(refused)
        if refused is not None:
            self.link.failed(refused, in_step=True)
            raise refused


def _error(reply: Any) -> ResponseError:
    """A hiredis error reply as the redis-py exception its message names (OOM, NOPERM, MOVED...)."""
    error: ResponseError = cast("Any", BaseParser).parse_error(str(reply))
    return error


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
    nodes = [cast("Any", ClusterNode)(host, port) for host, port in seeds] or None
    return redis.RedisCluster.from_url(cluster_url(url), startup_nodes=nodes, **_options())
