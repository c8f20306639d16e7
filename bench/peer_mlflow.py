"""MLflow's side of the peer benchmark: what ``mlflow.log_metric`` costs, and how fast points become durable.

Run (under bench/.peers-venv, which ``bench.peers`` builds; the project's venv has no MLflow):
``python bench/peer_mlflow.py --calls N --points N --repeats R``

A standalone script, stdlib and MLflow only, since it runs where runstream is not installed.
Measures, in this one process, with the repeats interleaved so that the modes share the
machine's conditions:

- hot path: ns per ``mlflow.log_metric(name, value, step=i)`` over ``calls`` calls, with a local
  file store (a ``file:`` URI, which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``),
  with sqlite (MLflow 3's default backend), and asynchronously (``synchronous=False``): for async
  the calls alone, the ``mlflow.flush_async_logging()`` after them timed apart;
- throughput to durable: ``points`` asynchronous calls then the flush, in points/s.

Async logging goes to the file store unless ``--async-store sqlite``: there MLflow's ten writer
threads contend for the database and reach only some 170 points/s on this machine (slower than
its synchronous calls), so a few thousand points would take minutes. The file store is MLflow's
fastest local path: the comparison does not pick the peer's worst.

Start-up (the import; ``start_run`` plus one warm-up call that lets MLflow open its store session
and start its async queue) is timed apart. Each run's points are read back afterwards to check
that all of them arrived. Telemetry is off (``MLFLOW_DISABLE_TELEMETRY``): nothing leaves the
machine. Prints one JSON object on stdout; whatever the library writes to stdout goes to
stderr, and its warnings and log lines are recorded in the JSON instead of printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

METRIC = "loss"
EXPERIMENT = "peer-bench"


@dataclass(slots=True)
class Figures:
    """Raw figures, one entry per repeat, keyed by mode (``file``, ``sqlite``, ``async``)."""

    hot_path_ns: dict[str, list[float]] = field(default_factory=dict)
    start_run_s: dict[str, list[float]] = field(default_factory=dict)
    flush_s: list[float] = field(default_factory=list)
    throughput_pps: list[float] = field(default_factory=list)
    throughput_start_run_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class _Recorder(logging.Handler):
    """Keeps the first line of each distinct log record, so nothing reaches stderr mid-measurement."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.levelname}: {record.getMessage().splitlines()[0]}"
        if text not in self.seen:
            self.seen.append(text)


def _quiet(seen: list[str]) -> None:
    """Record warnings and MLflow/alembic log lines of WARNING and above in ``seen``; print none."""

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
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logger = logging.getLogger(name)
        logger.handlers = [_Recorder(seen)]
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _claim_stdout() -> TextIO:
    """Point fd 1 (ours and any child process's) at stderr; return the real stdout for the JSON."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return real


def _import_mlflow() -> tuple[Any, float]:
    """Import MLflow here, not at the top: its import time is a figure, and the env must be set first."""
    start = time.perf_counter()
    import mlflow  # type: ignore[import-not-found]  # installed in bench/.peers-venv only

    return mlflow, time.perf_counter() - start


class Bench:
    """One MLflow per process: the tracking URIs it switches between and the runs it checks."""

    def __init__(self, mlflow: Any, folder: Path, async_store: str) -> None:
        self.mlflow = mlflow
        self.uris = {
            "file": (folder / "mlruns").as_uri(),
            "sqlite": f"sqlite:///{folder / 'mlflow.db'}",
        }
        self.uris["async"] = self.uris[async_store]

    def _start(self, mode: str) -> tuple[str, float]:
        """Start a run in ``mode``'s store; return its id and the seconds it took."""
        self.mlflow.end_run()  # a no-op, unless a failed measurement left its run open
        start = time.perf_counter()
        self.mlflow.set_tracking_uri(self.uris[mode])
        self.mlflow.set_experiment(EXPERIMENT)
        run_id = str(self.mlflow.start_run().info.run_id)
        self.mlflow.log_metric(METRIC, 0.0, step=0, synchronous=False if mode == "async" else None)  # warm-up
        self.mlflow.flush_async_logging()
        return run_id, time.perf_counter() - start

    def _finish(self, run_id: str, expected: int, figures: Figures) -> None:
        """End the run, then read its points back: a shortfall is a problem to report, not to hide."""
        self.mlflow.end_run()
        stored = len(self.mlflow.MlflowClient().get_metric_history(run_id, METRIC))
        if stored != expected:
            figures.problems.append(f"run {run_id}: {stored} points stored of {expected} logged")

    def hot_path(self, mode: str, calls: int, figures: Figures) -> None:
        """Ns per ``log_metric`` call over ``calls`` calls; for async, the flush after them apart."""
        synchronous = False if mode == "async" else None  # None: the plain call, MLflow's default (sync)
        run_id, start_s = self._start(mode)
        log = self.mlflow.log_metric
        start = time.perf_counter_ns()
        for i in range(1, calls + 1):
            log(METRIC, i * 0.5, step=i, synchronous=synchronous)
        per_call = (time.perf_counter_ns() - start) / calls
        start_flush = time.perf_counter()
        self.mlflow.flush_async_logging()
        if mode == "async":
            figures.flush_s.append(time.perf_counter() - start_flush)
        figures.hot_path_ns.setdefault(mode, []).append(per_call)
        figures.start_run_s.setdefault(mode, []).append(start_s)
        self._finish(run_id, calls + 1, figures)

    def throughput(self, points: int, figures: Figures) -> None:
        """Points/s from the first of ``points`` asynchronous calls until the flush has returned."""
        run_id, start_s = self._start("async")
        log = self.mlflow.log_metric
        start = time.perf_counter()
        for i in range(1, points + 1):
            log(METRIC, i * 0.5, step=i, synchronous=False)
        self.mlflow.flush_async_logging()
        figures.throughput_pps.append(points / (time.perf_counter() - start))
        figures.throughput_start_run_s.append(start_s)
        self._finish(run_id, points + 1, figures)


def _guarded(figures: Figures, name: str, measure: Callable[[], None]) -> None:
    """Run one measurement; an error from MLflow is recorded under ``name`` and the others go on."""
    if name in figures.errors:
        return
    try:
        measure()
    except Exception as exc:  # noqa: BLE001  # any failure of the library under test is a result to report
        figures.errors[name] = "".join(traceback.format_exception(exc))[-2000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000, help="calls per hot-path measurement")
    parser.add_argument("--points", type=int, default=5_000, help="points per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--async-store", choices=("file", "sqlite"), default="file", help="store behind async logging")
    args = parser.parse_args(argv)
    out = _claim_stdout()
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 raises on file stores without it
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # else a background thread looks up its telemetry host
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_ENABLE_ASYNC_LOGGING", None)  # the plain call must stay synchronous
    seen: list[str] = []
    _quiet(seen)
    mlflow, import_s = _import_mlflow()
    _quiet(seen)  # again: importing MLflow installs its own handlers
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="peer-mlflow-") as tmp:
        bench = Bench(mlflow, Path(tmp), args.async_store)
        for _ in range(args.repeats):
            for mode in ("file", "sqlite", "async"):
                _guarded(figures, mode, partial(bench.hot_path, mode, args.calls, figures))
            _guarded(figures, "throughput", lambda: bench.throughput(args.points, figures))
    report = {
        "version": str(mlflow.__version__),
        "python": platform.python_version(),
        "calls": args.calls,
        "points": args.points,
        "repeats": args.repeats,
        "async_store": args.async_store,
        "import_s": import_s,
        "hot_path_ns": figures.hot_path_ns,
        "start_run_s": figures.start_run_s,
        "async_flush_s": figures.flush_s,
        "throughput_pps": figures.throughput_pps,
        "throughput_start_run_s": figures.throughput_start_run_s,
        "problems": figures.problems,
        "errors": figures.errors,
        "warnings": seen,
    }
    print(json.dumps(report), file=out)
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
