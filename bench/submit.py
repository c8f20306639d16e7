"""What capturing a submitted script's output costs the script.

Run: ``python -m bench.submit [--lines N] [--repeats R]``

A script prints N lines and measures its own running time.  Side by side: run
directly with its output to /dev/null, and submitted (a supervisor captures every
line into the run's output log).  Prints the script's time both ways and the ratio
(target: at most 2x), and checks every line was captured, in order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import redis

from runstream import Experiment, ScriptRunConfig, Workspace
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer

SCRIPT = """
import sys, time
try:  # as a training script does: the run first (submitted: its output is flushed live)
    from runstream import Run
    run = Run.get_context()
except Exception:
    run = None
n = int(sys.argv[1])
start = time.perf_counter()
for i in range(n):
    print(f"line {i} of the training log")
elapsed = time.perf_counter() - start
open("elapsed.txt", "w").write(repr(elapsed))
if run is not None:
    run.log("elapsed", elapsed)
"""


def direct(folder: Path, lines: int) -> float:
    subprocess.run([sys.executable, "print_lines.py", str(lines)], cwd=folder, stdout=subprocess.DEVNULL, check=True)
    return float((folder / "elapsed.txt").read_text())


def submitted(workspace: Workspace, folder: Path, lines: int) -> tuple[float, int, bool]:
    run = Experiment(workspace, "bench-submit").submit(ScriptRunConfig(folder, "print_lines.py", arguments=[lines]))
    run.wait_for_completion(timeout=300)
    elapsed = run.get_metrics("elapsed")["elapsed"]
    client = redis.Redis.from_url(workspace.settings.redis_url)
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(workspace.keys.output(run.id)))
    client.close()
    chunks = [fields[b"l"].decode() for _, fields in entries if fields[b"s"] == b"stdout"]
    captured = [line for chunk in chunks for line in chunk.split("\n")]
    in_order = captured == [f"line {i} of the training log" for i in range(lines)]
    return float(elapsed), len(captured), in_order  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/results/submit.json"))
    args = parser.parse_args(argv)
    configure_logging(level="error")
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        folder = Path(tmp) / "src"
        folder.mkdir()
        (folder / "print_lines.py").write_text(SCRIPT)
        workspace = Workspace("bench", redis_url=server.url, data_dir=Path(tmp) / "data")
        with BackgroundCollector(CollectorSettings(workspace=workspace.settings, reader="bench")):
            plain = [direct(folder, args.lines) for _ in range(args.repeats)]
            started = time.perf_counter()
            runs = [submitted(workspace, folder, args.lines) for _ in range(args.repeats)]
            wall = (time.perf_counter() - started) / args.repeats
    captured = [r[0] for r in runs]
    ratio = statistics.median(captured) / statistics.median(plain)
    print(f"runstream script output benchmark: {args.lines:,} lines x {args.repeats}, Python {sys.version.split()[0]}")
    print(f"  script, output to /dev/null     {statistics.median(plain):8.3f} s")
    print(f"  script, submitted and captured  {statistics.median(captured):8.3f} s   {ratio:.2f}x   (target <= 2x)")
    in_order = all(r[2] for r in runs)
    print(f"  lines captured                  {min(r[1] for r in runs):,} of {args.lines:,}, in order: {in_order}")
    print(f"  submit -> Completed, wall       {wall:8.3f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"direct_s": plain, "captured_s": captured, "ratio": ratio, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
