"""How fast the collector folds ingest entries into run records, and what a point costs in Redis.

Run: ``python -m bench.collector [--points N] [--repeats R] [--json PATH]``

Starts a private redis-server; for each repeat, in a fresh database:

- fills one run's ingest shard with N scalar points through the real producer
  (``run.log`` then ``run.complete``: entries of up to 16,384 points);
- the raw floor: XRANGE of those entries in pages of the collector's read size, and
  msgpack unpacking of each payload, in points/s: what any Python reader pays before
  doing anything with the points;
- apply: one collector, in this process, timed from its start until its
  ``stats.points`` reaches N, in points/s;
- memory: bytes per stored point, counted two ways once the collector has stopped:
  MEMORY USAGE (SAMPLES 0) of the run's record keys, and the growth of INFO
  ``used_memory`` over the empty database once the acked ingest entries are trimmed
  away exactly (the collector itself trims approximately, by whole stream nodes).

Then the paced pattern (:func:`paced_memory`), as a training loop logs: R runs at
once, one point per metric per step, M metrics, S steps/s, through the real SDK (its
amortized sender) with a collector applying as they go; bytes per stored point of the
runs' keys (MEMORY USAGE: series, live stream and the rest) and of INFO ``used_memory``,
at the end, then once the ended runs' live streams are trimmed (what a collector does
``live_kept_after_end`` after the end, a minute by default: one pass of its trimmer,
its clock a minute on).

Prints the median of R repeats (min-max beside it) against the targets (2,000,000
points/s apply, 9 B/point batched, 12 B/point paced) and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Final, cast

import msgpack
import redis
import structlog

from runstream import Experiment, Workspace
from runstream.collector import Collector, CollectorSettings
from runstream.collector.ended import EndedStreams
from runstream.connection import connect
from runstream.keys import INGEST_GROUP
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer

TARGET_APPLY: Final = 2_000_000.0
TARGET_BYTES: Final = 9.0
#: Bytes per point for the paced pattern, live stream included.
TARGET_PACED_BYTES: Final = 12.0


@dataclass(frozen=True, slots=True)
class Repeat:
    """The figures of one repeat."""

    entries: int
    fill_s: float
    raw_points_per_s: float
    apply_points_per_s: float
    record_bytes_per_point: float
    series_bytes_per_point: float
    used_memory_bytes_per_point: float


def fill(workspace: Workspace, n: int) -> str:
    """Log ``n`` points of one metric through the producer; the run's id once all is in Redis."""
    run = Experiment(workspace, "bench-collector").start_logging()
    log = run.log
    for i in range(n):
        log("loss", i * 0.5)
    run.complete(timeout=300)  # no collector is running yet: this only waits for Redis
    return run.id


def raw_floor(client: redis.Redis, stream: str, page_size: int) -> tuple[float, int, int]:
    """XRANGE the shard in pages of ``page_size`` and unpack each payload: points/s, points and entries seen."""
    unpackb = msgpack.unpackb
    points = entries = 0
    start = time.perf_counter()
    cursor = "-"
    while True:
        page = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(stream, cursor, "+", count=page_size))
        for _, fields in page:
            for event in unpackb(fields[b"b"], raw=False, strict_map_key=True):
                if event["type"] == "metric":
                    points += len(event["values"])
        entries += len(page)
        if len(page) < page_size:
            break
        cursor = "(" + page[-1][0].decode()
    return points / (time.perf_counter() - start), points, entries


async def apply(settings: CollectorSettings, n: int) -> float:
    """Run one collector until it has applied ``n`` points; points/s from its start."""
    stop = asyncio.Event()
    async with connect(settings.workspace.redis_url) as client:
        collector = Collector(settings, client)
        async with asyncio.TaskGroup() as tasks:
            start = time.perf_counter()
            tasks.create_task(collector.run(stop))
            while collector.stats.points < n:  # noqa: ASYNC110  # no event to wait on; a 1 ms poll costs ~nothing
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - start
            stop.set()
    return n / elapsed


def trim_acked(client: redis.Redis, stream: str) -> None:
    """Delete every ingest entry once all are acked (exact MINID, unlike the collector's ``~``)."""
    pending = cast("dict[str, int]", client.xpending(stream, INGEST_GROUP))
    if pending["pending"]:
        raise RuntimeError(f"{pending['pending']} entries of {stream} are still pending")
    last = cast("bytes", client.xinfo_stream(stream)["last-generated-id"]).decode()
    ms, seq = last.split("-")
    client.xtrim(stream, minid=f"{ms}-{int(seq) + 1}", approximate=False)


def memory_of(client: redis.Redis, workspace: Workspace, run_id: str) -> tuple[int, int]:
    """Bytes of the run's whole record, and of its ``loss`` series alone (MEMORY USAGE SAMPLES 0)."""
    keys = workspace.keys
    sizes = key_sizes(client, workspace, run_id)
    record = sum(sizes.values())
    series = sizes.get(keys.metric_series(run_id, "loss"), 0) + sizes.get(keys.metric_tail(run_id, "loss"), 0)
    return record, series


def used_memory(client: redis.Redis) -> int:
    return int(cast("dict[str, int]", client.info("memory"))["used_memory"])


def one_repeat(server: RedisServer, data_dir: Path, n: int, index: int) -> Repeat:
    """Fill, read raw, collect and weigh one run of ``n`` points in a fresh database."""
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
        workspace = Workspace(f"bench{index}", redis_url=server.url, data_dir=data_dir)
        settings = CollectorSettings(workspace=workspace.settings, reader="bench", stats_interval=60.0)
        baseline = used_memory(client)
        start = time.perf_counter()
        run_id = fill(workspace, n)
        fill_s = time.perf_counter() - start
        stream = workspace.keys.ingest_for(run_id)
        raw, seen, entries = raw_floor(client, stream, settings.count)
        if seen != n:
            raise RuntimeError(f"the ingest shard holds {seen:,} points, not {n:,}")
        rate = asyncio.run(apply(settings, n))
        trim_acked(client, stream)
        record, series = memory_of(client, workspace, run_id)
        grown = used_memory(client) - baseline
    finally:
        client.close()
    return Repeat(entries, fill_s, raw, rate, record / n, series / n, grown / n)


@dataclass(frozen=True, slots=True)
class Paced:
    """Bytes per point of runs logged one point per metric per step, at a steady pace."""

    runs: int
    points: int
    seconds: float
    record_bytes_per_point: float
    series_bytes_per_point: float
    live_bytes_per_point: float
    live_bytes_per_entry: float
    used_memory_bytes_per_point: float
    ended_record_bytes_per_point: float  # once the ended runs' live streams are trimmed
    ended_used_memory_bytes_per_point: float


class _CollectorThread:
    """A collector applying in a thread of its own while the bench logs (the paced measure)."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.points = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with connect(self.settings.workspace.redis_url) as client:
            collector = Collector(self.settings, client)
            self._started.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(collector.run(self._stop))
                while not self._stop.is_set():
                    self.points = collector.stats.points
                    await asyncio.sleep(0.01)
                self.points = collector.stats.points

    def __enter__(self) -> _CollectorThread:
        self._thread.start()
        self._started.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def log_paced(workspace: Workspace, runs: int, steps: int, metrics: int, rate: float) -> list[str]:
    """Log ``steps`` steps of ``metrics`` points to each of ``runs`` runs, ``rate`` steps/s; the run ids."""
    experiment = Experiment(workspace, "bench-paced")
    opened = [experiment.start_logging() for _ in range(runs)]
    names = [f"metric_{k}" for k in range(metrics)]
    start = time.perf_counter()
    for step in range(steps):
        for run in opened:
            for k, name in enumerate(names):
                run.log(name, step * 0.001 + k, step=step)
        pause = start + (step + 1) / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    for run in opened:
        run.complete(timeout=300)
    return [run.id for run in opened]


def paced_memory(
    server: RedisServer, data_dir: Path, *, runs: int = 4, steps: int = 10_000, metrics: int = 10, rate: float = 1000.0
) -> Paced:
    """Bytes per point of ``runs`` runs logged at once, one point per metric per step (a flushed db)."""
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
        workspace = Workspace("paced", redis_url=server.url, data_dir=data_dir)
        settings = CollectorSettings(workspace=workspace.settings, reader="bench", stats_interval=60.0)
        baseline = used_memory(client)
        total = runs * steps * metrics
        start = time.perf_counter()
        with _CollectorThread(settings) as collector:
            run_ids = log_paced(workspace, runs, steps, metrics, rate)
            seconds = time.perf_counter() - start
            deadline = time.monotonic() + 120
            while collector.points < total and time.monotonic() < deadline:
                time.sleep(0.05)
        if collector.points < total:
            raise RuntimeError(f"the collector applied {collector.points:,} points of {total:,}")
        for shard in range(workspace.keys.shards):
            stream = workspace.keys.ingest(shard)
            if client.exists(stream):
                trim_acked(client, stream)
        record = series = live = entries = 0
        for run_id in run_ids:
            sizes = key_sizes(client, workspace, run_id)
            record += sum(sizes.values())
            series += sum(v for k, v in sizes.items() if "}:m:" in k or "}:t:" in k)
            live += sizes.get(workspace.keys.live(run_id), 0)
            entries += int(client.xlen(workspace.keys.live(run_id)))
        grown = used_memory(client) - baseline
        # What the collector's trimmer does live_kept_after_end (a minute) after the end, done now.
        trimmed = asyncio.run(trim_ended(workspace, settings.live_kept_after_end))
        if trimmed != runs:
            raise RuntimeError(f"{trimmed} ended runs' live streams trimmed, of {runs}")
        ended_record = sum(sum(key_sizes(client, workspace, run_id).values()) for run_id in run_ids)
        ended_grown = used_memory(client) - baseline
    finally:
        client.close()
    return Paced(
        runs,
        total,
        seconds,
        record / total,
        series / total,
        live / total,
        live / max(entries, 1),
        grown / total,
        ended_record / total,
        ended_grown / total,
    )


async def trim_ended(workspace: Workspace, keep: float) -> int:
    """One pass over every shard of a collector's trimmer of ended runs' live streams, its clock ``keep`` s on."""
    async with connect(workspace.settings.redis_url) as client:
        trimmer = EndedStreams(client, workspace, set(range(workspace.keys.shards)), structlog.get_logger(), keep=keep)
        return await trimmer.trim(time.time() + keep + 1)


def key_sizes(client: redis.Redis, workspace: Workspace, run_id: str) -> dict[str, int]:
    """MEMORY USAGE (SAMPLES 0: every element) of each key of the run's record."""
    prefix = workspace.keys.meta(run_id).removesuffix("meta")
    return {key.decode(): client.memory_usage(key, samples=0) or 0 for key in client.scan_iter(match=prefix + "*")}


def _fmt(values: list[float], unit: str, digits: int = 0) -> str:
    median = statistics.median(values)
    return f"{median:14,.{digits}f} {unit:<9} ({min(values):,.{digits}f} - {max(values):,.{digits}f})"


def paced_rows(paced: list[Paced]) -> list[tuple[str, str, str]]:
    """The paced measure's rows: name, figure, note."""
    record = [p.record_bytes_per_point for p in paced]
    return [
        ("paced: record, MEMORY USAGE", _fmt(record, "B/point", 2), f"target {TARGET_PACED_BYTES:.0f} B/point"),
        ("  of which the series", _fmt([p.series_bytes_per_point for p in paced], "B/point", 2), ""),
        ("  of which the live stream", _fmt([p.live_bytes_per_point for p in paced], "B/point", 2), ""),
        ("  live stream per entry", _fmt([p.live_bytes_per_entry for p in paced], "B/entry", 0), ""),
        ("paced: used_memory growth", _fmt([p.used_memory_bytes_per_point for p in paced], "B/point", 2), ""),
        (
            "paced, ended: MEMORY USAGE",
            _fmt([p.ended_record_bytes_per_point for p in paced], "B/point", 2),
            "live streams trimmed (a minute after the end)",
        ),
        (
            "paced, ended: used_memory",
            _fmt([p.ended_used_memory_bytes_per_point for p in paced], "B/point", 2),
            "",
        ),
    ]


def report(n: int, repeats: list[Repeat], paced: list[Paced]) -> None:
    """Print the table."""
    apply_rate = [r.apply_points_per_s for r in repeats]
    raw = [r.raw_points_per_s for r in repeats]
    record = [r.record_bytes_per_point for r in repeats]
    series = [r.series_bytes_per_point for r in repeats]
    grown = [r.used_memory_bytes_per_point for r in repeats]
    entries = statistics.median(r.entries for r in repeats)
    apply_median, raw_median = statistics.median(apply_rate), statistics.median(raw)
    rows = [
        ("apply (one collector)", _fmt(apply_rate, "points/s"), f"{apply_median / TARGET_APPLY:.0%} of target 2M/s"),
        ("raw XRANGE + unpack", _fmt(raw, "points/s"), f"apply runs at {apply_median / raw_median:.0%} of it"),
        ("record, MEMORY USAGE", _fmt(record, "B/point", 2), f"target {TARGET_BYTES:.0f} B/point"),
        ("  of which the series", _fmt(series, "B/point", 2), ""),
        ("used_memory growth", _fmt(grown, "B/point", 2), "ingest trimmed exactly"),
    ]
    if paced:
        rows += paced_rows(paced)
    print(
        f"runstream collector benchmark: {n:,} points in {entries:,.0f} entries x {len(repeats)} repeats,"
        f" Python {sys.version.split()[0]}"
    )
    if paced:
        first = paced[0]
        print(
            f"  paced: {first.runs} runs x {first.points // first.runs:,} points, one per metric per step,"
            f" {len(paced)} repeats, {first.seconds:.1f} s each"
        )
    for name, figure, note in rows:
        print(f"  {name:<24} {figure:<52} {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paced-repeats", type=int, default=1, help="repeats of the paced measure (10 s each)")
    parser.add_argument("--paced-steps", type=int, default=10_000, help="steps of each paced run (10 metrics each)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/collector.json"))
    args = parser.parse_args(argv)
    n, count = args.points, args.repeats
    configure_logging(json=False, level="error")  # the collector's info lines are not the report

    with TemporaryDirectory() as tmp, RedisServer() as server:
        repeats = [one_repeat(server, Path(tmp), n, i) for i in range(count)]
        paced = [paced_memory(server, Path(tmp), steps=args.paced_steps) for _ in range(args.paced_repeats)]

    report(n, repeats, paced)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "points": n,
                "targets": {
                    "apply_points_per_s": TARGET_APPLY,
                    "bytes_per_point": TARGET_BYTES,
                    "paced_bytes_per_point": TARGET_PACED_BYTES,
                },
                "repeats": [asdict(r) for r in repeats],
                "paced": [asdict(p) for p in paced],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
