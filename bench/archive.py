"""``python -m bench.archive [--quick] [--json PATH] [--write]``: archived runs, Redis memory and reads.

Starts a private redis-server and, in a process of its own (numpy set up as ``runstream
serve`` has it, as :mod:`bench.server` measures), measures side by side in one run:

- two runs of 10 metrics x 1,000,000 points (steps 0, 1, ...; float64 values): smooth
  training curves (``a * exp(-step / tau) + b / (1 + step / c)``, other constants per
  metric), then white noise (``np.random.standard_normal``, which pcodec cannot
  compress: about 7 bytes a point is what it can do).  Each is logged through the real
  producer as fast as it goes and applied by a collector in this process, as
  :mod:`bench.collector` fills and applies a shard; ended (Completed); its live stream
  trimmed (what a collector does a minute after the end); then archived by
  :class:`runstream.archive.archiver.Archiver` into a local object store.  Redis
  ``used_memory`` (INFO memory) before the run, with the run live (the acked ingest
  entries trimmed away exactly) and after archival (the slowlog emptied each time: see
  :func:`settled_memory`): target after / before within 1%.
  Archive bytes per point (the file set's objects) against Redis' while live: target
  <= 2 for the smooth curves.  Before them, a warm-up run of the same size goes through
  the whole cycle, reads included, so that "before" is a Redis that runstream has served
  (its scripts loaded, the shards' streams and groups made, the logger connected, long
  replies sent, the ingest streams' structures grown to what such a run makes them):
  what a run leaves is its stub.  What the fresh Redis kept of the warm-up (set-up and
  high-water marks, once) is stated beside it, not hidden.
- reading one archived 1,000,000-point series: ``RecordReader.metrics(run_id, name)``
  (what ``get_metrics`` does), its first read (the process' archive caches cleared) and a
  warm one, target < 200 ms; beside it the same read of the same run while it was live
  in Redis, and ``ndarray.tolist()`` of its values (the floor: the list it returns).
- the chart query, ``GET /api/v1/runs/<id>/metrics/<name>?max_points=2000`` against the
  real app (a fresh app each repeat, so an empty series cache, and the archive caches
  cleared): server time (a middleware around the handler, JSON included) of the first
  request and of cached ones, target < 50 ms; beside it the live run's same route, and
  ``downsample_indices`` alone on the arrays (the floor).

Prints the table (medians, min-max, ratios) and writes the figures as JSON.
``python -m bench`` runs it as its section 9; ``--write`` puts this run's section into
bench/RESULTS.md, leaving the other sections as they are.  Full: about 80 s on 2
cores; ``--quick`` (200,000 points a metric): about 25 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import queue
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from types import FrameType
from typing import Any, Final, cast

import aiohttp
import numpy as np
import numpy.typing as npt
import redis
import structlog
from aiohttp import web

from bench import collector as collector_bench
from bench.report import Row, replace_section, text
from bench.server import HOST, metric_timing
from runstream import Experiment, Workspace
from runstream.archive import archived as archive_caches
from runstream.archive.archiver import Archived, Archiver
from runstream.archive.store import open_store
from runstream.collector import CollectorSettings
from runstream.connection import connect
from runstream.consumer.downsample import downsample_indices
from runstream.consumer.reader import RecordReader
from runstream.consumer.server import ServerSettings, create_app
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer

__all__ = ["SECTION", "archive_rows"]

SECTION: Final = "9. archive: an ended run of 10 metrics moved out of Redis into Parquet + pcodec, and read back"
METRICS: Final = 10
MAX_POINTS: Final = 2000
#: The metric every read reads (all ten have the same length).
READ: Final = "metric_0"
#: Cached chart requests after each first one.
CACHED: Final = 4
TARGET_RATIO: Final = 1.01
TARGET_ARCHIVE_BYTES: Final = 2.0
TARGET_READ_MS: Final = 200.0
TARGET_CHART_MS: Final = 50.0
#: The bound on the measuring process (it takes about 80 s at full size).
TIMEOUT_S: Final = 600.0


def smooth_curves(points: int) -> dict[str, npt.NDArray[np.float64]]:
    """Ten loss-like curves of ``points`` steps: ``a * exp(-step / tau) + b / (1 + step / c)``."""
    steps = np.arange(points, dtype=np.float64)
    return {
        f"metric_{k}": (2.0 + 0.5 * k) * np.exp(-steps / (points / (3.0 + k)))
        + (0.3 + 0.05 * k) / (1.0 + steps / (500.0 * (k + 1)))
        for k in range(METRICS)
    }


def noise(points: int) -> dict[str, npt.NDArray[np.float64]]:
    """Ten series of white noise (standard normal): what no codec compresses."""
    generator = np.random.default_rng(7)
    return {f"metric_{k}": generator.standard_normal(points) for k in range(METRICS)}


# ------------------------------------------------------------------- the run's life


def log_run(workspace: Workspace, columns: dict[str, list[float]]) -> str:
    """Log ``columns`` through the producer, a point per metric per step (steps 0, 1, ...), and
    complete the run; its id once all is in Redis (no collector runs yet: as :func:`bench.collector.fill`)."""
    run = Experiment(workspace, "bench-archive").start_logging()
    log = run.log
    names = list(columns)
    for row in zip(*columns.values(), strict=True):
        for name, value in zip(names, row, strict=True):
            log(name, value)
    run.complete(timeout=300)
    return run.id


def settled_memory(client: redis.Redis, quiet: float = 1.0, bound: float = 10.0) -> dict[str, int]:
    """INFO memory once Redis has freed what it frees later: UNLINK's background frees, and
    idle clients' buffers (``used_memory`` unchanged for ``quiet`` seconds, within ``bound``).

    The slowlog is emptied first: it keeps the arguments of the last 128 commands that took
    over 10 ms (a big LRANGE, an apply script), whatever the runs, up to some hundreds of KB.
    """
    client.slowlog_reset()
    deadline = time.monotonic() + bound
    last, since = -1, time.monotonic()
    while True:
        info = cast("dict[str, int]", client.info("memory"))
        now = time.monotonic()
        if info["lazyfree_pending_objects"] or info["used_memory"] != last:
            last, since = info["used_memory"], now
        elif now - since >= quiet or now > deadline:
            return info
        time.sleep(0.1)


async def archive_run(workspace: Workspace, data_dir: Path, run_id: str) -> Archived:
    async with connect(workspace.settings.redis_url) as client:
        store = open_store(workspace.settings.archive_url, data_dir)
        result = await Archiver(client, workspace.keys, store, structlog.get_logger()).archive(run_id)
    if isinstance(result, Archived):
        return result
    raise RuntimeError(f"run {run_id} was not archived: {result}")


def clear_archive_caches() -> None:
    """Forget every archived record this process decoded: the next read is a first read."""
    archive_caches._records.clear()
    archive_caches._packed.clear()


# ------------------------------------------------------------------------- reads


async def metrics_times(workspace: Workspace, run_id: str, points: int, repeats: int, *, first: bool) -> list[float]:
    """Seconds of ``RecordReader.metrics(run_id, READ)``, ``repeats`` times; ``first``: each a
    first read (the archive caches cleared), else warm (one untimed read before)."""
    async with connect(workspace.settings.redis_url) as client:
        reader = RecordReader(client, workspace.keys)
        if not first:
            await reader.metrics(run_id, READ)
        times = []
        for _ in range(repeats):
            if first:
                clear_archive_caches()
            gc.collect()  # the previous read's million floats go now, not in the middle of this one
            start = time.perf_counter()
            values = (await reader.metrics(run_id, READ))[READ]
            times.append(time.perf_counter() - start)
            if not isinstance(values, list) or len(values) != points:
                raise RuntimeError(f"metrics() gave {type(values).__name__}, not a list of {points} points")
    return times


def tolist_times(values: npt.NDArray[np.float64], repeats: int) -> list[float]:
    """Seconds of ``values.tolist()``: the list of Python floats that any get_metrics returns."""
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        values.tolist()
        times.append(time.perf_counter() - start)
    return times


def downsample_times(values: npt.NDArray[np.float64], repeats: int) -> list[float]:
    """Seconds of ``downsample_indices`` alone, on the series' arrays in memory."""
    steps = np.arange(len(values), dtype=np.int64)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        downsample_indices(steps, values, MAX_POINTS)
        times.append(time.perf_counter() - start)
    return times


@dataclass
class Chart:
    """Seconds of the chart query: server time and client round trip, of first and cached requests."""

    first_server: list[float] = field(default_factory=list)
    first_client: list[float] = field(default_factory=list)
    cached_server: list[float] = field(default_factory=list)
    cached_client: list[float] = field(default_factory=list)


async def chart_times(workspace: Workspace, run_id: str, points: int, repeats: int) -> Chart:
    """The chart query as :func:`bench.server.series_times` measures it, ``repeats`` times on a
    fresh app (its series cache empty, the archive caches cleared), then CACHED times again."""
    server_times: list[float] = []
    timing = metric_timing(server_times)

    chart = Chart()
    for _ in range(repeats):
        app = create_app(ServerSettings(workspace=workspace.settings))
        app.middlewares.append(timing)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        base = f"http://{HOST}:{runner.addresses[0][1]}"
        url = f"{base}/api/v1/runs/{run_id}/metrics/{READ}?max_points={MAX_POINTS}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/api/v1/health") as response:  # the connection; no record read
                    await response.read()
                clear_archive_caches()
                gc.collect()
                server_times.clear()
                for i in range(1 + CACHED):
                    start = time.perf_counter()
                    async with session.get(url) as response:
                        body = await response.json()
                    (chart.first_client if i == 0 else chart.cached_client).append(time.perf_counter() - start)
                    if body["count"] != points or len(body["steps"]) > MAX_POINTS:
                        raise RuntimeError(f"unexpected reply: count {body['count']}, {len(body['steps'])} points")
                chart.first_server.append(server_times[0])
                chart.cached_server.extend(server_times[1:])
        finally:
            await runner.cleanup()
    return chart


# ------------------------------------------------------------------------ measure


@dataclass
class Cycle:
    """One run's life: memory (INFO used_memory, bytes) and archive figures, and its reads."""

    curve: str
    points: int  # in all, every metric
    fill_s: float
    apply_points_per_s: float
    before: int
    live: int
    after: int
    clients_before: int  # mem_clients_normal: of used_memory, the connections' buffers
    clients_after: int
    record_bytes: int  # MEMORY USAGE of the run's keys while live
    live_stream_bytes: int  # of which its live stream
    stub_bytes: int  # MEMORY USAGE of what stays: meta, seqs, the live stream's final entry
    stub_live_bytes: int  # of which the live stream
    archive_bytes: int
    archive_s: float
    reads: dict[str, list[float]] = field(default_factory=dict)  # seconds

    @property
    def ratio(self) -> float:
        return self.after / self.before

    @property
    def archive_per_point(self) -> float:
        return self.archive_bytes / self.points

    @property
    def live_per_point(self) -> float:
        return (self.live - self.before) / self.points


def cycle(
    workspace: Workspace,
    data_dir: Path,
    client: redis.Redis,
    curve: str,
    series: dict[str, npt.NDArray[np.float64]],
    repeats: int,
    say: Callable[[str], None],
) -> Cycle:
    """Log, apply, end, trim, archive one run of ``series``; its reads (live, then archived) if ``repeats``."""
    points = sum(len(v) for v in series.values())
    columns = {name: values.tolist() for name, values in series.items()}
    before = settled_memory(client)
    start = time.perf_counter()
    run_id = log_run(workspace, columns)
    fill_s = time.perf_counter() - start
    del columns
    settings = CollectorSettings(workspace=workspace.settings, reader="bench", stats_interval=60.0, archive_after=None)
    rate = asyncio.run(collector_bench.apply(settings, points))
    collector_bench.trim_acked(client, workspace.keys.ingest_for(run_id))
    live = settled_memory(client)
    record = collector_bench.key_sizes(client, workspace, run_id)
    say(f"{curve}: {points:,} points logged in {fill_s:.1f} s, applied at {rate:,.0f} points/s")
    reads: dict[str, list[float]] = {}
    n = len(series[READ])
    if repeats:
        reads["live_metrics"] = asyncio.run(metrics_times(workspace, run_id, n, repeats, first=True))
        live_chart = asyncio.run(chart_times(workspace, run_id, n, repeats))
        reads |= {f"live_chart_{k}": v for k, v in asdict(live_chart).items()}
    if asyncio.run(collector_bench.trim_ended(workspace, settings.live_kept_after_end)) != 1:
        raise RuntimeError(f"the live stream of {run_id} was not trimmed")
    start = time.perf_counter()
    archived = asyncio.run(archive_run(workspace, data_dir, run_id))
    archive_s = time.perf_counter() - start
    after = settled_memory(client)
    stub = collector_bench.key_sizes(client, workspace, run_id)
    say(f"{curve}: archived in {archive_s:.1f} s, {archived.archive_bytes:,} bytes")
    if repeats:
        reads["archived_metrics_first"] = asyncio.run(metrics_times(workspace, run_id, n, repeats, first=True))
        reads["archived_metrics_warm"] = asyncio.run(metrics_times(workspace, run_id, n, repeats, first=False))
        archived_chart = asyncio.run(chart_times(workspace, run_id, n, repeats))
        reads |= {f"archived_chart_{k}": v for k, v in asdict(archived_chart).items()}
        reads["tolist"] = tolist_times(series[READ], repeats)
        reads["downsample"] = downsample_times(series[READ], repeats)
    return Cycle(
        curve,
        points,
        fill_s,
        rate,
        before["used_memory"],
        live["used_memory"],
        after["used_memory"],
        before["mem_clients_normal"],
        after["mem_clients_normal"],
        sum(record.values()),
        record.get(workspace.keys.live(run_id), 0),
        sum(stub.values()),
        stub.get(workspace.keys.live(run_id), 0),
        archived.archive_bytes,
        archive_s,
        reads,
    )


def measure(redis_url: str, data_dir: str, points: int, repeats: int, say: Callable[[str], None]) -> list[Cycle]:
    """The smooth run's cycle (with the reads), then the noise run's, after a warm-up cycle."""
    configure_logging(level="error")  # the collector's info lines are not the report
    workspace = Workspace("bench", redis_url=redis_url, data_dir=Path(data_dir))
    client = redis.Redis.from_url(redis_url)
    try:
        # Scripts loaded, shards' streams and groups made, the logger connected, long replies
        # sent: then the baseline.  The warm-up is as large as the runs measured: Redis keeps
        # some of its structures at their high-water mark (a first run of 1,000,000 points a
        # metric after one of 200,000 left 24 KB more than a second one), once, not per run.
        warm = cycle(workspace, Path(data_dir), client, "warm-up", smooth_curves(points), 1, say)
        smooth = cycle(workspace, Path(data_dir), client, "smooth", smooth_curves(points), repeats, say)
        white = cycle(workspace, Path(data_dir), client, "noise", noise(points), 0, say)
    finally:
        client.close()
    return [warm, smooth, white]


def _measuring(redis_url: str, data_dir: str, points: int, repeats: int, results: mp.Queue[tuple[str, Any]]) -> None:
    """The measuring process: puts ("say", message)s, then ("done", cycles) or ("error", traceback)."""
    try:
        cycles = measure(redis_url, data_dir, points, repeats, lambda message: results.put(("say", message)))
    except BaseException:
        results.put(("error", traceback.format_exc()))
        raise
    results.put(("done", [asdict(c) for c in cycles]))


def run_measure(data_dir: Path, points: int, repeats: int, say: Callable[[str], None]) -> list[Cycle]:
    """:func:`measure` in a spawned process, on a private redis-server (both stopped on the way out)."""
    ctx = mp.get_context("spawn")
    results: mp.Queue[tuple[str, Any]] = ctx.Queue()
    # As `runstream serve` sets numpy up (consumer/cli.py): the spawned process imports it after this.
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    with RedisServer() as server:
        process = ctx.Process(target=_measuring, args=(server.url, str(data_dir), points, repeats, results))
        process.start()
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                try:
                    kind, payload = results.get(timeout=1.0)
                except queue.Empty:  # nothing yet: is it still alive?
                    if process.exitcode is not None:
                        raise RuntimeError(f"the measuring process exited with {process.exitcode}") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the measuring process took more than {TIMEOUT_S:.0f} s") from None
                    continue
                if kind == "say":
                    say(payload)
                elif kind == "error":
                    raise RuntimeError(f"the measuring process failed:\n{payload}")
                else:
                    break
            process.join(30)
        finally:
            if process.is_alive():
                process.terminate()
                process.join(10)
    return [Cycle(**c) for c in payload]


# ------------------------------------------------------------------------- rows


def _ms(values: list[float]) -> list[float]:
    return [v * 1e3 for v in values]


def memory_rows(c: Cycle, target_bytes: float | None, expected: str = "") -> list[Row]:
    """The run's memory rows: ``target_bytes`` per point in the archive, or what is ``expected`` (no target)."""
    label = f"{c.curve}, {c.points:,} points"
    mb = 1e6
    rows = [
        Row(
            SECTION,
            f"{label}: Redis used_memory before the run / live / after archival",
            "MB",
            [c.before / mb, c.live / mb, c.after / mb],
            shown=f"{c.before / mb:.3f} / {c.live / mb:.1f} / {c.after / mb:.3f}",
        ),
        Row(
            SECTION,
            f"{label}: used_memory after archival / before the run",
            "x",
            [c.ratio],
            target=f"<= {TARGET_RATIO}",
            shown=f"{c.ratio:.3f}",
            met=c.ratio <= TARGET_RATIO,
            note=(
                f"{c.curve}: used_memory {c.after - c.before:+,} bytes after archival: the run's stub"
                f" {c.stub_bytes:,} (MEMORY USAGE; its live stream's one entry, the final status,"
                f" {c.stub_live_bytes:,} of it; meta and seqs the rest), the connections' buffers"
                f" {c.clients_after - c.clients_before:+,}; the rest its search summary (about 850),"
                " its place in the experiment's index and Redis' own structures;"
                f" archived in {c.archive_s:.1f} s (read, encode, write, read back and verify, swap)"
            ),
        ),
        Row(
            SECTION,
            f"{label}: bytes per point, the archive's file set",
            "B/point",
            [c.archive_per_point],
            {
                "Redis while live (used_memory growth)": [c.live_per_point],
                "the run's keys while live (MEMORY USAGE)": [c.record_bytes / c.points],
            },
            target=f"<= {target_bytes:g}" if target_bytes is not None else expected,
            met=c.archive_per_point <= target_bytes if target_bytes is not None else None,
            note=(
                f"{c.curve}: of the run's keys while live, its live stream {c.live_stream_bytes / 1e6:.1f} MB"
                f" ({c.live_stream_bytes / c.points:.2f} B/point; it keeps updates of the newest points,"
                " at least 100 of them), the series and the rest"
                f" {(c.record_bytes - c.live_stream_bytes) / c.points:.2f} B/point"
            ),
        ),
    ]
    return rows


def read_rows(c: Cycle, points: int) -> list[Row]:
    r = {k: _ms(v) for k, v in c.reads.items()}
    live, floor = {"the run live in Redis": r["live_metrics"]}, {"ndarray.tolist() (the floor)": r["tolist"]}
    first, warm = r["archived_metrics_first"], r["archived_metrics_warm"]
    chart_first, chart_cached = r["archived_chart_first_server"], r["archived_chart_cached_server"]
    downsample = {"downsample_indices alone (the floor)": r["downsample"]}
    return [
        Row(
            SECTION,
            f"RecordReader.metrics() of {points:,} points, archived: first read",
            "ms",
            first,
            live | floor,
            target=f"< {TARGET_READ_MS:g}",
            met=statistics.median(first) < TARGET_READ_MS,
        ),
        Row(
            SECTION,
            f"RecordReader.metrics() of {points:,} points, archived: warm",
            "ms",
            warm,
            live | floor,
            target=f"< {TARGET_READ_MS:g}",
            met=statistics.median(warm) < TARGET_READ_MS,
        ),
        Row(
            SECTION,
            f"chart query max_points={MAX_POINTS}, archived: first read (server time)",
            "ms",
            chart_first,
            {"the run live in Redis, first read": r["live_chart_first_server"]} | downsample,
            target=f"< {TARGET_CHART_MS:g}",
            met=statistics.median(chart_first) < TARGET_CHART_MS,
        ),
        Row(
            SECTION,
            f"chart query max_points={MAX_POINTS}, archived: cached (server time)",
            "ms",
            chart_cached,
            {"the run live in Redis, cached": r["live_chart_cached_server"]} | downsample,
            target=f"< {TARGET_CHART_MS:g}",
            met=statistics.median(chart_cached) < TARGET_CHART_MS,
            note=(
                "chart query, client round trip (median): archived first"
                f" {statistics.median(r['archived_chart_first_client']):.1f} ms,"
                f" cached {statistics.median(r['archived_chart_cached_client']):.1f};"
                f" live first {statistics.median(r['live_chart_first_client']):.1f},"
                f" cached {statistics.median(r['live_chart_cached_client']):.1f}"
            ),
        ),
    ]


def first_run_row(warm: Cycle) -> Row:
    """What a fresh Redis keeps of its first run, once: runstream's set-up and high-water marks."""
    return Row(
        SECTION,
        f"a fresh Redis' first run ({warm.points:,} points, the warm-up): used_memory kept after archival",
        "KB",
        [(warm.after - warm.before) / 1e3],
        note=(
            f"warm-up: a fresh Redis kept {warm.after - warm.before:+,} bytes of its first run, once:"
            f" the run's stub {warm.stub_bytes:,}, runstream's scripts, the shards' streams and groups,"
            " the connections and structures at their high-water mark; the runs below start from there"
        ),
    )


def rows_of(cycles: list[Cycle], points: int) -> list[Row]:
    warm, smooth, white = cycles
    return [
        first_run_row(warm),
        *memory_rows(smooth, TARGET_ARCHIVE_BYTES),
        *memory_rows(white, None, "none: ~7 expected, pcodec cannot compress noise"),
        *read_rows(smooth, points),
    ]


def archive_rows(data_dir: Path, quick: bool, say: Callable[[str], None]) -> list[Row]:
    """The section: 1,000,000 points a metric (``quick``: 200,000), reads repeated 5 times (3)."""
    points, repeats = (200_000, 3) if quick else (1_000_000, 5)
    folder = data_dir / "bench-archive"  # the archive's store is in it: apart from other sections' data
    folder.mkdir(exist_ok=True)
    return rows_of(run_measure(folder, points, repeats, say), points)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 points a metric, not 1,000,000; 3 repeats")
    parser.add_argument("--json", type=Path, default=Path("bench/results/archive.json"))
    parser.add_argument("--write", type=Path, nargs="?", const=Path("bench/RESULTS.md"), help="update this section")
    args = parser.parse_args(argv)
    configure_logging(level="error")  # the figures are the output
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # unwind: the measuring process and Redis are stopped
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {message}", file=sys.stderr, flush=True)

    points, repeats = (200_000, 3) if args.quick else (1_000_000, 5)
    with TemporaryDirectory(prefix="bench-archive-") as tmp:
        cycles = run_measure(Path(tmp), points, repeats, say)
    rows = rows_of(cycles, points)
    took = time.perf_counter() - started
    command = " ".join(["python -m bench.archive", *(sys.argv[1:] if argv is None else argv)])
    rows[-1].note += f". Measured {time.strftime('%Y-%m-%d')} by `{command}`, in {took:.0f} s."
    print(text(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "points_per_metric": points,
                "metrics": METRICS,
                "repeats": repeats,
                "targets": {
                    "used_memory_after_over_before": TARGET_RATIO,
                    "archive_bytes_per_point": TARGET_ARCHIVE_BYTES,
                    "metrics_read_ms": TARGET_READ_MS,
                    "chart_query_ms": TARGET_CHART_MS,
                },
                "cycles": [asdict(c) for c in cycles],
            },
            indent=1,
        )
    )
    if args.write:
        args.write.write_text(replace_section(args.write.read_text(), rows))
        say(f"done: section 9 of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
