"""``python -m bench.cluster [--quick] [--write]``: apply throughput on a 3-primary Redis Cluster vs one Redis.

Starts a private redis-server and a private 3-primary cluster
(:class:`~runstream.redis_cluster.RedisClusterServers`) side by side.  For 1, 2 and 4
collector processes, on one Redis and then on the cluster, a fresh workspace of 16
ingest shards (so that every primary holds some) is filled by 64 runs with the same
points, and the collectors, paused meanwhile, are timed draining it
(:func:`bench.scaling.drains`, the measure of the suite's scaling section).
Prints points applied per second, the ratios (2 and 4 collectors vs 1, the cluster vs
one Redis), the cores each kind of process used while draining, and a note on what
bounds each configuration on this machine.  ``python -m bench`` runs it as its
section 7; ``--write`` puts this run's section into bench/RESULTS.md, leaving the
other sections as they are.  Full: about a minute on 2 cores; ``--quick``: under 30 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from types import FrameType
from typing import Final

from bench.report import Row, replace_section, text
from bench.scaling import Drain, drains
from runstream import Workspace
from runstream.logconfig import configure_logging
from runstream.redis_cluster import RedisClusterServers
from runstream.redis_server import RedisServer

__all__ = ["COLLECTORS", "cluster_rows"]

COLLECTORS: Final = (1, 2, 4)
#: Ingest shards of each workspace: on 3 primaries, 5 or 6 each.
SHARDS: Final = 16
#: Runs that fill the shards: several per shard, so every shard (and primary) has work.
RUNS: Final = 64
#: The collectors' lease TTL: short, so that they share the shards out within a few seconds.
LEASE_TTL: Final = 2.0
#: Seconds between two looks at the records while draining (see :func:`bench.scaling.drains`).
POLL: Final = 0.01
#: The two targets, as the rows name them.
ONE: Final = "one Redis"
CLUSTER: Final = "3-primary cluster"


def _collectors(k: int) -> str:
    return f"{k} collector{'s' if k > 1 else ''}"


def measure(
    data_dir: Path, points: int, repeats: int, say: Callable[[str], None]
) -> dict[tuple[str, int], list[Drain]]:
    """Each count of collectors on one Redis, then on the cluster (interleaved, so drift hits both)."""
    measured: dict[tuple[str, int], list[Drain]] = {}
    with ExitStack() as stack:
        one = stack.enter_context(RedisServer())
        cluster = stack.enter_context(RedisClusterServers(data_dir / "cluster"))
        targets = {ONE: (one.url, [one.pid]), CLUSTER: (cluster.url, [node.pid for node in cluster.nodes])}
        for k in COLLECTORS:
            for name, (url, pids) in targets.items():
                label = f"{'cluster' if name == CLUSTER else 'redis'}{k}"
                workspace = Workspace(f"bench-{label}", redis_url=url, data_dir=data_dir, shards=SHARDS)
                servers = [pid for pid in pids if pid is not None]
                measured[name, k] = drains(
                    workspace, k, points, RUNS, repeats=repeats, redis_pids=servers, lease_ttl=LEASE_TTL, poll=POLL
                )
                rates = ", ".join(f"{d.rate:,.0f}" for d in measured[name, k])
                say(f"{name}, {_collectors(k)}: {rates} points/s")
    return measured


def _rate(runs: list[Drain]) -> float:
    return statistics.median(d.rate for d in runs)


def _cores(runs: list[Drain]) -> dict[str, float]:
    """The median over the repeats of the cores each kind of process used."""
    return {part: statistics.median(d.cores[part] for d in runs) for part in runs[0].cores}


def _bound(name: str, k: int, runs: list[Drain], cores: int) -> str:
    """What held these drains back, as the CPU figures say: the cores, one thread, or nothing saturated."""
    used = _cores(runs)
    busy = sum(used.values())
    found = []
    if busy >= 0.85 * cores:
        found.append(f"the {cores} cores ({busy:.2f} busy, {used['other']:.2f} of it other jobs)")
    if name == ONE and used["redis"] >= 0.8:
        found.append(f"Redis' one thread ({used['redis']:.2f} core)")
    if used["collectors"] / k >= 0.8:
        found.append(f"the collector's one thread ({used['collectors'] / k:.2f} core each)")
    if not found:
        found.append(f"nothing saturated ({busy:.2f} of {cores} cores busy)")
    return f"{name}, {_collectors(k)}: {' and '.join(found)}"


def _per_million(measured: dict[tuple[str, int], list[Drain]], name: str, part: str) -> float:
    """The median over every drain on ``name`` of the CPU seconds ``part`` spent per million points."""
    return statistics.median(d.cpu_per_million(part) for k in COLLECTORS for d in measured[name, k])


def model_note(measured: dict[tuple[str, int], list[Drain]]) -> str:
    """The scaling model, with the figures measured: what bounds each configuration."""
    cores = os.cpu_count() or 1
    ratio = ", ".join(f"{_rate(measured[CLUSTER, k]) / _rate(measured[ONE, k]):.2f}x" for k in COLLECTORS)
    work = {
        name: {part: _per_million(measured, name, part) for part in ("redis", "collectors")} for name in (ONE, CLUSTER)
    }
    one_thread = max(_cores(measured[ONE, k])["redis"] for k in COLLECTORS)
    thread = (
        f"it reached {one_thread:.2f} core: that thread is a bound"
        if one_thread >= 0.85
        else f"it never used more than {one_thread:.2f} core: that thread was not the bound"
    )
    bounds = "; ".join(_bound(name, k, measured[name, k], cores) for k in COLLECTORS for name in (ONE, CLUSTER))
    return (
        f"scaling model: {cores} cores run everything here (on the cluster, 3 primaries + the collectors + the"
        " bench). CPU seconds per million points applied (median of all drains): one Redis"
        f" {work[ONE]['redis']:.2f}, its collectors {work[ONE]['collectors']:.2f}; the cluster's 3 primaries"
        f" {work[CLUSTER]['redis']:.2f}, its collectors {work[CLUSTER]['collectors']:.2f} (the cluster client's"
        " routing and per-node pipelines; a read's batches applied in rounds, one batch per run each). On one"
        f" Redis every apply script runs on its one thread, and {thread}; most of the work is the collectors'"
        " Python (read, decode, plan: one thread each). On the cluster the scripts spread over 3 redis-server"
        " processes, which share the same cores with the collectors: that relieves Redis' thread, not the cores."
        f" Cluster vs one Redis with {'/'.join(map(str, COLLECTORS))} collectors: {ratio}. What bounds each"
        f" (median cores used while draining): {bounds}."
    )


def cluster_rows(data_dir: Path, points: int, repeats: int, say: Callable[[str], None]) -> list[Row]:
    """The section: points/s per target and count of collectors (each repeat), and the cores they used."""
    measured = measure(data_dir, points, repeats, say)
    section = (
        f"7. Redis Cluster: apply throughput with 1/2/4 collectors on 3 primaries vs one Redis,"
        f" {points:,} points of {RUNS} runs on {SHARDS} shards, {os.cpu_count()} cores"
    )
    rows = []
    for name in (ONE, CLUSTER):
        for k in COLLECTORS:
            against = {f"{ONE}, {_collectors(k)}": [d.rate for d in measured[ONE, k]]} if name == CLUSTER else {}
            if k > 1:
                against[f"{name}, 1 collector"] = [d.rate for d in measured[name, 1]]
            values = [d.rate for d in measured[name, k]]
            rows.append(Row(section, f"{name}, {_collectors(k)}", "points/s", values, against, lower_is_better=False))
    for name in (ONE, CLUSTER):
        for k in COLLECTORS:
            used = _cores(measured[name, k])
            label = f"{name}, {_collectors(k)}: cores used, Redis / collectors / bench / other jobs"
            shown = " / ".join(f"{used[part]:.2f}" for part in ("redis", "collectors", "bench", "other"))
            rows.append(Row(section, label, "cores", [sum(used.values())], shown=shown))
    rows[-1].note = model_note(measured)
    return rows


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300,000 points, not 1,000,000 (under 30 s)")
    parser.add_argument("--points", type=int, help="points per configuration")
    parser.add_argument("--repeats", type=int, help="drains per configuration (default 5; quick 1)")
    parser.add_argument("--write", type=Path, nargs="?", const=Path("bench/RESULTS.md"), help="update this section")
    args = parser.parse_args(argv)
    configure_logging(level="error")  # the figures are the output
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # unwind: the collectors and servers are stopped on the way out
    points = args.points or (300_000 if args.quick else 1_000_000)
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {message}", file=sys.stderr, flush=True)

    with TemporaryDirectory() as tmp:
        rows = cluster_rows(Path(tmp), points, args.repeats or (1 if args.quick else 5), say)
    took = time.perf_counter() - started
    command = " ".join(["python -m bench.cluster", *(sys.argv[1:] if argv is None else argv)])
    rows[-1].note += f" Measured {time.strftime('%Y-%m-%d')} by `{command}`, in {took:.0f} s."
    print(text(rows))
    if args.write:
        args.write.write_text(replace_section(args.write.read_text(), rows))
        say(f"done: section 7 of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
