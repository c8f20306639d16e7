"""One tool's side of the training-loop benchmark: a loop that trains, with and without logging.

Run: ``python bench/loop_worker.py --tool TOOL --metrics M --step-us S --steps N --pairs P``

A standalone script (stdlib and numpy, and the tool it measures), since it runs under the
project's venv for runstream and under bench/.peers-venv for W&B and MLflow. Each step of
the loop is a fixed chain of small matrix products, sized once at start so that a step takes
about ``--step-us`` microseconds here, then ``--metrics`` values logged the way each tool is
used in a training loop:

- ``none``: nothing (the loop alone, for a sanity figure);
- ``runstream``: ``run.log(name, value)`` per metric (the Azure ML v1 API has no dict form);
- ``wandb``: one ``wandb.log({name: value, ...})`` per step, offline;
- ``mlflow``: one ``mlflow.log_metrics({...}, step=i, synchronous=False)`` per step, sqlite store.

In one process, ``--pairs`` pairs of ``--steps`` steps with logging and as many without,
interleaved in blocks of about 50 ms (see :func:`_pair`), so that the drift of a shared
machine falls on both alike; then as many steps with logging in one go. After each the
tool is let settle (runstream and MLflow flush; W&B's service is waited for until its CPU
stops moving), and the CPU until then counts to the tool, so that work a tool defers is
not left out: per block the main thread's CPU, and over the last segment every other
thread's and child process's (W&B's wandb-core service, runstream's sender process).
Work a tool defers to a thread of its own that holds the GIL (MLflow's async logging) may
fall in a block without logging, so the interleaving flatters such a tool a little;
runstream defers its work to its sender process (its timer thread's ten short ticks a
second aside). Prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One BLAS thread: the matmuls are the training loop, and extra threads would be noise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402  # after the thread limits, which numpy reads at import

_TICKS = os.sysconf("SC_CLK_TCK")
_SIZE = 48  # matrix side: a product takes some microseconds, so a step is a chain of them
BLOCK_S = 0.05  # seconds of one block of steps (see _pair)


def _children_cpu(root: int) -> float:
    """CPU seconds of the live processes descended from ``root`` (W&B's service)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    total = 0.0
    for pid, cpu in times.items():
        ancestor = parents.get(pid, 0)
        while ancestor > 1 and ancestor != root:
            ancestor = parents.get(ancestor, 0)
        if ancestor == root and pid != root:
            total += cpu
    return total


def _cpu() -> float:
    return time.process_time() + _children_cpu(os.getpid())


class Work:
    """The step: ``chain`` products of a 48x48 matrix, sized to take about ``step_us``."""

    def __init__(self, step_us: float) -> None:
        rng = np.random.default_rng(0)
        self.w = rng.standard_normal((_SIZE, _SIZE)) / np.sqrt(_SIZE)
        self.x = rng.standard_normal((_SIZE, _SIZE))
        self.chain = 1
        for _ in range(3):  # calibrate: the chain whose step takes step_us
            start = time.perf_counter()
            for _ in range(200):
                self.step()
            per_step = (time.perf_counter() - start) / 200
            self.chain = max(1, round(self.chain * step_us * 1e-6 / per_step))

    def step(self) -> None:
        x, w = self.x, self.w
        for _ in range(self.chain):
            x = w @ x
        self.x = x / (np.abs(x).max() + 1e-9)  # kept in range: the chain never over- or underflows


Logger = Callable[[int], None]


def _runstream(metrics: int) -> tuple[Logger, Callable[[], None], Callable[[], None], dict[str, Any]]:
    import runstream

    workspace = runstream.Workspace.from_config()  # RUNSTREAM_* from the driver
    run = runstream.Experiment(workspace, "training-loop").start_logging()
    names = [f"m{j}" for j in range(metrics)]
    log = run.log

    def step(i: int) -> None:
        base = i * 1e-3
        for name in names:
            log(name, base)

    def settle() -> None:
        run.flush(timeout=120)

    return step, settle, lambda: run.complete(timeout=120), {"version": runstream.__version__}


def _wandb(metrics: int, folder: str) -> tuple[Logger, Callable[[], None], Callable[[], None], dict[str, Any]]:
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": folder})
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        os.environ[var] = str(Path(folder, sub))
    import wandb  # type: ignore[import-not-found]  # installed in bench/.peers-venv only

    run = wandb.init(project="training-loop", mode="offline", dir=folder)
    names = [f"m{j}" for j in range(metrics)]

    def step(i: int) -> None:
        base = i * 1e-3
        run.log({name: base for name in names})

    def settle() -> None:  # offline W&B has no flush: wait until its service stops working
        me = os.getpid()
        last = _children_cpu(me)
        while True:
            time.sleep(0.2)
            now = _children_cpu(me)
            if now - last < 0.005:
                return
            last = now

    return step, settle, run.finish, {"version": wandb.__version__}


def _mlflow(metrics: int, folder: str) -> tuple[Logger, Callable[[], None], Callable[[], None], dict[str, Any]]:
    import mlflow  # type: ignore[import-not-found]  # installed in bench/.peers-venv only

    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("training-loop")
    mlflow.start_run()
    names = [f"m{j}" for j in range(metrics)]

    def step(i: int) -> None:
        base = i * 1e-3
        mlflow.log_metrics({name: base for name in names}, step=i, synchronous=False)

    def settle() -> None:
        mlflow.flush_async_logging()

    return step, settle, mlflow.end_run, {"version": mlflow.__version__}


def _none(metrics: int) -> tuple[Logger, Callable[[], None], Callable[[], None], dict[str, Any]]:
    return (lambda i: None), (lambda: None), (lambda: None), {}


def _pair(
    work: Work, steps: int, block: int, log: Logger, settle: Callable[[], None], first: int, log_first: bool
) -> dict[str, Any]:
    """``steps`` steps with logging and as many without, in alternating blocks of ``block``
    steps; then ``steps`` more with logging, in one go.

    The blocks are some tens of milliseconds long, each with-logging block beside one
    without, in the order AB BA AB ...: on a shared machine, whose speed drifts by a quarter
    from one second to the next, a block and its neighbour run at nearly the same speed,
    where two segments of seconds each do not.  Per block: wall seconds and the main
    thread's CPU.  The last segment logs as a training loop does, without pauses (a tool
    that batches by time works as it would there, not at the blocks' half rate): over it
    and until the tool settled, ``others`` is the CPU of every other thread and child
    process, and the main thread's while it settled, all of it the tool's.
    """
    base: list[list[float]] = []
    tool: list[list[float]] = []
    step = first
    for index in range(max(1, steps // block)):
        order = (True, False) if (index % 2 == 0) == log_first else (False, True)
        for logging in order:
            main, start = time.thread_time(), time.perf_counter()
            if logging:
                for i in range(step, step + block):
                    work.step()
                    log(i)
                step += block
            else:
                for _ in range(block):
                    work.step()
            (tool if logging else base).append([time.perf_counter() - start, time.thread_time() - main])
    settle()
    cpu0, main0 = _cpu(), time.thread_time()
    for i in range(step, step + steps):
        work.step()
        log(i)
    logging_main = time.thread_time() - main0
    settle()
    others = _cpu() - cpu0 - logging_main
    return {"base": base, "tool": tool, "others": others, "others_steps": steps, "next": step + steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tool", choices=("none", "runstream", "wandb", "mlflow"), required=True)
    parser.add_argument("--metrics", type=int, required=True)
    parser.add_argument("--step-us", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--pairs", type=int, required=True)
    args = parser.parse_args(argv)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # whatever a tool prints stays out of the JSON
    work = Work(args.step_us)
    with tempfile.TemporaryDirectory(prefix="loop-") as folder:
        if args.tool == "runstream":
            log, settle, finish, info = _runstream(args.metrics)
        elif args.tool == "wandb":
            log, settle, finish, info = _wandb(args.metrics, folder)
        elif args.tool == "mlflow":
            log, settle, finish, info = _mlflow(args.metrics, folder)
        else:
            log, settle, finish, info = _none(args.metrics)
        # Blocks of some 50 ms (at least 10 steps); a first pair, short, warms up (first calls, caches).
        block = max(10, round(BLOCK_S * 1e6 / args.step_us))
        _pair(work, 2 * block, block, log, settle, 0, True)
        pairs: list[dict[str, Any]] = []
        step = 2 * block
        for index in range(args.pairs):
            pair = _pair(work, args.steps, block, log, settle, step, index % 2 == 0)
            step = pair.pop("next")
            pairs.append(pair)
        finish()
    report = {
        "tool": args.tool,
        **info,
        "metrics": args.metrics,
        "steps": args.steps,
        "chain": work.chain,
        "block": block,
        "pairs": pairs,
    }
    print(json.dumps(report), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
