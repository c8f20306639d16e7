"""Cluster node connections that report a socket closed under them as lost, not as a crash.

When a node fails, redis-py's asyncio cluster client (8.1 at least) disconnects the
node's free connections from the task that met the failure
(``ClusterNode.disconnect_free_connections``) while another task may just have taken
one of them and be connecting or sending on it.  That task then finds the socket's
writer gone: an ``AttributeError`` on ``None``, which no retry knows, so a collector
died of a fail-over it would otherwise ride out.  Raised as the
:class:`~redis.exceptions.ConnectionError` it is, the cluster client's own retry
reconnects, and every loop that rides out a lost connection rides this one out too.

:func:`guard_cluster` puts these classes in place of redis-py's on a cluster client
not yet initialized: on the nodes it already made and in the options it makes the
others with (``RedisCluster`` takes no connection class of its own).

It also mends the cluster client's transactions (``pipeline(transaction=True)``, 8.1 at
least): they hand each reply's parser the options of its command, ``keys=`` among them,
which every other path drops first; parsers without ``**options`` (HGETALL's, SMEMBERS',
XRANGE's...) then raise TypeError on a reply Redis gave, after the transaction ran.  The
client's parsers are wrapped to drop ``keys`` as the other paths do.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import ResponseCallbackT
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["GuardedConnection", "GuardedSSLConnection", "guard_cluster"]


def _lost(exc: AttributeError) -> RedisConnectionError | None:
    """The lost connection ``exc`` is a sign of: an attribute looked up on the ``None`` that a
    disconnect left in the socket's place (None: some other fault, raised as it is)."""
    if exc.obj is None:
        return RedisConnectionError(f"Connection closed while in use ({exc})")
    return None


class _ClosedUnderUs:
    """Turns a reader or writer gone mid-command (see the module's docstring) into ConnectionError."""

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except AttributeError as exc:
            lost = _lost(exc)
            if lost is None:
                raise
            raise lost from exc

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except AttributeError as exc:
            lost = _lost(exc)
            if lost is None:
                raise
            raise lost from exc


class GuardedConnection(_ClosedUnderUs, Connection):
    """A plain TCP connection to a cluster node."""


class GuardedSSLConnection(_ClosedUnderUs, SSLConnection):
    """A TLS connection to a cluster node (``rediss://``)."""


def _keys_dropped(parse: ResponseCallbackT) -> ResponseCallbackT:
    def parse_reply(response: Any, **options: Any) -> Any:
        options.pop("keys", None)  # a routing hint, not a parsing option
        return parse(response, **options)

    return parse_reply


def guard_cluster(client: RedisCluster) -> RedisCluster:
    """``client`` (not initialized yet) with its node connections guarded and its replies'
    parsers mended for transactions (see the module's docstring); returns it."""
    for command, parse in list(client.response_callbacks.items()):
        client.set_response_callback(command, _keys_dropped(parse))
    options = client.nodes_manager.connection_kwargs
    tls = issubclass(options.get("connection_class", Connection), SSLConnection)
    guarded = GuardedSSLConnection if tls else GuardedConnection
    options["connection_class"] = guarded
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = guarded
    return client
