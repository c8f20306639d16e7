"""``python -m bench.search [--quick] [--json PATH]``: a metric filter over 10,000 runs, archived and live.

Starts a private redis-server and a collector in this process; logs 10,000 runs (2,000
with ``--quick``) of a sweep through the real producer: each a learning rate and a
model (a parameter and a tag), 3 metrics of 20 points; ends them all but 100, and
archives half the ended ones (:meth:`Experiment.archive` would take them all: the bench
archives every other run with the lifecycle directly).  Then measures, side by side:

- the first search (``exp.search("metrics.loss < 0.1 and tags.model = 'cnn'")``): every
  ended run summed up from its record, Redis or archive, and its summary kept;
- later searches, with the same filter, a min() filter and a sort (the summaries read:
  what a user sees each time after the first), target < 200 ms;
- the floor: reading the summaries hash alone (HGETALL), and filtering the decoded
  summaries in Python with the same clauses.

Prints medians (min-max) and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Final, cast

import msgpack
import redis
import structlog

from runstream import Experiment, Run, Workspace
from runstream.archive.lifecycle import Lifecycle
from runstream.archive.store import open_store
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.consumer.search import search_runs
from runstream.consumer.search_filter import parse_filter
from runstream.logconfig import configure_logging
from runstream.logger import get_logger
from runstream.redis_server import RedisServer

FILTER: Final = "metrics.loss < 0.1 and tags.model = 'cnn'"
OTHERS: Final = ("min(metrics.loss) < 0.05 and params.lr >= 0.001", None)
LIVE: Final = 100
REPEATS: Final = 7


def _log_sweep(experiment: Experiment, runs: int) -> list[str]:
    """The sweep's runs, logged; all ended but the last LIVE."""
    ids = []
    for n in range(runs):
        run = experiment.start_logging(display_name=f"sweep-{n}")
        lr = 10 ** -(1 + n % 4)
        run.add_properties({"lr": str(lr)})
        run.tag("model", "cnn" if n % 2 else "mlp")
        floor = 0.02 + (n % 97) / 500
        for step in range(20):
            run.log("loss", floor + 1 / (1 + step))
            run.log("acc", 1 - floor - 1 / (2 + step))
            run.log("lr", lr)
        if n < runs - LIVE:
            run.complete(timeout=None)
        ids.append(run.id)
    get_logger().flush()
    return ids


def _applied(workspace: Workspace, experiment: Experiment, runs: int) -> None:
    """Wait until the collector has applied the whole sweep: every run indexed, all but LIVE ended."""
    with redis.Redis.from_url(workspace.settings.redis_url) as client:
        deadline = time.monotonic() + 120
        while (
            client.zcard(workspace.keys.experiment_runs(experiment.name)) < runs
            or client.zcard(workspace.keys.live_runs()) > LIVE
        ):
            if time.monotonic() > deadline:
                indexed = client.zcard(workspace.keys.experiment_runs(experiment.name))
                live = client.zcard(workspace.keys.live_runs())
                raise TimeoutError(f"the sweep not applied within 2 minutes: {indexed} runs indexed, {live} live")
            time.sleep(0.1)


async def _timed(repeats: int, work: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await work()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _figure(times: list[float]) -> str:
    return f"{statistics.median(times):8.1f} ms ({min(times):.1f}-{max(times):.1f})"


async def _measure(workspace: Workspace, experiment: Experiment, ended: list[str]) -> dict[str, Any]:
    async with connect(workspace.settings.redis_url) as client:
        reader = RecordReader(client, workspace.keys)
        store = open_store(None, workspace.settings.data_dir)
        life = Lifecycle(client, workspace.keys, store, workspace.artifacts, structlog.get_logger())
        start = time.perf_counter()
        for run_id in ended[::2]:
            await life.archive_run(run_id)
        archiving = time.perf_counter() - start
        archived = len(ended[::2])

        first = await _timed(1, lambda: search_runs(reader, experiment.name, FILTER))
        found = await search_runs(reader, experiment.name, FILTER)
        warm = await _timed(REPEATS, lambda: search_runs(reader, experiment.name, FILTER))
        others: dict[str, list[float]] = {}
        for text in OTHERS:
            order = None if text else ["metrics.acc DESC"]
            others[text or "order_by metrics.acc DESC"] = await _timed(
                REPEATS, functools.partial(search_runs, reader, experiment.name, text, order, 50)
            )
        key = workspace.keys.summaries()
        raw_read = await _timed(REPEATS, lambda: client.hgetall(key))
        decoded = [
            msgpack.unpackb(v, raw=False) for v in cast("dict[bytes, bytes]", await client.hgetall(key)).values()
        ]
        clauses = parse_filter(FILTER)

        async def python_filter() -> object:
            return [s for s in decoded if all(c.holds(s) for c in clauses)]

        filtering = await _timed(REPEATS, python_filter)
    return {
        "archived": archived,
        "archiving_s": archiving,
        "matches": found.total,
        "first_ms": first,
        "warm_ms": warm,
        "others_ms": others,
        "hgetall_ms": raw_read,
        "python_filter_ms": filtering,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 runs instead of 10,000")
    parser.add_argument("--runs", type=int, help="this many runs (instead of 10,000)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    runs = args.runs or (2_000 if args.quick else 10_000)
    configure_logging(json=True, level="warning")
    with TemporaryDirectory(prefix="rs-bench-search-") as folder, RedisServer() as server:
        workspace = Workspace(redis_url=server.url, workspace="bench", data_dir=Path(folder) / "data")
        experiment = Experiment(workspace, "sweep")
        collector = BackgroundCollector(
            CollectorSettings(workspace=workspace.settings, live_kept_after_end=3600.0, archive_after=None)
        ).start()
        try:
            start = time.perf_counter()
            ids = _log_sweep(experiment, runs)
            _applied(workspace, experiment, runs)
            logging = time.perf_counter() - start
            figures = asyncio.run(_measure(workspace, experiment, ids[: runs - LIVE]))
            for run_id in ids[runs - LIVE :]:
                Run(experiment, run_id).complete(timeout=None)
            get_logger().flush()
        finally:
            collector.stop()
    figures |= {"runs": runs, "live": LIVE, "logging_s": logging}
    warm = statistics.median(figures["warm_ms"])
    lines = [
        f"{runs:,} runs ({figures['archived']:,} archived, {LIVE} live, the rest ended in Redis);"
        f" {figures['matches']:,} match {FILTER!r}",
        f"first search (every ended run summed up, kept) {_figure(figures['first_ms'])}",
        f"search                                        {_figure(figures['warm_ms'])}   target < 200 ms:"
        f" {'met' if warm < 200 else 'MISSED'}",
        *(f"  {text:<44}{_figure(times)}" for text, times in figures["others_ms"].items()),
        f"floor: HGETALL of the summaries              {_figure(figures['hgetall_ms'])}"
        f"   search / floor {warm / statistics.median(figures['hgetall_ms']):.1f}x",
        f"floor: the filter over decoded summaries     {_figure(figures['python_filter_ms'])}",
        f"(set-up: logging {logging:.0f} s, archiving {figures['archiving_s']:.1f} s)",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
