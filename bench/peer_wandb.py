"""W&B's side of the peer benchmark: what ``wandb.log`` costs offline, and how fast points become durable.

Run (under bench/.peers-venv, which ``bench.peers`` builds; the project's venv has no wandb):
``python bench/peer_wandb.py --calls N --points N --repeats R``

A standalone script, stdlib and wandb only, since it runs where runstream is not installed.
Every run is ``wandb.init(mode="offline", dir=<temp folder>)`` with ``WANDB_MODE=offline`` and
``WANDB_SILENT=true``, no API key and W&B's config, cache and data folders in that temp folder,
so it never logs in nor touches the network or the user's home. Measures, in this one process:

- hot path: ns per ``wandb.log({name: value})`` over ``calls`` calls (the call alone: each one
  hands the record to the wandb-core service over its socket, which writes the run's file);
- throughput to durable: ``points`` calls then ``run.finish()``, which returns once wandb-core
  has written the offline run, in points/s.

Start-up (the import; ``wandb.init`` plus one warm-up call) is timed apart, as is ``finish`` after
the hot path. The first ``init`` also starts wandb-core, so it is the slow one. Prints one JSON
object on stdout; whatever the library writes to stdout goes to stderr, and its warnings are
recorded in the JSON instead of printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

METRIC = "loss"
PROJECT = "peer-bench"


@dataclass(slots=True)
class Figures:
    """Raw figures, one entry per repeat."""

    hot_path_ns: list[float] = field(default_factory=list)
    init_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    throughput_pps: list[float] = field(default_factory=list)
    throughput_init_s: list[float] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _quiet(seen: list[str]) -> None:
    """Record each distinct warning in ``seen`` instead of printing it."""

    def record(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = f"{category.__name__}: {str(message).splitlines()[0]} ({Path(filename).name}:{lineno})"
        if text not in seen:
            seen.append(text)

    warnings.simplefilter("default")  # each warning once per place, as Python shows them by default
    warnings.showwarning = record


def _claim_stdout() -> TextIO:
    """Point fd 1 (ours and wandb-core's) at stderr; return the real stdout for the JSON."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return real


def _offline_env(folder: Path) -> None:
    """Offline, silent, no credentials, and every W&B folder inside ``folder``."""
    for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        os.environ.pop(key, None)
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",  # no crash reports leave the machine either
        WANDB_DIR=str(folder),
        WANDB_CONFIG_DIR=str(folder / "config"),
        WANDB_CACHE_DIR=str(folder / "cache"),
        WANDB_DATA_DIR=str(folder / "data"),
    )


def _import_wandb() -> tuple[Any, float]:
    """Import wandb here, not at the top: its import time is a figure, and the env must be set first."""
    start = time.perf_counter()
    import wandb  # type: ignore[import-not-found]  # installed in bench/.peers-venv only

    return wandb, time.perf_counter() - start


class Bench:
    """One wandb per process; each measurement is a fresh offline run in ``folder``."""

    def __init__(self, wandb: Any, folder: Path) -> None:
        self.wandb = wandb
        self.folder = folder

    def _init(self) -> tuple[Any, float]:
        """Start an offline run and log one warm-up point; return it and the seconds it took."""
        if self.wandb.run is not None:  # a failed measurement left its run open
            self.wandb.run.finish()
        start = time.perf_counter()
        run = self.wandb.init(mode="offline", dir=self.folder, project=PROJECT)
        self.wandb.log({METRIC: 0.0})
        return run, time.perf_counter() - start

    def hot_path(self, calls: int, figures: Figures) -> None:
        """Ns per ``wandb.log`` call over ``calls`` calls; ``finish`` after them apart."""
        run, init_s = self._init()
        log = self.wandb.log
        start = time.perf_counter_ns()
        for i in range(1, calls + 1):
            log({METRIC: i * 0.5})
        per_call = (time.perf_counter_ns() - start) / calls
        start_finish = time.perf_counter()
        run.finish()
        figures.finish_s.append(time.perf_counter() - start_finish)
        figures.hot_path_ns.append(per_call)
        figures.init_s.append(init_s)

    def throughput(self, points: int, figures: Figures) -> None:
        """Points/s from the first of ``points`` calls until ``run.finish()`` has returned."""
        run, init_s = self._init()
        log = self.wandb.log
        start = time.perf_counter()
        for i in range(1, points + 1):
            log({METRIC: i * 0.5})
        run.finish()
        figures.throughput_pps.append(points / (time.perf_counter() - start))
        figures.throughput_init_s.append(init_s)


def _guarded(figures: Figures, name: str, measure: Callable[[], None]) -> None:
    """Run one measurement; an error from wandb is recorded under ``name`` and the others go on."""
    if name in figures.errors:
        return
    try:
        measure()
    except Exception as exc:  # noqa: BLE001  # any failure of the library under test is a result to report
        figures.errors[name] = "".join(traceback.format_exception(exc))[-2000:]


def _offline_runs(folder: Path) -> int:
    """How many offline run folders wandb wrote: one per measurement, or something went astray."""
    return sum(1 for _ in (folder / "wandb").glob("offline-run-*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000, help="calls per hot-path measurement")
    parser.add_argument("--points", type=int, default=5_000, help="points per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    out = _claim_stdout()
    seen: list[str] = []
    _quiet(seen)
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="peer-wandb-") as tmp:
        folder = Path(tmp)
        _offline_env(folder)
        wandb, import_s = _import_wandb()
        bench = Bench(wandb, folder)
        for _ in range(args.repeats):
            _guarded(figures, "hot_path", lambda: bench.hot_path(args.calls, figures))
            _guarded(figures, "throughput", lambda: bench.throughput(args.points, figures))
        offline_runs = _offline_runs(folder)
        wandb.teardown()  # stop wandb-core before its folder goes away
    report = {
        "version": str(wandb.__version__),
        "python": platform.python_version(),
        "calls": args.calls,
        "points": args.points,
        "repeats": args.repeats,
        "import_s": import_s,
        "hot_path_ns": figures.hot_path_ns,
        "init_s": figures.init_s,
        "finish_s": figures.finish_s,
        "throughput_pps": figures.throughput_pps,
        "throughput_init_s": figures.throughput_init_s,
        "offline_runs": offline_runs,
        "errors": figures.errors,
        "warnings": seen,
    }
    print(json.dumps(report), file=out)
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
