"""A TCP proxy that makes exactly one XADD of a producer's send fail at Redis, the later ones not.

It stands between a producer (a Redis URL pointing at ``proxy.port``) and a real Redis,
parses the commands the client sends (RESP arrays), and forwards them unchanged but
for one: an XADD to an ingest stream that follows another XADD to that stream and is
followed by one more, in the same send.  That one has its id ``*`` rewritten to
``0-0``, which Redis refuses when it runs the command ("ERR The ID specified in XADD
must be greater than 0-0"): inside a MULTI, where it is queued like any other and fails
only at EXEC, the XADDs around it are still applied, and in a plain pipeline the same.
This is what a partly failed pipeline looks like to the collector: a run's later batch
in the stream, the one before it not (until the producer resends the send).

"Followed by one more in the same send": the proxy holds a candidate back until the
client's next command arrives.  A client that sent a pipeline waits for its replies
before it sends more, so a next command that comes while the candidate's reply is held
back is of the same send.  When none comes within :data:`HOLD` seconds (the candidate
was the last of its send), the candidate goes on unchanged and a later one is tried.
The hold picks the command to fail; no test asserts on it.

Replies pass through untouched.  The proxy runs its own asyncio loop in a daemon thread
(as ``tests.battery.proxy.FaultProxy`` does), so synchronous tests need no cooperation.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Final, Self

__all__ = ["XaddFailProxy"]

#: Seconds a candidate XADD is held back waiting for the client's next command.
HOLD: Final = 0.05
#: Bytes read from one side at once.
CHUNK: Final = 65536
#: What an XADD's id becomes to make Redis refuse it when it runs.
REFUSED_ID: Final = b"0-0"

Command = list[bytes]


def parse(buffer: bytearray) -> Command | bytes | None:
    """The first command in ``buffer`` (removed from it): a RESP array of bulk strings, or the
    raw bytes of anything else up to its line end; None if it is not all there yet."""
    if not buffer:
        return None
    if buffer[:1] != b"*":  # an inline command: passed on as it is
        end = buffer.find(b"\r\n")
        if end < 0:
            return None
        raw = bytes(buffer[: end + 2])
        del buffer[: end + 2]
        return raw
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, at, args = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        line = buffer.find(b"\r\n", at)
        if line < 0:
            return None
        size = int(buffer[at + 1 : line])  # "$<size>"
        start = line + 2
        if len(buffer) < start + size + 2:
            return None
        args.append(bytes(buffer[start : start + size]))
        at = start + size + 2
    del buffer[:at]
    return args


def encode(command: Command | bytes) -> bytes:
    """A command as RESP again."""
    if isinstance(command, bytes):
        return command
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def ingest_stream(command: Command | bytes) -> bytes | None:
    """The stream an XADD to an ingest stream with an automatic id writes to; else None."""
    if isinstance(command, bytes) or len(command) < 3 or command[0].upper() != b"XADD":
        return None
    return command[1] if b":ingest" in command[1] and b"*" in command[2:] else None


def refuse(command: Command) -> Command:
    """The XADD with its ``*`` id made one that Redis refuses."""
    changed = list(command)
    changed[changed.index(b"*", 2)] = REFUSED_ID
    return changed


class _Connection:
    """One client's commands on their way to Redis, and the candidate held back."""

    def __init__(self, proxy: XaddFailProxy, upstream: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.upstream = upstream
        self.previous: bytes | None = None  # the stream of the previous command, if an ingest XADD
        self.held: Command | None = None
        self.timer: asyncio.TimerHandle | None = None

    def command(self, command: Command | bytes) -> None:
        stream = ingest_stream(command)
        if self.held is not None:
            held, self.held = self.held, None
            if self.timer is not None:
                self.timer.cancel()
            if stream is not None and stream == ingest_stream(held) and not self.proxy.failed:
                self.proxy.failed.append(dict(zip(held[3::2], held[4::2], strict=False)))
                held = refuse(held)
            self.upstream.write(encode(held))
        if stream is not None and stream == self.previous and not self.proxy.failed and isinstance(command, list):
            self.held = command
            self.timer = asyncio.get_running_loop().call_later(HOLD, self.release)
        else:
            self.upstream.write(encode(command))
        self.previous = stream

    def release(self) -> None:
        """The candidate was the last of its send: on it goes, unchanged."""
        if self.held is not None:
            self.upstream.write(encode(self.held))
            self.held = None


class XaddFailProxy:
    """Forwards loopback connections to ``target``, failing one XADD as the module says.

    Attributes:
        port: the port it listens on (a free one).
        failed: the fields of the XADD it made fail (one at most).
    """

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0
        self.failed: list[dict[bytes, bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xadd-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, self.host, 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        connection = _Connection(self, up_writer)
        pumps = [asyncio.create_task(self._requests(reader, connection)), asyncio.create_task(_copy(up_reader, writer))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for side in (writer, up_writer):
                side.close()

    async def _requests(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        buffer = bytearray()
        while data := await reader.read(CHUNK):
            buffer += data
            while (command := parse(buffer)) is not None:
                connection.command(command)
            await connection.upstream.drain()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Replies from Redis to the client, as they come."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
