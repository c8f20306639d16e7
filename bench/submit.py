"""What capturing a submitted script's output costs the script.

Run: ``python -m bench.submit [--lines N] [--repeats R]``

A script prints N lines and measures its own running time.  Side by side: run
directly with its output to /dev/null, and submitted (a supervisor captures every
line into the run's output log).  Prints the script's time both ways and the ratio
(target: at most 2x), and checks every line was captured, in order.  Measured with
stdout block-buffered and with PYTHONUNBUFFERED=1 (a write per line), as scripts run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

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


def _measure(workspace: Workspace, folder: Path, lines: int, repeats: int) -> dict[str, Any]:
    plain = [direct(folder, lines) for _ in range(repeats)]
    started = time.perf_counter()
    runs = [submitted(workspace, folder, lines) for _ in range(repeats)]
    wall = (time.perf_counter() - started) / repeats
    captured = [r[0] for r in runs]
    return {
        "direct_s": plain,
        "captured_s": captured,
        "ratio": statistics.median(captured) / statistics.median(plain),
        "wall_s": wall,
        "lines_captured": min(r[1] for r in runs),
        "in_order": all(r[2] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/results/submit.json"))
    args = parser.parse_args(argv)
    configure_logging(level="error")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        folder = Path(tmp) / "src"
        folder.mkdir()
        (folder / "print_lines.py").write_text(SCRIPT)
        workspace = Workspace("bench", redis_url=server.url, data_dir=Path(tmp) / "data")
        with BackgroundCollector(CollectorSettings(workspace=workspace.settings, reader="bench")):
            # Both ways a script's stdout is commonly set up; the submitted script inherits it.
            for mode, unbuffered in (("block-buffered", None), ("PYTHONUNBUFFERED=1", "1")):
                os.environ.pop("PYTHONUNBUFFERED", None)
                if unbuffered:
                    os.environ["PYTHONUNBUFFERED"] = unbuffered
                results[mode] = _measure(workspace, folder, args.lines, args.repeats)
    print(f"runstream script output benchmark: {args.lines:,} lines x {args.repeats}, Python {sys.version.split()[0]}")
    for mode, r in results.items():
        print(f"  {mode}")
        print(f"    script, output to /dev/null     {statistics.median(r['direct_s']):8.3f} s")
        print(
            f"    script, submitted and captured  {statistics.median(r['captured_s']):8.3f} s"
            f"   {r['ratio']:.2f}x   (target <= 2x)"
        )
        print(
            f"    lines captured                  {r['lines_captured']:,} of {args.lines:,}, in order: {r['in_order']}"
        )
        print(f"    submit -> Completed, wall       {r['wall_s']:8.3f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
