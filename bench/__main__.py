"""``python -m bench [--quick] [--no-peers]``: every benchmark, side by side, in one run.

Starts a private Redis, collector processes and the server (and, for the last section,
a private 3-primary Redis Cluster: :mod:`bench.cluster`); measures runstream against
the floor (a bare append, raw Redis) and against MLflow and W&B offline (installed on
first use into a venv of their own, bench/.peers-venv: not project dependencies).
Prints a table of medians with min-max and ratios, writes the raw figures as JSON
(bench/results/suite.json) and the table as markdown (bench/RESULTS.md, which the
README links).  A row whose target is missed is marked, and a profile of what it
measures shows where the time goes (:mod:`bench.profiles`).  Full: about 17 minutes on
2 cores (the peers' venv installed; the training loop, section 8, is 8 of them; the archive,
section 9, under 2; the search over 10,000 runs, section 10, about 2); ``--quick``: about 6.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.peers import measure_peers, peer_python
from bench.profiles import profile
from bench.report import markdown, text
from bench.suite import FULL, QUICK, run_sections
from runstream.logconfig import configure_logging


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (under 2 minutes)")
    parser.add_argument("--no-peers", action="store_true", help="leave MLflow and W&B out")
    parser.add_argument("--json", type=Path, default=Path("bench/results/suite.json"))
    parser.add_argument("--markdown", type=Path, default=Path("bench/RESULTS.md"))
    args = parser.parse_args(argv)
    configure_logging(level="error")  # progress and the table are the output
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # the server process runs as `runstream serve` does
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)

    peers: dict[str, Any] = {}
    if not args.no_peers:
        say("peers: preparing bench/.peers-venv (mlflow, wandb)")
        peer_python()
        peers = measure_peers(sizes.peer_calls, sizes.peer_points, sizes.repeats)
        say("peers: measured")
    with TemporaryDirectory() as tmp:
        rows = run_sections(sizes, Path(tmp), peers, say)
    took = time.perf_counter() - started
    command = "python -m bench" + (" --quick" if args.quick else "") + (" --no-peers" if args.no_peers else "")
    header = (
        f"# Benchmarks\n\nMeasured {time.strftime('%Y-%m-%d')} on {_machine()}, in {took:.0f} s, by `{command}`."
        f"\nPeers: {json.dumps(peers.get('versions', {}))}." + "".join(f"\n- {note}" for note in peers.get("notes", []))
    )
    print(header.replace("# Benchmarks\n\n", ""))
    print(text(rows))
    for name in dict.fromkeys(row.profile for row in rows if row.met is False and row.profile):
        missed = ", ".join(row.name for row in rows if row.met is False and row.profile == name)
        say(f"profiling {name} (target missed: {missed})")
        print(f"\nwhere the time goes, {name} (missed: {missed}):\n{profile(name)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"sizes": dataclasses.asdict(sizes), "peers": peers, "rows": [dataclasses.asdict(r) for r in rows]},
            indent=1,
        )
    )
    args.markdown.write_text(markdown(rows, header))
    say(f"done: {args.markdown}, {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
