"""SSE under load: 500 clients and one stalled client on one run, on a real loopback server.

The server (``create_app`` on an AppRunner, in the test's loop) follows the run with one
Redis reader; the stalled client (a raw socket that sends its request and never reads)
must be dropped once ``client_buffer`` bytes wait unsent for it, while the 500 others
receive every update in order, and the process's memory stays within a per-client bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runstream import Experiment
from runstream.consumer.server import ServerSettings, create_app
from tests.conftest import CollectorThread

CLIENTS = 500
BUFFER = 150_000  # bytes: about 50 messages
MAX_BATCHES = 1000  # live entries (one per flush), at most: logging stops soon after the drop
AFTER_DROP = 30  # batches logged after the stalled client was dropped
POINTS_PER_BATCH = 150  # about 3 kB of JSON per message
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as statm:  # a procfs read, never blocks
        return int(statm.read().split()[1]) * PAGE


@pytest.fixture
async def server(
    experiment: Experiment, start_collector: Callable[..., CollectorThread]
) -> AsyncIterator[tuple[str, web.Application]]:
    """The real app on a loopback port (base URL, app), with a collector running.

    Its listening socket has a small send buffer (inherited by the connections), so a client
    that stops reading fills the kernel's buffers after ~100 kB rather than a few MB: the
    drop then comes within this test's few hundred messages, as it would later in production.
    """
    start_collector(experiment.workspace)
    app = create_app(ServerSettings(workspace=experiment.workspace.settings, client_buffer=BUFFER))
    runner = web.AppRunner(app)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    listener.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, listener)
    await site.start()
    host, port = listener.getsockname()[:2]
    try:
        yield f"http://{host}:{port}", app
    finally:
        await runner.cleanup()


@dataclass
class Received:
    """What one SSE client saw, checked as it arrives (so the test keeps no copy of the stream)."""

    points: int = 0  # metric values received, each the next expected one
    out_of_order: int = 0
    final: str | None = None
    ended: bool = False


async def follow(session: aiohttp.ClientSession, url: str) -> Received:
    """One SSE client: checks each metric value is the next in order, up to ``event: end``."""
    seen = Received()
    event = "message"
    async with session.get(url) as response:
        assert 200 == response.status
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                if event == "end":
                    seen.ended = True
                    return seen
                update = json.loads(line[5:])
                if update["type"] == "metric":
                    for value in update["values"]:
                        seen.out_of_order += value != seen.points
                        seen.points += 1
                seen.final = update.get("status", seen.final)
            elif not line:
                event = "message"
    return seen


async def stalled_client(base: str, path: str) -> socket.socket:
    """A connection that sends its request and never reads (a tiny receive buffer)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


async def drained_to_eof(sock: socket.socket) -> int:
    """Read what the server had sent until it closes the connection; the byte count."""
    loop = asyncio.get_running_loop()
    total = 0
    while chunk := await loop.sock_recv(sock, 65536):
        total += len(chunk)
    return total


async def health(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/api/v1/health") as response:
        return dict((await response.json())["sse"])


async def joined(session: aiohttp.ClientSession, base: str, n: int) -> bool:
    return int((await health(session, base))["clients"]) >= n


async def until(condition: Callable[[], Awaitable[bool]], what: str, bound: float = 30.0) -> None:
    """Re-check server state until ``condition`` holds, or fail after ``bound`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {bound} s waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval of a state check, not synchronisation by time


@pytest.mark.slow
class TestSseLoad:
    """500 SSE clients on one run all get every update in order while a stalled one is dropped,
    and memory stays bounded."""

    async def test_500_clients_and_a_stalled_one(
        self, experiment: Experiment, server: tuple[str, web.Application]
    ) -> None:
        base, _ = server
        run = experiment.start_logging()
        await asyncio.to_thread(run.get_status)
        path = f"/api/v1/runs/{run.id}/events?from=0-0"
        connector = aiohttp.TCPConnector(limit=CLIENTS + 10)
        # Bounds on a hang, not on speed: 500 clients in this process take over a minute on a
        # slow 2-core machine.
        timeout = aiohttp.ClientTimeout(total=240, sock_read=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, asyncio.timeout(200):
            stalled = await stalled_client(base, path)
            clients = [asyncio.create_task(follow(session, base + path)) for _ in range(CLIENTS)]
            await until(lambda: joined(session, base, CLIENTS + 1), "every client on the feed")
            baseline = peak = rss()

            batches, dropped_at = 0, None
            while batches < (dropped_at or MAX_BATCHES - AFTER_DROP) + AFTER_DROP:
                for i in range(POINTS_PER_BATCH):
                    run.log("loss", float(batches * POINTS_PER_BATCH + i))
                await asyncio.to_thread(run.flush)
                batches += 1
                peak = max(peak, rss())
                if dropped_at is None and (await health(session, base))["dropped"]:
                    dropped_at = batches
            await asyncio.to_thread(run.complete)
            while not all(c.done() for c in clients):
                await asyncio.wait(clients, timeout=0.2)
                peak = max(peak, rss())
            received = [c.result() for c in clients]
            stalled_got = await drained_to_eof(stalled)  # the server closed it: EOF, not a hang
            stalled.close()
            figures = await health(session, base)

        total = batches * POINTS_PER_BATCH

        assert [(total, 0, "Completed", True)] * CLIENTS == [
            (r.points, r.out_of_order, r.final, r.ended) for r in received
        ]
        assert dropped_at is not None
        assert figures["dropped"] >= 1
        assert 0 == figures["clients"]
        assert stalled_got < total * 20  # it was cut off, far short of the whole run
        # Per client the server holds at most BUFFER unsent bytes (only one that lags has any);
        # the 500 clients' own read buffers (64 kB each) live in this process too: 64 MB bounds
        # the growth after they all connected.
        assert peak - baseline < 64 * 1024 * 1024, f"RSS grew by {(peak - baseline) / 2**20:.1f} MiB"  # ~20 MiB seen
