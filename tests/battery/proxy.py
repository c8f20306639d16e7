"""A TCP fault proxy: loopback connections forwarded to a target, with faults on command.

The battery puts it between a part of the pipeline and Redis (a Redis URL pointing at
``proxy.port``), so the part under test keeps its real client, sockets and timeouts
while the network misbehaves.  It runs its own asyncio loop in a daemon thread, so a
synchronous test, an asyncio test and the processes under test need no cooperation.
Every control method returns once the fault is in force.

Faults:
    stall / resume   stop forwarding in both directions (connections stay open: each
                     side's bytes wait, then flow again), as a frozen network path does
    slow(delay)      hold each chunk ``delay`` seconds before forwarding it
    drop             close every connection now (FIN); new ones are still accepted
    reset            abort every connection with an RST (SO_LINGER 0, then close)
    refuse / accept  stop listening (a connect is refused), and listen again
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar

__all__ = ["FaultProxy"]

T = TypeVar("T")

#: Bytes read from one side at once.
CHUNK: Final = 65536
#: Seconds a control call may take on the proxy's loop before the test fails.
CONTROL_TIMEOUT: Final = 10.0


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side, the target's side, and the two pumps between them."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


def _close(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close one side: politely (FIN), or at once with an RST."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


class FaultProxy:
    """Forwards connections from ``host:port`` (port 0: a free one) to ``target``.

    Attributes:
        accepted: connections accepted since start.
        forwarded: bytes forwarded, (client to target, target to client).
    """

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.accepted = 0
        self.forwarded = [0, 0]
        self._delay = 0.0
        self._links: set[_Link] = set()  # guarded by the proxy's loop, as every field below
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    def __repr__(self) -> str:
        return f"FaultProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]}, links={self.active})"

    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._links)

    def url(self, db: int = 0) -> str:
        """A Redis URL through the proxy."""
        return f"redis://{self.host}:{self.port}/{db}"

    # ------------------------------------------------------------------ control

    def start(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def stall(self) -> None:
        """Stop forwarding, both ways; connections stay open and new ones are accepted (and stall)."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again, starting with what waited."""
        self._call(self._set_flowing(True))

    def slow(self, delay: float) -> None:
        """Hold each chunk ``delay`` seconds before forwarding it (0: no delay)."""
        self._delay = delay

    def drop(self) -> None:
        """Close every open connection now (FIN to both sides)."""
        self._call(self._close_links(rst=False))

    def reset(self) -> None:
        """Abort every open connection with an RST to both sides."""
        self._call(self._close_links(rst=True))

    def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones carry on."""
        self._call(self._stop_listening())

    def accept(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    def close(self) -> None:
        """Stop listening, close every connection, stop the loop and its thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CONTROL_TIMEOUT)

    # -------------------------------------------------------- on the proxy's loop

    async def _start(self) -> None:
        self._flowing = asyncio.Event()  # bound to this loop
        self._flowing.set()
        await self._listen()

    async def _set_flowing(self, flowing: bool) -> None:
        (self._flowing.set if flowing else self._flowing.clear)()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # close() closes the listening socket at once; wait_closed() is not awaited, as
            # from Python 3.12 it also waits for the open connections, which stay open here.
            server.close()

    async def _close_links(self, *, rst: bool) -> None:
        for link in list(self._links):
            _close(link.client, rst=rst)
            _close(link.target, rst=rst)
        self._links.clear()

    async def _shutdown(self) -> None:
        await self._stop_listening()
        links = list(self._links)
        await self._close_links(rst=False)
        # The pumps, not the handlers, are cancelled: each handler then ends as it does when
        # its connection closes (asyncio's streams report a handler task that was cancelled).
        for link in links:
            for pump in link.pumps:
                pump.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=CONTROL_TIMEOUT / 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a handler runs in a task
        self._handlers.add(task)
        self.accepted += 1
        try:
            try:
                target_reader, target_writer = await asyncio.open_connection(*self.target)
            except OSError:  # the target is down: the client sees its connection closed
                writer.close()
                return
            await self._forward(_Link(writer, target_writer), reader, target_reader)
        finally:
            self._handlers.discard(task)

    async def _forward(self, link: _Link, reader: asyncio.StreamReader, target_reader: asyncio.StreamReader) -> None:
        """Pump both ways until one side ends; then close both (neither Redis nor HTTP clients half-close)."""
        link.pumps = [
            asyncio.create_task(self._pump(reader, link.target, 0)),
            asyncio.create_task(self._pump(target_reader, link.client, 1)),
        ]
        self._links.add(link)
        try:
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in link.pumps:
                pump.cancel()
            await asyncio.gather(*link.pumps, return_exceptions=True)
            if link in self._links:
                self._links.discard(link)
                _close(link.client, rst=False)
                _close(link.target, rst=False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: int) -> None:
        """Forward one direction chunk by chunk, holding each while stalled or slowed."""
        flowing = self._flowing
        try:
            while chunk := await reader.read(CHUNK):
                if self._delay:
                    await asyncio.sleep(self._delay)
                while not flowing.is_set():  # re-checked: a stall may follow a resume at once
                    await flowing.wait()
                # Counted first: the bytes may reach the other end (another thread) before the
                # next line runs.  No await since the check: a stall stops every later chunk.
                self.forwarded[direction] += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except OSError:  # reset or closed under us: the connection ends
            return
