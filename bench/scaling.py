"""Collector processes for the benchmarks, and how fast several of them drain filled shards.

:func:`collector_process` starts ``python -m runstream.collector`` for a workspace (the
suite's stack runs one).  :func:`drains` is the scaling measure of ``python -m
bench`` (section 6, one Redis) and of :mod:`bench.cluster` (one Redis and a Redis
Cluster, side by side): N collector processes share a workspace's ingest shards out,
are paused while runs fill the shards, and are timed from their release to the last
point applied.  It runs the same on one Redis and on a cluster: the client it looks
with is a cluster's when the URL's node says cluster mode is on, as runstream's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, cast

import redis

from runstream import Experiment, Workspace
from runstream.keys import Keys

__all__ = ["Drain", "SyncClient", "collector_process", "drains", "sync_client"]

#: The bench's own looks at Redis: one server's client, or a cluster's.
SyncClient: TypeAlias = redis.Redis | redis.RedisCluster


def collector_process(workspace: Workspace, *, lease_ttl: float = 5.0, reader: str = "") -> subprocess.Popen[bytes]:
    """``python -m runstream.collector`` for ``workspace`` (its logs only from warnings up)."""
    settings = workspace.settings
    env = os.environ | {
        "RUNSTREAM_REDIS_URL": settings.redis_url,
        "RUNSTREAM_WORKSPACE": settings.workspace,
        "RUNSTREAM_DATA_DIR": str(settings.data_dir),
        "RUNSTREAM_SHARDS": str(settings.shards),
    }
    command = [sys.executable, "-m", "runstream.collector", "--lease-ttl", str(lease_ttl), "--json"]
    if reader:
        command += ["--reader", reader]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sync_client(url: str) -> SyncClient:
    """A synchronous client of ``url``: a cluster's if its node says cluster mode is on."""
    plain = redis.Redis.from_url(url, socket_timeout=10)
    if not cast("dict[str, int]", plain.info("cluster")).get("cluster_enabled"):
        return plain
    plain.close()
    return redis.RedisCluster.from_url(url, socket_timeout=10)


@dataclass(frozen=True, slots=True)
class Drain:
    """One drain: ``points`` applied in ``seconds``, and the cores each kind of process used meanwhile.

    ``cores``: CPU seconds over wall seconds of the Redis servers (``redis``), the
    collector processes (``collectors``), this process (``bench``: its polling and its
    logger's thread), and the rest of the machine (``other``: other jobs on a shared one).
    """

    points: int
    seconds: float
    cores: dict[str, float]

    @property
    def rate(self) -> float:
        return self.points / self.seconds

    def cpu_per_million(self, part: str) -> float:
        """CPU seconds ``part`` spent per million points applied."""
        return self.cores[part] * self.seconds / self.points * 1e6


def drains(
    workspace: Workspace,
    processes: int,
    points: int,
    runs: int,
    *,
    repeats: int = 1,
    redis_pids: Sequence[int] = (),
    lease_ttl: float = 5.0,
    poll: float = 0.002,
) -> list[Drain]:
    """``points`` applied by ``processes`` collector processes sharing ``workspace``'s ingest shards, ``repeats`` times.

    The collectors start first and share the shards out; then, each repeat, they are
    paused (SIGSTOP) while ``runs`` new runs fill the shards with ``points`` points in
    all (their leases kept alive meanwhile), and the clock runs from their release
    (SIGCONT) to the last point applied: the apply rate alone, not start-up or the
    producer's pace.  The CPU time of the collectors, of this process and of
    ``redis_pids`` is read from /proc before and after.  The records are looked at every
    ``poll`` seconds: the finer, the more looking costs (on a cluster, 64 runs looked at
    every 10 ms take about a tenth of a core).  Every collector is stopped before it
    returns.

    Raises:
        RuntimeError: the collectors did not share the shards out, or apply every
            point, in time.
    """
    keys = workspace.keys
    share = keys.shards // processes
    with (
        _collectors(workspace, processes, lease_ttl) as workers,
        contextlib.closing(sync_client(workspace.settings.redis_url)) as client,
    ):
        groups = {"redis": list(redis_pids), "collectors": [w.pid for w in workers], "bench": [os.getpid()]}
        measured = []
        for _ in range(repeats):
            _until(
                lambda: _shared_out(client, keys, processes, share), 60, f"{processes} collectors to share out", 0.05
            )
            for worker in workers:
                os.kill(worker.pid, signal.SIGSTOP)
            with _leases_kept(workspace, lease_ttl):
                expected = _fill(workspace, points, runs)
            measured.append(_released(workers, client, keys, expected, groups, poll))
    return measured


@contextlib.contextmanager
def _leases_kept(workspace: Workspace, lease_ttl: float) -> Iterator[None]:
    """Renew every shard's lease, every third of its TTL as its owner does, while the owners are paused.

    A fill may outlast a lease: without this, a lapsed shard would go to whichever
    collector looked first once released, and the share would not hold.
    """
    keys, stop = workspace.keys, threading.Event()

    def renew(client: SyncClient) -> None:
        with contextlib.closing(client):
            while True:
                pipe = client.pipeline(transaction=False)
                for shard in range(keys.shards):
                    pipe.pexpire(keys.ingest_lease(shard), int(lease_ttl * 1000))
                pipe.execute()
                if stop.wait(lease_ttl / 3):
                    return

    keeper = threading.Thread(target=renew, args=(sync_client(workspace.settings.redis_url),), name="lease-keeper")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def _released(
    workers: list[subprocess.Popen[bytes]],
    client: SyncClient,
    keys: Keys,
    expected: dict[str, int],
    groups: dict[str, list[int]],
    poll: float,
) -> Drain:
    """Release the paused ``workers`` and time them until the records hold the ``expected`` points."""
    points = sum(expected.values())
    before = _cpu_seconds(groups)
    start = time.perf_counter()
    for worker in workers:
        os.kill(worker.pid, signal.SIGCONT)
    _until(lambda: _applied(client, keys, expected), 120, f"{len(workers)} collectors to apply the points", poll)
    seconds = time.perf_counter() - start
    used = {name: (after - before[name]) / seconds for name, after in _cpu_seconds(groups).items()}
    used["other"] = max(0.0, used.pop("machine") - sum(used.values()))
    return Drain(points, seconds, used)


def _cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) of each group's processes so far, and of the whole ``machine``."""
    tick = os.sysconf("SC_CLK_TCK")
    spent = {}
    for name, pids in groups.items():
        fields = [Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split() for pid in pids]
        spent[name] = sum(int(f[11]) + int(f[12]) for f in fields) / tick  # utime, stime (fields 14, 15)
    busy = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    spent["machine"] = sum(int(busy[i]) for i in (0, 1, 2, 5, 6, 7)) / tick  # user nice system irq softirq steal
    return spent


@contextlib.contextmanager
def _collectors(workspace: Workspace, processes: int, lease_ttl: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Collector processes c0..c<processes - 1>, each stopped after (released first if paused)."""
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(processes):
            workers.append(collector_process(workspace, lease_ttl=lease_ttl, reader=f"c{k}"))
        yield workers
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)


def _fill(workspace: Workspace, points: int, runs: int) -> dict[str, int]:
    """``points`` points over ``runs`` runs, all in the ingest streams: run id -> its points."""
    started = [Experiment(workspace, "bench-scale").start_logging() for _ in range(runs)]
    for i in range(points):
        started[i % runs].log("loss", i * 0.5)
    for run in started:
        run.complete(timeout=None)  # the record is not waited for: its collectors are paused
        run.flush(timeout=300)  # everything is in the ingest streams
    return {run.id: points // runs + (n < points % runs) for n, run in enumerate(started)}


def _until(condition: Callable[[], bool], bound: float, what: str, poll: float) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {bound:.0f} s for {what}")
        time.sleep(poll)


def _shared_out(client: SyncClient, keys: Keys, processes: int, share: int) -> bool:
    """Whether collectors c0..c<processes - 1> each hold at least ``share`` shards, and all are held."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.get(keys.ingest_lease(shard))
    owners = cast("list[bytes | None]", pipe.execute())
    held = [owners.count(f"c{k}".encode()) for k in range(processes)]
    return min(held) >= share and sum(held) == keys.shards


def _applied(client: SyncClient, keys: Keys, expected: dict[str, int]) -> bool:
    """Whether every run holds its points; the runs that do are dropped from ``expected`` (fewer to ask next)."""
    waiting = list(expected)
    pipe = client.pipeline(transaction=False)
    for run_id in waiting:
        pipe.hget(keys.metric_counts(run_id), "loss")
    for run_id, count in zip(waiting, cast("list[bytes | None]", pipe.execute()), strict=True):
        if count is not None and int(count) >= expected[run_id]:
            del expected[run_id]
    return not expected
