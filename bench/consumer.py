"""How fast a logged value reaches a reader: live latency, wait latency, get_metrics.

Run: ``python -m bench.consumer [--samples N] [--points N] [--json PATH]``

Starts a private redis-server and a collector (in a thread of this process), then
measures side by side in one run:

- ``run.log`` -> live subscriber: p50/p99 of the time from the call to the moment a
  subscriber (another thread, its own connection) holds the point, one point every
  10 ms; beside it the floor, raw XADD -> blocked XREAD on the same server;
- ``complete()`` -> ``wait_for_completion`` returning in another process;
- ``get_metrics()`` of a 1,000,000-point series (read-your-writes check included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import cast

import redis

from runstream import Experiment, Workspace
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.connection import connect
from runstream.consumer.subscribe import Update, subscribe
from runstream.events import MetricsLogged
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def live_latency(workspace: Workspace, samples: int, rate: int = 100) -> list[float]:
    """Seconds from ``run.log`` to a live subscriber holding the point, ``samples`` points
    logged at ``rate`` per second (above 1,000/s, in bursts every millisecond)."""
    run = Experiment(workspace, "bench-live").start_logging()
    run.get_status()  # the record exists: the subscriber starts on a live run
    received: list[float] = []
    ready = threading.Event()

    async def follow() -> None:
        async with connect(workspace.settings.redis_url) as client:
            ready.set()
            async for item in subscribe(client, workspace.keys, run.id, start="now"):
                if isinstance(item, Update) and isinstance(item.event, MetricsLogged):
                    now = time.time()
                    received.extend(now - float(sent) for sent in item.event.values)

    follower = threading.Thread(target=lambda: asyncio.run(follow()), daemon=True)
    follower.start()
    ready.wait(10)
    time.sleep(0.2)  # the subscriber is in its blocking read
    burst = max(1, rate // 1000)
    period, next_at = burst / rate, time.monotonic()
    for i in range(0, samples, burst):
        for _ in range(min(burst, samples - i)):
            run.log("sent_at", time.time())
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    run.complete()
    follower.join(60)
    return received


def raw_latency(url: str, samples: int) -> list[float]:
    """Seconds from XADD to a reader blocked in XREAD holding the entry."""
    received: list[float] = []
    ready = threading.Event()

    def follow() -> None:
        client = redis.Redis.from_url(url)
        last: bytes | str = "$"
        ready.set()
        while len(received) < samples:
            reply = client.xread({"bench:raw-latency": last}, block=1000)
            for _, entries in cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", reply or []):
                for entry_id, fields in entries:
                    received.append(time.time() - float(fields[b"t"]))
                    last = entry_id
        client.close()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    ready.wait(10)
    time.sleep(0.1)
    client = redis.Redis.from_url(url)
    for _ in range(samples):
        client.xadd("bench:raw-latency", {"t": repr(time.time())})
        time.sleep(0.01)
    follower.join(30)
    client.delete("bench:raw-latency")
    client.close()
    return received


_WAITER = """
import sys, time
from runstream import Experiment, Run, Workspace
workspace = Workspace(sys.argv[1], redis_url=sys.argv[2], data_dir=sys.argv[3])
run = Run(Experiment(workspace, "bench-wait"), sys.argv[4])
print("ready", flush=True)
run.wait_for_completion(timeout=60)
print(repr(time.time()), flush=True)
"""


def wait_latency(workspace: Workspace, repeats: int) -> list[float]:
    """Seconds from ``complete()`` returning here to ``wait_for_completion`` returning in another process."""
    latencies = []
    for _ in range(repeats):
        run = Experiment(workspace, "bench-wait").start_logging()
        run.get_status()
        settings = workspace.settings
        waiter = subprocess.Popen(  # our own interpreter and script
            [sys.executable, "-c", _WAITER, settings.workspace, settings.redis_url, str(settings.data_dir), run.id],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert waiter.stdout is not None  # noqa: S101  # stdout=PIPE
        waiter.stdout.readline()  # ready: it is about to wait
        time.sleep(0.5)  # let it reach its blocking read
        run.complete(timeout=None)  # sent: don't wait for the record here, the other process does
        sent = time.time()
        run.flush()
        returned = float(waiter.stdout.readline())
        waiter.wait(30)
        latencies.append(returned - sent)
    return latencies


def get_metrics_time(workspace: Workspace, points: int, repeats: int) -> list[float]:
    """Seconds for ``get_metrics()`` of one ``points``-long series, after it is collected."""
    run = Experiment(workspace, "bench-read").start_logging()
    for i in range(points):
        run.log("loss", i * 0.5)
    run.complete()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = run.get_metrics()
        times.append(time.perf_counter() - start)
        assert len(metrics["loss"]) == points  # type: ignore[arg-type]  # noqa: S101  # a list here
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="latency samples")
    parser.add_argument("--points", type=int, default=1_000_000, help="points of the get_metrics series")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/consumer.json"))
    args = parser.parse_args(argv)
    configure_logging(level="warning")  # the collector's lines would drown the report

    with TemporaryDirectory() as tmp, RedisServer() as server:
        workspace = Workspace("bench", redis_url=server.url, data_dir=Path(tmp))
        with BackgroundCollector(CollectorSettings(workspace=workspace.settings, reader="bench")):
            raw = raw_latency(server.url, args.samples)
            live = live_latency(workspace, args.samples)
            waits = wait_latency(workspace, args.repeats)
            reads = get_metrics_time(workspace, args.points, args.repeats)

    raw50, raw99 = _percentiles(raw)
    live50, live99 = _percentiles(live)
    print(f"runstream consumer benchmark: {args.samples} latency samples, Python {sys.version.split()[0]}")
    print(f"  raw XADD -> XREAD             p50 {raw50 * 1e3:7.2f} ms   p99 {raw99 * 1e3:7.2f} ms")
    print(
        f"  run.log -> subscriber         p50 {live50 * 1e3:7.2f} ms   p99 {live99 * 1e3:7.2f} ms"
        f"   ({live50 / raw50:.1f}x / {live99 / raw99:.1f}x raw)"
    )
    print(
        f"  complete -> wait returns      median {statistics.median(waits) * 1e3:7.2f} ms"
        f"   ({min(waits) * 1e3:.1f} - {max(waits) * 1e3:.1f})"
    )
    print(
        f"  get_metrics, {args.points:,} points  median {statistics.median(reads) * 1e3:7.1f} ms"
        f"   ({min(reads) * 1e3:.1f} - {max(reads) * 1e3:.1f})"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"raw_latency_s": raw, "live_latency_s": live, "wait_latency_s": waits, "get_metrics_s": reads})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
