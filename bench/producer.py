"""What ``run.log`` costs a training loop, and how fast points reach Redis.

Run: ``python -m bench.producer [--points N] [--repeats R] [--json PATH]``

Starts a private redis-server, then measures in this one process, side by side:

- ``list.append``: a bare append of a float, the floor of any in-process buffer;
- ``run.log`` (hot path only): the call with the logger thread parked, so no other
  thread competes for the GIL: the cost of the call itself;
- ``run.log`` (live): the call while the logger thread drains and sends, as in
  training, and the sustained rate from the first point until ``flush`` returns;
- the drain: grouping, steps, msgpack encoding per point (no I/O);
- raw Redis: pipelined XADD of pre-encoded 1024-point msgpack batches, the rate
  Redis itself takes from one Python process.

Prints the median of R repeats (min-max beside it) and the ratios, and writes the
raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import msgpack
import redis

from runstream import Experiment, Workspace, logger_stats
from runstream._batcher import build_batches
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer


def bare_append(n: int) -> float:
    """Seconds per ``list.append`` of a float."""
    buffer: list[float] = []
    append = buffer.append
    start = time.perf_counter()
    for i in range(n):
        append(i * 0.5)
    return (time.perf_counter() - start) / n


def log_hot_path(workspace: Workspace, n: int) -> tuple[float, float]:
    """Seconds per ``run.log`` with nobody draining, then seconds per point to build batches."""
    run = Experiment(workspace, "bench-hot").start_logging()
    parked: deque[object] = deque()
    run._append = parked.append  # park the items: measure the call alone

    class _Quiet:
        flag = b"\0"  # never asks for attention

    pipe = run._pipe
    run._pipe = _Quiet()  # type: ignore[assignment]
    log = run.log
    start = time.perf_counter()
    for i in range(n):
        log("loss", i * 0.5)
    per_call = (time.perf_counter() - start) / n
    items = list(parked)
    handle = run._handle
    assert handle is not None  # noqa: S101  # a run started here has one
    # The batches built here are thrown away: the run's seq and steps are put back, or the
    # collector would hold the run's next batch for the seqs it never got (DESIGN §3).
    seq, steps = handle.seq, dict(handle.next_step)
    start = time.perf_counter()
    build_batches(items, "bench", pipe._handles)  # type: ignore[arg-type,attr-defined]
    per_point = (time.perf_counter() - start) / n
    handle.seq, handle.next_step = seq, steps
    run._pipe = pipe
    run._append = pipe.queue.append  # type: ignore[attr-defined]
    run.complete()
    return per_call, per_point


def log_live(workspace: Workspace, n: int) -> tuple[float, float]:
    """Seconds per ``run.log`` while the logger sends, and points/s until flushed."""
    run = Experiment(workspace, "bench-live").start_logging()
    log = run.log
    start = time.perf_counter()
    for i in range(n):
        log("loss", i * 0.5)
    logged = time.perf_counter()
    run.flush(timeout=120)
    done = time.perf_counter()
    run.complete()
    return (logged - start) / n, n / (done - start)


def raw_redis(url: str, n: int, batch: int = 1024) -> float:
    """Points/s of pipelined XADD of pre-encoded ``batch``-point msgpack entries."""
    client = redis.Redis.from_url(url)
    payload = msgpack.packb(
        {"steps": list(range(batch)), "values": [i * 0.5 for i in range(batch)], "ts": time.time()}, use_bin_type=True
    )
    entries = n // batch
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(entries):
        pipe.xadd("bench:raw", {"v": 1, "r": "raw", "p": "p", "q": i + 1, "b": payload})
        if i % 64 == 63:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - start
    client.delete("bench:raw")
    client.close()
    return entries * batch / elapsed


def _repeat(repeats: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(repeats)]


def _fmt(values: list[float], scale: float, unit: str) -> str:
    median = statistics.median(values) * scale
    return f"{median:12,.1f} {unit:<9} ({min(values) * scale:,.1f} - {max(values) * scale:,.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/producer.json"))
    args = parser.parse_args(argv)
    configure_logging(level="error")  # no collector runs here: its absence is expected
    n, repeats = args.points, args.repeats

    with TemporaryDirectory() as tmp, RedisServer() as server:
        workspace = Workspace("bench", redis_url=server.url, data_dir=Path(tmp))
        append = _repeat(repeats, lambda: bare_append(n))
        hot = [log_hot_path(workspace, n) for _ in range(repeats)]
        live = [log_live(workspace, n) for _ in range(repeats)]
        raw = _repeat(repeats, lambda: raw_redis(server.url, n))
        stats = logger_stats()

    hot_call, drain = [h[0] for h in hot], [h[1] for h in hot]
    live_call, live_rate = [v[0] for v in live], [v[1] for v in live]
    base = statistics.median(append)
    rows = [
        ("list.append (floor)", _fmt(append, 1e9, "ns/call"), "1.0x"),
        (
            "run.log, hot path alone",
            _fmt(hot_call, 1e9, "ns/call"),
            f"{statistics.median(hot_call) / base:.1f}x append",
        ),
        (
            "run.log, logger sending",
            _fmt(live_call, 1e9, "ns/call"),
            f"{statistics.median(live_call) / base:.1f}x append",
        ),
        ("drain: group+encode", _fmt(drain, 1e9, "ns/point"), ""),
        ("into Redis via run.log", _fmt(live_rate, 1, "points/s"), ""),
        (
            "raw pipelined XADD",
            _fmt(raw, 1, "points/s"),
            f"run.log reaches {statistics.median(live_rate) / statistics.median(raw):.1%}",
        ),
    ]
    print(
        f"runstream producer benchmark: {n:,} points x {repeats} repeats, Python {sys.version.split()[0]}"
    )  # the benchmark's report
    for name, figure, ratio in rows:
        print(f"  {name:<26} {figure:<48} {ratio}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "points": n,
                "append_s": append,
                "log_hot_s": hot_call,
                "log_live_s": live_call,
                "drain_s_per_point": drain,
                "live_points_per_s": live_rate,
                "raw_xadd_points_per_s": raw,
                "logger_stats": stats.__dict__ if hasattr(stats, "__dict__") else repr(stats),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
