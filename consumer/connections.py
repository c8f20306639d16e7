"""The server's connections, bounded: how many, and how long one may idle.

aiohttp bounds a request's line and headers in size, and closes a connection that idles
between two requests past its keep-alive timeout, but it counts no connections and does
not time the first request of one.  So a client that opens connections and sends its
headers a byte a second holds them for as long as it likes, until the process runs out
of file descriptors.  :class:`LimitedSite` serves the application with both bounds:

- *idle*: a connection that has no request in progress for ``idle_timeout`` seconds,
  from its opening or from the end of its last request (a slow-header client among
  them), is closed; aiohttp's keep-alive timeout (set to the same) covers the time
  between two requests, :class:`Connections` the time up to the first.
- *count*: at ``limit`` open connections, a new one takes the place of the one that
  has idled longest (waiting for its headers, or kept alive between requests); when
  every connection is in a request (SSE streams, uploads) or still opening (a burst
  the event loop accepted at once), the new one is answered ``503 Service
  Unavailable`` with ``Retry-After: 1`` and closed.

Connections are counted as they are made and lost (each aiohttp protocol is wrapped by
``_Counted``), requests in progress per connection by :meth:`Connections.middleware`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from runstream.consumer.security import Handler

__all__ = ["CONNECTIONS", "Connections", "LimitedSite"]

_log = structlog.get_logger("runstream.server")
_WARN_EVERY = 10.0  # seconds between two connections_full lines
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Connections:
    """What the server knows of its connections: which are open, which are in a request, and
    which still wait for their first.

    Counted as the connections are made (not as aiohttp registers them: the event loop
    accepts a burst of connections before any of them is registered).  Guarded by the
    event loop: touched only by its callbacks and the request middleware.
    """

    def __init__(self, limit: int, idle_timeout: float) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        #: The open connections (their aiohttp protocols), oldest first.
        self.open: dict[RequestHandler, None] = {}
        #: Requests in progress per connection; absent: none.
        self.in_request: Counter[RequestHandler] = Counter()
        #: Connections still waiting for their first request (each leaves at it, or at its deadline).
        self.awaiting_first: set[RequestHandler] = set()
        #: Idle connections closed to make room, and connections turned away (503).
        self.evicted = 0
        self.refused = 0
        self._warned_at = -1e9

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the request as in progress on its connection while its handler runs."""
        protocol = request.protocol
        self.awaiting_first.discard(protocol)
        self.in_request[protocol] += 1
        try:
            return await handler(request)
        finally:
            self.in_request[protocol] -= 1
            if self.in_request[protocol] <= 0:
                del self.in_request[protocol]

    def make_room(self) -> bool:
        """Whether a new connection may open, after closing the one idle longest if the
        count is at the limit."""
        if len(self.open) < self.limit:
            return True
        for protocol in self.open:
            if protocol not in self.in_request and protocol.transport is not None:
                self.closed(protocol)
                protocol.force_close()
                self.evicted += 1
                return True
        self.refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= _WARN_EVERY:  # one line per spell, not one per refused connection
            self._warned_at = now
            _log.warning(
                "connections_full", limit=self.limit, refused=self.refused, hint="each is in a request, or opening"
            )
        return False

    def opened(self, protocol: RequestHandler) -> None:
        """A new connection: counted, with ``idle_timeout`` seconds to begin its first request."""
        self.open[protocol] = None
        self.awaiting_first.add(protocol)
        asyncio.get_running_loop().call_later(self.idle_timeout, self._first_request_due, protocol)

    def closed(self, protocol: RequestHandler) -> None:
        """A connection that is gone (or going): no longer counted."""
        self.open.pop(protocol, None)
        self.awaiting_first.discard(protocol)

    def _first_request_due(self, protocol: RequestHandler) -> None:
        if protocol in self.awaiting_first:
            self.closed(protocol)
            protocol.force_close()


class _Counted(asyncio.Protocol):
    """aiohttp's protocol of one connection, seen through :class:`Connections`: its end
    (``connection_lost``) is counted; everything else is passed on as it is."""

    __slots__ = ("_connections", "_inner")

    def __init__(self, inner: RequestHandler, connections: Connections) -> None:
        self._inner, self._connections = inner, connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.closed(self._inner)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> None:  # None: the transport closes itself (aiohttp's answer too)
        self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refuse(asyncio.Protocol):
    """A connection past the limit when none can make room: 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast("asyncio.Transport", transport).write(_BUSY)
        transport.close()


#: The application's :class:`Connections` (its middleware counts the requests).
CONNECTIONS = web.AppKey("connections", Connections)


class LimitedSite(web.BaseSite):
    """A TCP site of ``runner`` whose connections the application's :class:`Connections` bounds.

    Like ``web.TCPSite`` (which it replaces in ``runstream serve``), with the connection
    factory wrapped: each new connection first makes room (or is refused), and gets a
    deadline for its first request.
    """

    __slots__ = ("_connections", "_host", "_listening", "_port")

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._connections = runner.app[CONNECTIONS]
        self._listening: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        sockets = self._listening.sockets if self._listening is not None else ()
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover  # BaseSite.__init__ already refused an unset-up runner
            raise RuntimeError("call runner.setup() before starting a site")
        connections = self._connections

        def connection() -> asyncio.Protocol:
            if not connections.make_room():
                return _Refuse()
            protocol = server()
            connections.opened(protocol)
            return _Counted(protocol, connections)

        self._listening = await asyncio.get_running_loop().create_server(
            connection, self._host, self._port, backlog=self._backlog
        )
        self._server = self._listening  # as aiohttp's own sites set it: BaseSite.stop closes it
