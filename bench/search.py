"""``python -m bench.search [--quick] [--runs N] [--json PATH] [--write]``: a metric filter over 10,000 runs.

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

Prints medians (min-max) and ratios.  ``python -m bench`` runs it as its section 10;
``--write`` puts this run's section into bench/RESULTS.md.  Full: about 2 minutes on 2
cores (most of it archiving 4,950 runs one by one); ``--quick``: about 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Final, cast

import msgpack
import redis
import structlog

from bench.report import Row, replace_section, text
from runstream import Experiment, Run, Workspace
from runstream.archive.lifecycle import Lifecycle
from runstream.archive.store import open_store
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.connection import RedisClient, connect
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
TARGET_MS: Final = 200.0
SECTION: Final = "10. search: a metric filter over the runs of an experiment, archived and live mixed"


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


async def _all_logged(client: RedisClient, workspace: Workspace, live: list[Run], points: int) -> None:
    """Until the collector has applied ``points`` points of "loss" to each of the ``live`` runs."""
    deadline = time.monotonic() + 60
    while True:
        async with client.pipeline(transaction=False) as pipe:
            for run in live:
                _ = pipe.hget(workspace.keys.metric_counts(run.id), "loss")
            counts = await pipe.execute()
        if all(int(count or 0) >= points for count in counts):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the live runs' points not applied within a minute")
        await asyncio.sleep(0.005)


async def _changed_times(
    client: RedisClient, reader: RecordReader, workspace: Workspace, live: list[Run]
) -> list[float]:
    """Searches each made after every live run logged a point (and the collector applied it):
    each of them summed up again."""
    times, points = [], 20
    for _ in range(REPEATS):
        points += 1
        for run in live:
            run.log("loss", 0.5)
        await asyncio.to_thread(get_logger().flush)
        await _all_logged(client, workspace, live, points)
        times += await _timed(1, lambda: search_runs(reader, "sweep", FILTER))
    return times


async def _measure(workspace: Workspace, experiment: Experiment, ended: list[str], live: list[Run]) -> dict[str, Any]:
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
        changed = await _changed_times(client, reader, workspace, live)
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
        "live_changed_ms": changed,
        "others_ms": others,
        "hgetall_ms": raw_read,
        "python_filter_ms": filtering,
    }


def measure(runs: int) -> dict[str, Any]:
    """The sweep of ``runs`` runs logged, applied, half the ended ones archived; the searches timed."""
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
            live = [Run(experiment, run_id) for run_id in ids[runs - LIVE :]]
            figures = asyncio.run(_measure(workspace, experiment, ids[: runs - LIVE], live))
            for run in live:
                run.complete(timeout=None)
            get_logger().flush()
        finally:
            collector.stop()
    return figures | {"runs": runs, "live": LIVE, "logging_s": logging}


def rows_of(figures: dict[str, Any]) -> list[Row]:
    """The section's rows: the first search, later ones against their floors, the other filters."""
    runs, archived = figures["runs"], figures["archived"]
    floors = {
        "HGETALL of the summaries alone": figures["hgetall_ms"],
        "the filter over decoded summaries alone": figures["python_filter_ms"],
    }
    warm = figures["warm_ms"]
    return [
        Row(
            SECTION,
            f"{runs:,} runs: the first search (every ended run summed up from its record, and kept)",
            "ms",
            figures["first_ms"],
        ),
        Row(
            SECTION,
            f"{runs:,} runs: exp.search({FILTER!r})",
            "ms",
            warm,
            floors,
            target=f"< {TARGET_MS:g}",
            met=statistics.median(warm) < TARGET_MS,
        ),
        Row(
            SECTION,
            f"{runs:,} runs: the same search, each of the {LIVE} live runs having logged since the last",
            "ms",
            figures["live_changed_ms"],
            floors,
        ),
        *(Row(SECTION, f"{runs:,} runs: {text}", "ms", times, floors) for text, times in figures["others_ms"].items()),
        Row(
            SECTION,
            f"{runs:,} runs: runs matching {FILTER!r}",
            "runs",
            [figures["matches"]],
            note=(
                f"{runs:,} runs of a sweep ({archived:,} archived, {LIVE} live, the rest ended in Redis);"
                " an ended run's summary is read, a live one's summed up again when it changed since the"
                " last search (the live runs idle between searches, heartbeats aside, but in the row that"
                f" says otherwise); set-up: logging {figures['logging_s']:.0f} s,"
                f" archiving {figures['archiving_s']:.1f} s"
            ),
        ),
    ]


def search_rows(quick: bool, say: Callable[[str], None]) -> list[Row]:
    """The section, as ``python -m bench`` runs it: 10,000 runs (``quick``: 2,000)."""
    runs = 2_000 if quick else 10_000
    say(f"search: logging a sweep of {runs:,} runs")
    return rows_of(measure(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 runs instead of 10,000")
    parser.add_argument("--runs", type=int, help="this many runs (instead of 10,000)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--write", type=Path, nargs="?", const=Path("bench/RESULTS.md"), help="update this section")
    args = parser.parse_args(argv)
    runs = args.runs or (2_000 if args.quick else 10_000)
    configure_logging(json=True, level="error")  # the figures are the output
    started = time.perf_counter()
    figures = measure(runs)
    rows = rows_of(figures)
    command = " ".join(["python -m bench.search", *(sys.argv[1:] if argv is None else argv)])
    rows[-1].note += f". Measured {time.strftime('%Y-%m-%d')} by `{command}`, in {time.perf_counter() - started:.0f} s."
    print(text(rows))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.write:
        args.write.write_text(replace_section(args.write.read_text(), rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
