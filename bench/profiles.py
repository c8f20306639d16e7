"""Where the time goes, for a benchmark row whose target was missed: a cProfile summary.

``python -m bench`` runs the profile a missed row names (``Row.profile``) once, on a
fresh Redis, at a size that takes a few seconds, and prints the functions that took
the most time of their own.  The live-latency and server rows have no in-process
profile: their time is spread over processes (``py-spy record -p <pid>`` shows it).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import collector as collector_bench
from bench import producer as producer_bench
from runstream import Experiment, Workspace
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.redis_server import RedisServer

__all__ = ["PROFILES", "profile"]

POINTS = 300_000
TOP = 12


def _producer(workspace: Workspace) -> Callable[[], object]:
    # The calls to run.log (this thread); the logger's thread that sends is not in the profile.
    return lambda: producer_bench.log_live(workspace, POINTS)


def _collector(workspace: Workspace) -> Callable[[], object]:
    collector_bench.fill(workspace, POINTS)
    settings = CollectorSettings(workspace=workspace.settings, reader="profile", stats_interval=60.0)
    return lambda: asyncio.run(collector_bench.apply(settings, POINTS))


def _reading(workspace: Workspace) -> Callable[[], object]:
    run = Experiment(workspace, "profile-read").start_logging()
    for i in range(POINTS):
        run.log("loss", i * 0.5)
    run.complete(timeout=None)
    with BackgroundCollector(CollectorSettings(workspace=workspace.settings, reader="profile")):
        run.get_status()  # applied, and the collector stops: only the read is profiled

    async def read() -> object:  # in this thread (run.get_metrics would read in the logger's)
        async with connect(workspace.settings.redis_url) as client:
            return await RecordReader(client, workspace.keys).metrics(run.id)

    return lambda: asyncio.run(read())


#: Profile name -> a function that sets up on a workspace and returns what to profile.
PROFILES: dict[str, Callable[[Workspace], Callable[[], object]]] = {
    "producer": _producer,
    "collector": _collector,
    "reading": _reading,
}


def profile(name: str) -> str:
    """The top functions by own time of the named profile, as text."""
    with TemporaryDirectory() as tmp, RedisServer() as server:
        workspace = Workspace("profile", redis_url=server.url, data_dir=Path(tmp))
        work = PROFILES[name](workspace)
        profiler = cProfile.Profile()
        profiler.runcall(work)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(TOP)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start : start + TOP + 1])
