"""What logging costs a loop that trains: runstream, W&B offline and MLflow async, side by side.

Run: ``python -m bench.training_loop [--quick] [--no-peers]`` (and as section 8 of ``python -m bench``).

Each step of the loop is a fixed chain of small matrix products (one BLAS thread), sized to
take 1 ms or 100 µs here; between steps each tool logs the step's metrics as it is used in a
training loop (:mod:`bench.loop_worker` says how). Every tool runs in a process of its own
(runstream in the project's venv, against a private Redis and collector; W&B and MLflow in
bench/.peers-venv), and in that process the loop runs in pairs, each of some seconds with
logging and as many without, interleaved in blocks of about 50 ms, so the baseline is the
same process on the same machine a few milliseconds apart (the machine's speed drifts too
much from one second to the next for segments of seconds to resolve a 1% cost). Reported
per configuration and tool:

- slowdown: the loop's wall time with logging over without (per pair; the median of the pairs);
- extra CPU per point: the main thread's CPU in the blocks with logging minus without, plus
  the CPU of the other threads and of the child processes (runstream's sender process,
  W&B's wandb-core) while the loop logs without pauses, until the tool has settled
  (flushed), per point;
- runstream's extra time beside W&B's: (W&B's slowdown - 1) / (runstream's - 1).

The collector's CPU is not counted for runstream: it is the service side, as W&B's servers are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers import PeerError, peer_python
from bench.report import Row, text
from bench.scaling import collector_process
from runstream import Workspace
from runstream.redis_server import RedisServer

__all__ = ["CONFIGS", "Config", "loop_rows"]

BENCH = Path(__file__).resolve().parent
SECTION = (
    "8. training loop: what logging costs a loop that trains (slowdown, all threads' CPU;"
    " runstream with its sender process, the default)"
)
SEGMENT_S = 1.5  # wall seconds of the baseline loop's steps in a pair (as many again with logging)
WORKER_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class Config:
    """One loop: ``metrics`` values logged per step of ``step_us`` µs; the targets it is held to."""

    metrics: int
    step_us: float
    max_slowdown: float | None  # None: measured, no target
    mlflow: bool  # MLflow async is measured here too (it is 10x slower: left out of the fast loops)

    @property
    def label(self) -> str:
        step = f"{self.step_us / 1000:g} ms" if self.step_us >= 1000 else f"{self.step_us:g} µs"
        rate = self.metrics * 1e6 / self.step_us
        return f"{self.metrics} metric{'s' if self.metrics > 1 else ''} per {step} step ({rate:,.0f} points/s)"


CONFIGS = (
    Config(10, 1000, 1.01, mlflow=True),
    Config(1, 1000, 1.01, mlflow=True),
    Config(10, 100, 1.05, mlflow=False),
    Config(100, 1000, None, mlflow=False),
)
#: At most this much extra CPU per point (µs) where 10,000 points/s flow.
MAX_CPU_PER_POINT_US = 1.0
#: runstream's extra time at least this many times smaller than W&B's.
MIN_BELOW_WANDB = 20.0


@dataclass(frozen=True, slots=True)
class Measured:
    """One tool in one configuration: per pair, the slowdown and the extra CPU per point (µs)."""

    slowdowns: list[float]
    cpu_per_point_us: list[float]

    @property
    def slowdown(self) -> float:
        return statistics.median(self.slowdowns)


def _worker(python: str, tool: str, config: Config, steps: int, pairs: int, env: dict[str, str]) -> Measured:
    command = [python, str(BENCH / "loop_worker.py"), "--tool", tool, "--metrics", str(config.metrics)]
    command += ["--step-us", str(config.step_us), "--steps", str(steps), "--pairs", str(pairs)]
    with tempfile.TemporaryDirectory(prefix="loop-cwd-") as cwd:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False
        )
    if done.returncode != 0:
        raise PeerError(f"{tool} loop exited with {done.returncode}: {done.stderr.strip()[-1500:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    slowdowns, cpu = [], []
    for pair in report["pairs"]:
        plain: list[list[float]] = pair["base"]
        logged: list[list[float]] = pair["tool"]
        # Per pair: its logging blocks' wall time over its plain blocks'; the extra CPU, the
        # main thread's in its logging blocks over its plain blocks' and the other threads'
        # and processes' while the loop logged without pauses, per point.
        slowdowns.append(sum(w for w, _ in logged) / sum(w for w, _ in plain))
        main = sum(c for _, c in logged) - sum(c for _, c in plain)
        main_points = config.metrics * report["block"] * len(logged)
        cpu.append((main / main_points + pair["others"] / (config.metrics * pair["others_steps"])) * 1e6)
    return Measured(slowdowns, cpu)


def _environment(workspace: Workspace | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if workspace is not None:
        settings = workspace.settings
        env.update(
            {
                "RUNSTREAM_REDIS_URL": settings.redis_url,
                "RUNSTREAM_WORKSPACE": settings.workspace,
                "RUNSTREAM_DATA_DIR": str(settings.data_dir),
            }
        )
    return env


def loop_rows(workspace: Workspace, quick: bool, peers: bool, say: Callable[[str], None]) -> list[Row]:
    """The section's rows: per configuration, runstream's slowdown and CPU beside W&B's and MLflow's."""
    pairs = 3 if quick else 9
    peer: str | None = None
    notes: list[str] = []
    if peers:
        try:
            peer = str(peer_python())
        except PeerError as exc:
            notes.append(f"peers not measured: {exc}")
    rows: list[Row] = []
    for config in CONFIGS:
        steps = max(100, int(SEGMENT_S * 1e6 / config.step_us / (2 if quick else 1)))
        tools: dict[str, Measured] = {}
        ours = _environment(workspace)
        # (label, tool, python, environment): runstream as it ships (its sender in a process of
        # its own), and with the sender thread in the training process, side by side.
        runs: list[tuple[str, str, str, dict[str, str]]] = [
            ("runstream", "runstream", sys.executable, ours | {"RUNSTREAM_SENDER": "process"}),
            ("thread", "runstream", sys.executable, ours | {"RUNSTREAM_SENDER": "thread"}),
        ]
        if peer is not None:
            runs.append(("wandb", "wandb", peer, _environment(None)))
            if config.mlflow:
                runs.append(("mlflow", "mlflow", peer, _environment(None)))
        for label, tool, python, env in runs:
            try:
                tools[label] = _worker(python, tool, config, steps, pairs, env)
            except (PeerError, subprocess.TimeoutExpired, ValueError) as exc:
                notes.append(f"{label}, {config.label}: not measured ({exc})")
            say(f"training loop, {config.label}: {label} done")
        rows += _config_rows(config, tools)
    if rows and notes:
        rows[-1].note = "; ".join(notes)
    return rows


def _config_rows(config: Config, tools: dict[str, Measured]) -> list[Row]:
    ours = tools.get("runstream")
    if ours is None:
        return []
    labels = {
        "thread": "runstream, RUNSTREAM_SENDER=thread",
        "wandb": "W&B offline",
        "mlflow": "MLflow async (sqlite)",
    }
    wandb = tools.get("wandb")
    below = (wandb.slowdown - 1) / max(ours.slowdown - 1, 1e-4) if wandb else None
    met: bool | None = None
    target = ""
    if config.max_slowdown is not None:
        target = f"<= {config.max_slowdown}x; >= {MIN_BELOW_WANDB:.0f}x less extra time than W&B"
        met = ours.slowdown <= config.max_slowdown and (below is None or below >= MIN_BELOW_WANDB)
    against = {labels[tool]: measured.slowdowns for tool, measured in tools.items() if tool in labels}
    rate = config.metrics * 1e6 / config.step_us
    rows = [
        Row(
            SECTION,
            f"{config.label}: slowdown",
            "x",
            ours.slowdowns,
            against,
            target=target,
            met=met,
            note=f"extra time beside W&B's: {below:,.0f}x less" if below is not None else "",
        ),
    ]
    cpu_target = rate == 10_000
    rows.append(
        Row(
            SECTION,
            f"{config.label}: extra CPU per point",
            "µs",
            ours.cpu_per_point_us,
            {labels[tool]: m.cpu_per_point_us for tool, m in tools.items() if tool in labels},
            target=f"<= {MAX_CPU_PER_POINT_US:g} µs" if cpu_target else "",
            met=statistics.median(ours.cpu_per_point_us) <= MAX_CPU_PER_POINT_US if cpu_target else None,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training_loop", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter segments, 3 pairs")
    parser.add_argument("--no-peers", action="store_true", help="runstream only")
    parser.add_argument("--json", type=Path, default=None, help="write the rows' figures here")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as folder, RedisServer() as server:
        workspace = Workspace("bench", redis_url=server.url, data_dir=Path(folder))
        collector = collector_process(workspace)
        try:
            rows = loop_rows(workspace, args.quick, not args.no_peers, say)
        finally:
            collector.terminate()
            collector.wait(30)
    print(text(rows))
    if args.json is not None:
        figures: list[dict[str, Any]] = [
            {"name": r.name, "unit": r.unit, "values": r.values, "against": r.against} for r in rows
        ]
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
