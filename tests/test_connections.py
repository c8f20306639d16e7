"""``runstream serve`` bounds its connections: one that idles (a client sending its headers a byte a
second, or nothing at all) is closed within ``--idle-timeout``, and past ``--max-connections`` a new
connection takes the place of the one idle longest, or, when all are in a request, gets 503 at once;
either way the server goes on serving.

The server is a process of its own; the clients are raw sockets on loopback, bounded in number and time.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runstream import Experiment
from tests.conftest import CollectorThread, wait_until
from tests.server_process import ServeProcess, read_status, status_of

IDLE_TIMEOUT = 2.0
LIMIT = 6
#: A request whose headers take most of a minute to send at a byte a second: a slow-header client.
SLOW_REQUEST = b"GET /api/v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 10 + b"\r\n\r\n"
GET = b"GET /api/v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def closed_within(sock: socket.socket, wait: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``wait`` seconds; what it sends before is dropped."""
    deadline = time.monotonic() + wait
    while True:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
        if time.monotonic() >= deadline:
            return False


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Raw client sockets a test opens; closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect(port: int, sockets: list[socket.socket], send: bytes = b"") -> socket.socket:
    """A new connection to the server on ``port`` that has sent ``send``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sockets.append(sock)
    sock.sendall(send)
    return sock


class TestIdleConnections:
    """A connection without a request in progress is closed after ``--idle-timeout`` seconds: from its
    opening (nothing sent, or headers sent a byte a second) or from the end of its last response."""

    @pytest.fixture
    def server(self, experiment: Experiment, tmp_path: Path) -> Iterator[ServeProcess]:
        options = ("--idle-timeout", str(IDLE_TIMEOUT))
        with ServeProcess(experiment.workspace, tmp_path / "server.log", *options) as server:
            yield server

    def test_headers_a_byte_a_second_are_cut(self, server: ServeProcess, sockets: list[socket.socket]) -> None:
        sock = connect(server.port, sockets)

        sent = 0
        for byte in SLOW_REQUEST:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # reset: the server closed it
                break
            sent += 1
            if closed_within(sock, 1.0):  # the next byte a second later
                break

        # Cut after about IDLE_TIMEOUT bytes; the bound leaves room for a loaded machine, and is far
        # below the whole request (what a server without the bound lets a client trickle).
        assert sent <= 5 * IDLE_TIMEOUT < len(SLOW_REQUEST), f"{sent} of {len(SLOW_REQUEST)} bytes sent"

    def test_silent_and_kept_alive_connections_are_closed(
        self, server: ServeProcess, sockets: list[socket.socket]
    ) -> None:
        silent = connect(server.port, sockets)
        kept = connect(server.port, sockets, GET.replace(b"Connection: close", b"Connection: keep-alive"))
        first = kept.recv(12)

        assert b"HTTP/1.1 200" == first
        assert closed_within(silent, 3 * IDLE_TIMEOUT)
        assert closed_within(kept, 3 * IDLE_TIMEOUT)


class TestConnectionLimit:
    """Past ``--max-connections`` a new connection closes the one idle longest; when every connection is in
    a request (SSE streams), the new one gets 503 with Retry-After at once; the server keeps serving."""

    @pytest.fixture
    def server(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], tmp_path: Path
    ) -> Iterator[ServeProcess]:
        start_collector(experiment.workspace)
        options = ("--max-connections", str(LIMIT), "--idle-timeout", "60")
        with ServeProcess(experiment.workspace, tmp_path / "server.log", *options) as server:
            yield server

    def test_idle_connections_make_room(self, server: ServeProcess, sockets: list[socket.socket]) -> None:
        extra = 3
        idle = [connect(server.port, sockets, b"GET /api/v1/exp") for _ in range(LIMIT + extra)]
        wait_until(lambda: sum(closed_within(s, 0) for s in idle) >= extra, 30, f"{extra} idle connections closed")

        served = asyncio.run(status_of("127.0.0.1", server.port, GET))[0]
        still_open = [s for s in idle if not closed_within(s, 0)]

        assert 200 == served
        assert len(still_open) <= LIMIT - 1

    async def test_when_all_are_in_a_request_a_new_one_gets_503(
        self, server: ServeProcess, experiment: Experiment
    ) -> None:
        run = experiment.start_logging()
        await asyncio.to_thread(run.get_status)
        events = f"GET /api/v1/runs/{run.id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        streams = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(LIMIT)]
        for reader, writer in streams:
            writer.write(events)
            await writer.drain()
            assert 200 == (await read_status(reader))[0]  # each connection is in its request

        refused, headers = await status_of("127.0.0.1", server.port, GET)
        streams[0][1].close()  # one stream ends: its connection goes when the feed writes next
        run.log("loss", 1.0)
        await asyncio.to_thread(run.flush)
        served = await self._served_again(server.port)
        for _, writer in streams:
            writer.close()
        await asyncio.to_thread(run.complete)

        assert (503, "1") == (refused, headers["retry-after"])
        assert served

    @staticmethod
    async def _served_again(port: int, bound: float = 30.0) -> bool:
        """Whether a request is served (200) within ``bound`` seconds, each try a new connection."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if 200 == (await status_of("127.0.0.1", port, GET))[0]:
                return True
            await asyncio.sleep(0.05)  # interval between two checks of the server's state
        return False
