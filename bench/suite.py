"""The benchmark sections of ``python -m bench``: each returns rows for the table.

Every section measures runstream and what it is compared with in the same run, on
the same machine: the floor (a bare append, raw Redis) and, where the question is
what a training loop pays, MLflow and W&B offline (measured in a venv of their own by
:mod:`bench.peers`).  The stack is real: a private redis-server, collector processes,
the server in a process of its own.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import redis

from bench import collector as collector_bench
from bench import consumer as consumer_bench
from bench import producer as producer_bench
from bench import server as server_bench
from bench.archive import archive_rows
from bench.cluster import cluster_rows
from bench.report import Row
from bench.scaling import collector_process, drains
from bench.search import search_rows
from bench.training_loop import loop_rows
from runstream import Experiment, Workspace
from runstream.redis_server import RedisServer

__all__ = ["FULL", "QUICK", "Sizes", "Stack", "run_sections"]

#: How bench.peers' keys read in the table.
PEER_LABELS = {
    "mlflow_file": "MLflow log_metric (file store)",
    "mlflow_sqlite": "MLflow log_metric (sqlite)",
    "mlflow_async": "MLflow log_metric (synchronous=False)",
    "wandb_offline": "W&B wandb.log (offline)",
}

THROUGHPUT = "2. throughput: points logged as fast as possible"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each section measures (``--quick`` takes the small ones)."""

    points: int  # logged per throughput measure, and the long series read back
    calls: int  # run.log calls timed on the hot path
    repeats: int
    rates: tuple[int, ...]  # offered loads for the live latency, points/s
    latency_seconds: float
    subscribers: tuple[int, ...]  # SSE clients on one run
    fan_seconds: float
    peer_calls: int
    peer_points: int
    collectors: tuple[int, ...]  # collector processes for the scaling measure
    scaling_points: int  # points drained per measure, here and in the Redis Cluster section (bench.cluster)


FULL = Sizes(
    1_000_000, 1_000_000, 3, (10, 1_000, 100_000), 4.0, (1, 100, 1_000), 8.0, 2_000, 5_000, (1, 2, 4), 1_000_000
)
QUICK = Sizes(200_000, 200_000, 2, (10, 1_000, 100_000), 1.5, (1, 100), 3.0, 300, 1_000, (1, 2), 200_000)


@dataclass
class Stack:
    """The private Redis, the suite's workspace and its collector process, the server's URL."""

    redis: RedisServer
    workspace: Workspace
    data_dir: Path
    base_url: str


@contextmanager
def stack(data_dir: Path) -> Iterator[Stack]:
    """Redis, one collector process and the server process for the workspace ``bench``."""
    with RedisServer() as server:
        workspace = Workspace("bench", redis_url=server.url, data_dir=data_dir)
        collector = collector_process(workspace)
        port = server_bench._free_port()
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        settings = {"redis_url": server.url, "workspace": "bench", "data_dir": str(data_dir)}
        serving = ctx.Process(target=server_bench._serve, args=(settings, port, ready), daemon=True)
        serving.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("the server did not start within 60 s")
            yield Stack(server, workspace, data_dir, f"http://{server_bench.HOST}:{port}")
        finally:
            serving.terminate()
            serving.join(10)
            collector.terminate()
            collector.wait(30)


def _repeat(repeats: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(repeats)]


# ------------------------------------------------------------------- 1. hot path


def bare_append_tuple(n: int) -> float:
    """Seconds per ``deque.append`` of a (name, value) tuple: the floor of any in-process buffer."""
    buffer: list[tuple[str, float]] = []
    append = buffer.append
    start = time.perf_counter()
    for i in range(n):
        append(("loss", i * 0.5))
    return (time.perf_counter() - start) / n


def hot_path(st: Stack, sizes: Sizes, peers: dict[str, Any]) -> list[Row]:
    n, r = sizes.calls, sizes.repeats
    floor = [s * 1e9 for s in _repeat(r, lambda: bare_append_tuple(n))]
    alone = [producer_bench.log_hot_path(st.workspace, n)[0] * 1e9 for _ in range(r)]
    live = [producer_bench.log_live(st.workspace, n)[0] * 1e9 for _ in range(r)]
    peer_rows = {PEER_LABELS.get(k, k): values for k, values in peers.get("hot_path_ns", {}).items() if values}
    section = "1. hot path: one run.log(name, value) call"
    return [
        Row(section, "list.append of a tuple (the floor)", "ns/call", floor),
        Row(
            section,
            "run.log, the call alone",
            "ns/call",
            alone,
            {"list.append": floor, **peer_rows},
            target="<= 5x append; >= 300x cheaper than the cheapest peer",
            met=median(alone) <= 5 * median(floor)
            and all(300 * median(alone) <= median(values) for values in peer_rows.values()),
            profile="producer",
        ),
        Row(section, "run.log while the logger sends", "ns/call", live, {"list.append": floor}),
    ]


# ------------------------------------------------------------------ 2. throughput


def redis_benchmark_xadd(port: int, requests: int) -> float:
    """Entries/s of ``redis-benchmark`` running XADD (pipelined 64): one point per entry, the server's floor."""
    xadd = ["XADD", "bench:redis-benchmark", "*", "v", "1.5"]
    command = ["redis-benchmark", "-p", str(port), "-n", str(requests), "-P", "64", "-q", "--csv", *xadd]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    cleanup = ["redis-cli", "-p", str(port), "DEL", "bench:redis-benchmark"]
    subprocess.run(cleanup, capture_output=True, check=False)
    row = next(line for line in out.splitlines() if line.startswith('"XADD'))
    return float(row.split(",")[1].strip('"'))


def end_to_end(workspace: Workspace, n: int) -> float:
    """Points/s from the first run.log to the record holding all ``n`` points (the collector applied them)."""
    run = Experiment(workspace, "bench-e2e").start_logging()
    log = run.log
    start = time.perf_counter()
    for i in range(n):
        log("loss", i * 0.5)
    run.complete(timeout=300)
    run.get_status()  # reads wait until the collector has applied what this process sent
    return n / (time.perf_counter() - start)


def throughput(st: Stack, sizes: Sizes, peers: dict[str, Any]) -> list[Row]:
    n, r = sizes.points, sizes.repeats
    into_redis = [producer_bench.log_live(st.workspace, n)[1] for _ in range(r)]
    raw = _repeat(r, lambda: producer_bench.raw_redis(st.redis.url, n))
    bench_xadd = _repeat(r, lambda: redis_benchmark_xadd(st.redis.port, min(n, 200_000)))
    e2e = _repeat(r, lambda: end_to_end(st.workspace, n))
    peer_rates = {
        f"{PEER_LABELS.get(k, k)} + flush, {peers.get('n', {}).get('points', '?')} points": values
        for k, values in peers.get("throughput_pps", {}).items()
        if values
    }
    section = THROUGHPUT
    return [
        Row(
            section,
            f"{n:,} points into Redis (producer flush)",
            "points/s",
            into_redis,
            {"raw pipelined XADD of msgpack batches": raw, "redis-benchmark XADD (1 point/entry)": bench_xadd},
            lower_is_better=False,
            target=">= 1,000,000",
            met=median(into_redis) >= 1_000_000,
            profile="producer",
        ),
        Row(
            section,
            f"end to end, {n:,} points: in the record (collector applied)",
            "points/s",
            e2e,
            peer_rates,
            lower_is_better=False,
            target=">= 500,000",
            met=median(e2e) >= 500_000,
            profile="collector",
        ),
    ]


def collector_and_storage(redis_server: RedisServer, data_dir: Path, sizes: Sizes) -> list[Row]:
    """One collector applying a filled shard on one core; bytes per stored point (in a flushed db)."""
    repeats = [collector_bench.one_repeat(redis_server, data_dir, sizes.points, i + 100) for i in range(sizes.repeats)]
    per_entry = one_entry_per_point_bytes(redis_server.url, min(sizes.points, 100_000))
    return [
        Row(
            THROUGHPUT,
            "one collector applying batched input (one core)",
            "points/s",
            [x.apply_points_per_s for x in repeats],
            {"raw XRANGE + unpack of the same shard": [x.raw_points_per_s for x in repeats]},
            lower_is_better=False,
            target=">= 2,000,000",
            met=median([x.apply_points_per_s for x in repeats]) >= 2_000_000,
            profile="collector",
        ),
        Row(
            "4. storage",
            "Redis memory per stored scalar point (INFO delta)",
            "bytes",
            [x.used_memory_bytes_per_point for x in repeats],
            {"one stream entry per point": [per_entry]},
            target="<= 16",
            met=median([x.used_memory_bytes_per_point for x in repeats]) <= 16,
        ),
    ]


def one_entry_per_point_bytes(url: str, n: int) -> float:
    """INFO used_memory growth per point when each point is its own stream entry."""
    client = redis.Redis.from_url(url)
    try:
        client.delete("bench:per-point")
        before = collector_bench.used_memory(client)
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd("bench:per-point", {"s": i, "v": i * 0.5, "t": 1_800_000_000.0 + i})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        grown = collector_bench.used_memory(client) - before
        client.delete("bench:per-point")
        return grown / n
    finally:
        client.close()


# ------------------------------------------------------------------ 3. live latency


def _percentile_rows(
    section: str, name: str, samples: list[float], target: str = "", limits: tuple[float, float] | None = None
) -> Row:
    """p50 / p99 / max of ``samples`` (seconds) in ms; ``limits``: the p50 and p99 targets, in ms."""
    ordered = sorted(samples) or [float("nan")]
    p50 = ordered[len(ordered) // 2] * 1e3
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
    worst = ordered[-1] * 1e3
    shown = f"{p50:.2f} / {p99:.2f} / {worst:.1f}"
    met = None if limits is None else p50 < limits[0] and p99 < limits[1]
    label = f"{name} ({len(samples):,} samples)"
    return Row(section, label, "ms", [p50, p99, worst], target=target, shown=shown, met=met)


def live_latency(st: Stack, sizes: Sizes) -> list[Row]:
    section = "3. live latency, log() to receiver: p50 / p99 / max"
    rows = []
    raw = consumer_bench.raw_latency(st.redis.url, 200)
    rows.append(_percentile_rows(section, "raw XADD -> XREAD (the floor), 100/s", raw))
    for rate in sizes.rates:
        samples = consumer_bench.live_latency(st.workspace, int(rate * sizes.latency_seconds), rate)
        # p99 only: a point waits up to a linger (10 ms) for the sender, so the median is about
        # half a linger by design (DESIGN §3: amortized sending), where it was a millisecond.
        target, limits = ("p99 < 25", (math.inf, 25.0)) if rate == 1_000 else ("", None)
        rows.append(_percentile_rows(section, f"Python subscriber at {rate:,} points/s", samples, target, limits))
    for rate in sizes.rates:
        samples = server_bench.fan_out(st.workspace, st.base_url, 1, sizes.latency_seconds, 1, rate=rate)
        rows.append(_percentile_rows(section, f"SSE client at {rate:,} points/s", samples))
    for count in sizes.subscribers:
        samples = server_bench.fan_out(st.workspace, st.base_url, count, sizes.fan_seconds, 2)
        target, limits = ("p99 < 100", (math.inf, 100.0)) if count == 1_000 else ("", None)
        name = f"SSE fan-out, {count:,} clients, 50 points/s"
        rows.append(_percentile_rows(section, name, samples, target, limits))
    return rows


# --------------------------------------------------------------------- 5. reading


def reading(st: Stack, sizes: Sizes) -> list[Row]:
    n = sizes.points
    reads = [t * 1e3 for t in consumer_bench.get_metrics_time(st.workspace, n, sizes.repeats)]
    ctx = mp.get_context("spawn")
    times: mp.Queue[tuple[list[float], list[float]]] = ctx.Queue()
    settings = {"redis_url": st.redis.url, "workspace": "bench", "data_dir": str(st.data_dir)}
    measuring = ctx.Process(target=server_bench._series_process, args=(settings, n, 2000, 5, times), daemon=True)
    measuring.start()
    _, server_times = times.get(timeout=600)
    measuring.join(30)
    cached = [t * 1e3 for t in server_times[2:]]
    section = f"5. reading a {n:,}-point series"
    return [
        Row(section, "run.get_metrics()", "ms", reads, target="< 200", met=median(reads) < 200, profile="reading"),
        Row(section, "chart query max_points=2000, a series' first read", "ms", [server_times[1] * 1e3]),
        Row(
            section,
            "chart query max_points=2000, cached",
            "ms",
            cached,
            target="< 50",
            met=median(cached) < 50,
        ),
    ]


# --------------------------------------------------------------------- 6. scaling


def scaling(redis_server: RedisServer, data_dir: Path, processes: int, points: int) -> float:
    """Points/s applied by ``processes`` collector processes sharing the default ingest shards, filled by 8 runs."""
    workspace = Workspace(f"scale{processes}", redis_url=redis_server.url, data_dir=data_dir)
    return drains(workspace, processes, points, runs=8)[0].rate


def scaling_rows(redis_server: RedisServer, data_dir: Path, sizes: Sizes) -> list[Row]:
    rates = {k: [scaling(redis_server, data_dir, k, sizes.scaling_points)] for k in sizes.collectors}
    one = rates[sizes.collectors[0]]
    section = f"6. scaling: {sizes.scaling_points:,} points applied, {os.cpu_count()} cores"
    return [
        Row(
            section,
            f"{k} collector process{'es' if k > 1 else ''}",
            "points/s",
            values,
            {"1 process": one} if k > 1 else {},
            lower_is_better=False,
        )
        for k, values in rates.items()
    ]


def run_sections(sizes: Sizes, data_dir: Path, peers: dict[str, Any], say: Callable[[str], None]) -> list[Row]:
    """Every section, in order; ``say`` reports progress."""
    rows: list[Row] = []
    with stack(data_dir) as st:
        sections: list[tuple[str, Callable[[], list[Row]]]] = [
            ("hot path", lambda: hot_path(st, sizes, peers)),
            ("throughput", lambda: throughput(st, sizes, peers)),
            ("live latency", lambda: live_latency(st, sizes)),
            ("reading", lambda: reading(st, sizes)),
            ("training loop", lambda: loop_rows(st.workspace, sizes is QUICK, bool(peers), say)),
        ]
        for title, section in sections:
            started = time.perf_counter()
            rows += section()
            say(f"{title}: {time.perf_counter() - started:.0f} s")
    with RedisServer() as redis_server:  # a Redis of their own: these flush it
        started = time.perf_counter()
        rows += collector_and_storage(redis_server, data_dir, sizes)
        say(f"collector and storage: {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        rows += scaling_rows(redis_server, data_dir, sizes)
        say(f"scaling: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()  # a Redis and a Redis Cluster of their own, the same points as scaling
    rows += cluster_rows(data_dir, sizes.scaling_points, sizes.repeats, say)
    say(f"Redis Cluster: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()  # a Redis of its own: its used_memory is what is measured
    rows += archive_rows(data_dir, sizes is QUICK, say)
    say(f"archive: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()  # a Redis of its own, and a sweep of 10,000 runs in it
    rows += search_rows(sizes is QUICK, say)
    say(f"search: {time.perf_counter() - started:.0f} s")
    order = ["1.", "2.", "3.", "4.", "5.", "6.", "7.", "8.", "9.", "10"]
    return sorted(rows, key=lambda row: order.index(row.section[:2]) if row.section[:2] in order else 99)
