"""How fast the server fans a live point out over SSE, and serves a downsampled long series.

Run: ``python -m bench.server [--subscribers 1,100,1000] [--seconds N] [--points N] [--json PATH]``

Starts a private redis-server and a collector (a thread of this process), then:

- SSE fan-out: the server runs in a process of its own; the subscribers, spread over a
  few client processes, follow one run's ``/events``; this process logs a point carrying
  ``time.time()`` every 20 ms.  Latency = a subscriber's receive time minus the sent time
  (the whole path: SDK batching, Redis, collector, live stream, server, HTTP).  Targets:
  p99 < 100 ms at 1,000 subscribers.
- ``GET /metrics/{name}?max_points=2000`` over a 1,000,000-point series, in a server
  process of its own: the first request after start, the first read of another series
  (fetch + decode), then the median of repeats (the decoded series cached), timed at
  the client (round trip) and in the server (a middleware around the handler, JSON
  encoding included).  Target: < 50 ms server time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from runstream import Experiment, Settings, Workspace
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.consumer.server import ServerSettings, create_app
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer

HOST = "127.0.0.1"
INTERVAL = 0.02  # seconds between logged points
WARMUP = 10  # first points of each level left out (connections settling)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ------------------------------------------------------------------ processes


def _serve(settings: dict[str, Any], port: int, ready: EventType) -> None:
    """The server process: the real app on ``port``."""
    configure_logging(level="warning")
    settings["data_dir"] = Path(settings["data_dir"])

    async def main() -> None:
        runner = web.AppRunner(create_app(ServerSettings(workspace=Settings(**settings))))
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=2048).start()
        ready.set()
        await asyncio.Event().wait()  # until terminated

    asyncio.run(main())


class _SseClient(asyncio.Protocol):
    """One subscriber on a raw loopback connection: receive time minus sent time of each point.

    A thousand subscribers share two cores with the server, so each is an asyncio
    protocol that parses what arrives in place (no task, no per-line reads): the SSE
    messages end with a blank line and each batch the server writes is one HTTP chunk,
    so splitting the bytes on blank lines finds every message's ``data:`` line whole.
    """

    def __init__(self, request: bytes, latencies: list[float], ended: asyncio.Future[None]) -> None:
        self.request = request
        self.latencies = latencies
        self.ended = ended
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast("asyncio.Transport", transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        *messages, self.pending = (self.pending + data).split(b"\n\n")
        for message in messages:
            if b"event: end" in message:
                if not self.ended.done():
                    self.ended.set_result(None)
                return
            at = message.find(b'data: {"id"')
            if at >= 0 and b'"type":"metric"' in message:
                line = message[at + 6 :].partition(b"\n")[0]
                self.latencies.extend(now - float(v) for v in json.loads(line)["values"])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_exception(exc or ConnectionError("the server closed the stream before the run ended"))


def _subscribers(url: str, n: int, results: mp.Queue[list[float]]) -> None:
    """A client process: ``n`` subscribers on ``url``; puts their latencies on ``results``."""
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()

    def subscriber(ended: asyncio.Future[None], latencies: list[float]) -> Callable[[], _SseClient]:
        return lambda: _SseClient(request, latencies, ended)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        endings = [loop.create_future() for _ in range(n)]
        transports = [(await loop.create_connection(subscriber(ended, latencies), host, port))[0] for ended in endings]
        try:
            await asyncio.wait_for(asyncio.gather(*endings), timeout=600)
        finally:
            for transport in transports:
                transport.close()
        return latencies

    results.put(asyncio.run(main()))


# --------------------------------------------------------------------- SSE fan-out


def _health(base: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{base}/api/v1/health") as response:
            return dict(await response.json())

    return asyncio.run(get())


def fan_out(
    workspace: Workspace, base: str, subscribers: int, seconds: float, processes: int, rate: float = 1 / INTERVAL
) -> list[float]:
    """Delivery latencies (seconds) of points logged at ``rate`` per second (every 20 ms by
    default; above 1,000/s, in bursts every millisecond), at ``subscribers`` clients."""
    run = Experiment(workspace, "bench-sse").start_logging()
    run.get_status()
    url = f"{base}/api/v1/runs/{run.id}/events"
    ctx = mp.get_context("spawn")
    results: mp.Queue[list[float]] = ctx.Queue()
    shares = [subscribers // processes + (1 if i < subscribers % processes else 0) for i in range(processes)]
    workers = [ctx.Process(target=_subscribers, args=(url, n, results), daemon=True) for n in shares if n]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 120
    while _health(base)["sse"]["clients"] < subscribers:  # every subscriber is on the feed
        if time.monotonic() > deadline:
            raise RuntimeError("the subscribers did not all connect within 120 s")
        time.sleep(0.1)
    points = int(seconds * rate)
    burst = max(1, int(rate / 1000))  # points logged together, every max(1 ms, 1 / rate)
    period = burst / rate
    next_at = time.monotonic()
    for i in range(0, points, burst):
        for step in range(i, min(points, i + burst)):
            run.log("sent_at", time.time(), step=step)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    run.complete(timeout=60)
    latencies = [x for _ in workers for x in results.get(timeout=120)]
    for worker in workers:
        worker.join(30)
    per_client = len(latencies) / subscribers
    if per_client != points:
        print(f"  warning: {per_client:.1f} points per subscriber, {points} logged", file=sys.stderr)
    warmup = int(WARMUP * INTERVAL * rate) * subscribers  # the first 0.2 s: connections settling
    return latencies[warmup:] if len(latencies) > warmup else latencies


# ------------------------------------------------------------ downsampled series


def metric_timing(times: list[float]) -> Any:
    """A middleware that adds to ``times`` each metric read's server time (JSON built included)."""

    @web.middleware
    async def timing(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        start = time.perf_counter()
        response = await handler(request)
        if isinstance(response, web.Response) and "/metrics/" in request.path:
            times.append(time.perf_counter() - start)
        return response

    return timing


def series_times(workspace: Workspace, points: int, max_points: int, repeats: int) -> tuple[list[float], list[float]]:
    """(client round trip, server time) in seconds of GET /metrics/loss?max_points= over ``points`` points."""
    run = Experiment(workspace, "bench-series").start_logging()
    for name in ("loss", "loss_b"):
        for i in range(points):
            run.log(name, (i % 1000) * 0.001 + (5.0 if i == points // 3 else 0.0))
    for i in range(100):
        run.log("tiny", float(i))
    run.complete(timeout=120)
    server_times: list[float] = []
    timing = metric_timing(server_times)

    async def measure() -> list[float]:
        app = create_app(ServerSettings(workspace=workspace.settings))
        app.middlewares.append(timing)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://{HOST}:{port}/api/v1/runs/{run.id}/metrics/loss?max_points={max_points}"
        times = []
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url.replace("/loss?", "/tiny?")) as response:  # warms imports, connections
                    await response.read()
                server_times.clear()
                # The first request is the server's first long series, the second another series'
                # first read (fetch + decode), the rest hit the cache.
                for i in range(repeats + 2):
                    start = time.perf_counter()
                    async with session.get(url.replace("/loss?", "/loss_b?") if i == 1 else url) as response:
                        body = await response.json()
                    times.append(time.perf_counter() - start)
                    if body["count"] != points or len(body["steps"]) > max_points:
                        raise RuntimeError(f"unexpected reply: count {body['count']}, {len(body['steps'])} points")
        finally:
            await runner.cleanup()
        return times

    client_times = asyncio.run(measure())
    return client_times, server_times


# ------------------------------------------------------------------------ main


def _series_process(
    settings: dict[str, Any],
    points: int,
    max_points: int,
    repeats: int,
    results: mp.Queue[tuple[list[float], list[float]]],
) -> None:
    configure_logging(level="warning")
    workspace = Workspace(settings["workspace"], redis_url=settings["redis_url"], data_dir=Path(settings["data_dir"]))
    results.put(series_times(workspace, points, max_points, repeats))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", default="1,100,1000", help="subscriber counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=12.0, help="logging time per subscriber count")
    parser.add_argument("--client-processes", type=int, default=max(1, min(4, (os.cpu_count() or 2))))
    parser.add_argument("--points", type=int, default=1_000_000, help="points of the downsampled series")
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench/results/server.json"))
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    counts = [int(c) for c in args.subscribers.split(",")]
    # The server processes (spawned) set numpy up as `runstream serve` does; see its comment.
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

    fan: dict[int, list[float]] = {}
    with TemporaryDirectory() as tmp, RedisServer() as redis_server:
        workspace = Workspace("bench", redis_url=redis_server.url, data_dir=Path(tmp))
        with BackgroundCollector(CollectorSettings(workspace=workspace.settings, reader="bench")):
            port = _free_port()
            ready = mp.get_context("spawn").Event()
            settings = {"redis_url": redis_server.url, "workspace": "bench", "data_dir": tmp}
            server = mp.get_context("spawn").Process(target=_serve, args=(settings, port, ready), daemon=True)
            server.start()
            try:
                if not ready.wait(60):
                    raise RuntimeError("the server did not start within 60 s")
                for count in counts:
                    fan[count] = fan_out(workspace, f"http://{HOST}:{port}", count, args.seconds, args.client_processes)
            finally:
                server.terminate()
                server.join(10)
            times: mp.Queue[tuple[list[float], list[float]]] = mp.get_context("spawn").Queue()
            series_args = (settings, args.points, args.max_points, args.repeats, times)
            measuring = mp.get_context("spawn").Process(target=_series_process, args=series_args, daemon=True)
            measuring.start()
            client_times, server_times = times.get(timeout=600)
            measuring.join(30)

    print(
        f"runstream server benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
        f" {args.client_processes} client processes"
    )
    print("  SSE fan-out, one point every 20 ms      p50         p99      samples")
    for count, latencies in fan.items():
        p50, p99 = _percentiles(latencies)
        target = "  (target p99 < 100 ms)" if count >= 1000 else ""
        print(
            f"    {count:>5} subscribers          {p50 * 1e3:8.2f} ms  {p99 * 1e3:8.2f} ms  {len(latencies):>8}{target}"
        )
    first, cold, warm = server_times[0], server_times[1], server_times[2:]
    print(f"  GET max_points={args.max_points} of {args.points:,} points")
    print(f"    server time, first after start        {first * 1e3:8.1f} ms")
    print(f"    server time, a series' first read     {cold * 1e3:8.1f} ms   (fetch + decode)  (target < 50 ms)")
    print(
        f"    server time, again (series cached)    {statistics.median(warm) * 1e3:8.1f} ms"
        f"   ({min(warm) * 1e3:.1f} - {max(warm) * 1e3:.1f}, median of {len(warm)})"
    )
    print(
        f"    client round trip, again              {statistics.median(client_times[2:]) * 1e3:8.1f} ms"
        f"   (first {client_times[0] * 1e3:.1f})"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "client_processes": args.client_processes,
                "fan_out": {
                    str(count): dict(zip(("p50_s", "p99_s"), _percentiles(lat), strict=True)) | {"samples": len(lat)}
                    for count, lat in fan.items()
                },
                "series": {
                    "points": args.points,
                    "max_points": args.max_points,
                    "server_s": server_times,
                    "client_s": client_times,
                },
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
