"""The peers beside runstream: MLflow and W&B (offline) measured on this machine, in a venv of their own.

Run: ``python -m bench.peers [--calls N] [--points N] [--repeats R] [--refresh] [--json PATH]``

MLflow and wandb are no project dependencies and never enter the project's venv.
``peer_python`` builds bench/.peers-venv (ignored by git) and fills it with its own pip;
``measure_peers`` runs bench/peer_mlflow.py and bench/peer_wandb.py under it, one after the
other, each as a subprocess bounded by a timeout, and gathers the JSON they print:

- hot path, ns per call: ``mlflow.log_metric`` with a file store, with sqlite and async
  (``synchronous=False``, on the file store), and ``wandb.log`` offline;
- throughput to durable, points/s: MLflow async then ``flush_async_logging``, W&B offline then
  ``run.finish``.

A peer that cannot be installed or fails becomes a note and its figures are left out: the
suite goes on, and no number is ever made up. Stdlib only: this module runs in the project's
venv, which has neither library.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PEERS_VENV = BENCH / ".peers-venv"
REQUIREMENTS = ("mlflow>=3.0", "wandb>=0.19")
VENV_TIMEOUT_S = 300.0
INSTALL_TIMEOUT_S = 1_200.0
IMPORT_TIMEOUT_S = 120.0
SCRIPT_BASE_TIMEOUT_S = 120.0  # imports, wandb-core start-up, sqlite's schema
SCRIPT_CALL_TIMEOUT_S = 0.02  # per logged point: some 5x MLflow's slowest store here
TAIL_CHARS = 1_500

# (key in the result, mode in peer_mlflow's report): the hot-path figures and their labels.
MLFLOW_MODES = (("mlflow_file", "file"), ("mlflow_sqlite", "sqlite"), ("mlflow_async", "async"))
HOT_LABELS = {
    "mlflow_file": "mlflow.log_metric, file store",
    "mlflow_sqlite": "mlflow.log_metric, sqlite",
    "mlflow_async": "mlflow.log_metric, async",
    "wandb_offline": "wandb.log, offline",
}
THROUGHPUT_LABELS = {
    "mlflow_async": "MLflow async + flush",
    "wandb_offline": "W&B offline + finish",
}


class PeerError(RuntimeError):
    """A peer could not be installed, or its script failed or printed no usable report."""


def _tail(text: str) -> str:
    return text.strip()[-TAIL_CHARS:]


def _run(command: list[str], timeout: float, what: str, cwd: Path | None = None) -> str:
    """Run ``command`` in a session of its own; return its stdout.

    On a timeout the whole process group is killed, so that helpers the peers start (wandb-core)
    go with it.

    Raises:
        PeerError: it could not start, timed out or exited non-zero (with its stderr's tail).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise PeerError(f"{what} could not start: {exc}") from exc
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise PeerError(f"{what} did not finish in {timeout:.0f} s") from exc
    if process.returncode != 0:
        raise PeerError(f"{what} exited with {process.returncode}: {_tail(stderr)}")
    return stdout


def _imports(python: Path) -> bool:
    """Whether ``python`` exists and imports both peers."""
    if not python.exists():
        return False
    try:
        _run([str(python), "-I", "-c", "import mlflow, wandb"], IMPORT_TIMEOUT_S, "import check")
    except PeerError:
        return False
    return True


def peer_python(refresh: bool = False) -> Path:
    """The python of bench/.peers-venv, with MLflow and wandb installed.

    Reuses the venv when both import. Otherwise installs them with the venv's own pip, after
    creating the venv if it is missing or ``refresh`` asks for a new one.

    Raises:
        PeerError: the venv could not be made, or pip failed, or the peers still do not import.
    """
    python = PEERS_VENV / "bin" / "python"
    if not refresh and _imports(python):
        return python
    if refresh or not python.exists():
        # ``-m venv`` from this venv's python bases the new venv on the same base interpreter.
        _run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], VENV_TIMEOUT_S, "venv creation")
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS]
    _run(install, INSTALL_TIMEOUT_S, "pip install " + " ".join(REQUIREMENTS))
    if not _imports(python):
        raise PeerError(f"{' and '.join(REQUIREMENTS)} installed in {PEERS_VENV} but do not import")
    return python


def _report(python: Path, script: str, calls: int, points: int, repeats: int) -> dict[str, object]:
    """Run one peer script and return the JSON object it printed as its last line."""
    timeout = SCRIPT_BASE_TIMEOUT_S + SCRIPT_CALL_TIMEOUT_S * repeats * (3 * calls + points)
    command = [str(python), "-I", str(BENCH / script)]
    command += ["--calls", str(calls), "--points", str(points), "--repeats", str(repeats)]
    with tempfile.TemporaryDirectory(prefix="peer-cwd-") as cwd:  # whatever a peer drops in its cwd
        stdout = _run(command, timeout, script, cwd=Path(cwd))
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError as exc:
        raise PeerError(f"{script} printed no JSON: {_tail(stdout)}") from exc
    if not isinstance(report, dict):
        raise PeerError(f"{script} printed no JSON object: {_tail(stdout)}")
    return report


def _floats(report: dict[str, object], *path: str) -> list[float]:
    """The list of numbers at ``path`` in a peer's report; [] when it is absent."""
    value: object = report
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, int | float):
        return [float(value)]
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, int | float)]


def _strings(report: dict[str, object], key: str) -> list[str]:
    """The strings at ``key`` (a list, or a dict's ``name: text`` items) in a peer's report."""
    value = report.get(key)
    if isinstance(value, dict):  # name: traceback, of which the last line says what went wrong
        return [f"{name}: {(str(text).strip().splitlines() or [''])[-1]}" for name, text in value.items()]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _errors(report: dict[str, object]) -> set[str]:
    value = report.get("errors")
    return {str(name) for name in value} if isinstance(value, dict) else set()


def _take_mlflow(report: dict[str, object], result: dict[str, Any]) -> None:
    failed = _errors(report)
    for key, mode in MLFLOW_MODES:
        if mode not in failed and (figures := _floats(report, "hot_path_ns", mode)):
            result["hot_path_ns"][key] = figures
            result["timed_apart_s"][f"mlflow_start_run_{mode}"] = _floats(report, "start_run_s", mode)
    if "throughput" not in failed and (figures := _floats(report, "throughput_pps")):
        result["throughput_pps"]["mlflow_async"] = figures
    result["timed_apart_s"]["mlflow_import"] = _floats(report, "import_s")
    result["timed_apart_s"]["mlflow_async_flush"] = _floats(report, "async_flush_s")
    result["notes"].append(f"mlflow: async logging measured on the {report.get('async_store')} store")
    result["notes"] += [f"mlflow failed: {text}" for text in _strings(report, "errors")]
    result["notes"] += [f"mlflow: {text}" for text in _strings(report, "problems")]
    result["notes"] += [f"mlflow warned: {text}" for text in _strings(report, "warnings")]


def _take_wandb(report: dict[str, object], result: dict[str, Any]) -> None:
    failed = _errors(report)
    if "hot_path" not in failed and (figures := _floats(report, "hot_path_ns")):
        result["hot_path_ns"]["wandb_offline"] = figures
    if "throughput" not in failed and (figures := _floats(report, "throughput_pps")):
        result["throughput_pps"]["wandb_offline"] = figures
    result["timed_apart_s"]["wandb_import"] = _floats(report, "import_s")
    result["timed_apart_s"]["wandb_init"] = _floats(report, "init_s") + _floats(report, "throughput_init_s")
    result["timed_apart_s"]["wandb_finish"] = _floats(report, "finish_s")
    result["notes"] += [f"wandb failed: {text}" for text in _strings(report, "errors")]
    result["notes"] += [f"wandb warned: {text}" for text in _strings(report, "warnings")]


def measure_peers(calls: int, points: int, repeats: int) -> dict[str, Any]:
    """Measure MLflow and W&B offline in bench/.peers-venv, one after the other.

    Args:
        calls: calls per hot-path measurement.
        points: points per throughput measurement.
        repeats: measurements of each kind.

    Returns:
        ``versions``, ``hot_path_ns`` and ``throughput_pps`` (one figure per repeat, keyed
        ``mlflow_file``, ``mlflow_sqlite``, ``mlflow_async``, ``wandb_offline``), ``timed_apart_s``
        (imports, run start-ups, flushes), ``elapsed_s`` per peer script, ``n`` and ``notes``. A
        peer that failed has a note instead of figures.
    """
    result: dict[str, Any] = {
        "n": {"calls": calls, "points": points, "repeats": repeats},
        "versions": {},
        "hot_path_ns": {},
        "throughput_pps": {},
        "timed_apart_s": {},
        "elapsed_s": {},
        "notes": [],
    }
    try:
        python = peer_python()
    except PeerError as exc:
        result["notes"].append(f"peers not measured: {exc}")
        return result
    for name, script, take in (("mlflow", "peer_mlflow.py", _take_mlflow), ("wandb", "peer_wandb.py", _take_wandb)):
        start = time.perf_counter()
        try:
            report = _report(python, script, calls, points, repeats)
        except PeerError as exc:
            result["notes"].append(f"{name} not measured: {exc}")
            continue
        finally:
            result["elapsed_s"][name] = time.perf_counter() - start
        result["versions"][name] = str(report.get("version"))
        take(report, result)
    return result


def _fmt(values: list[float], unit: str) -> str:
    median = statistics.median(values)
    return f"{median:12,.1f} {unit:<9} ({min(values):,.1f} - {max(values):,.1f})"


def _rows(figures: dict[str, list[float]], labels: dict[str, str], unit: str, higher_is_better: bool) -> list[str]:
    """One line per measured figure, with how many times worse than the group's best it is."""
    medians = {key: statistics.median(values) for key, values in figures.items() if values}
    if not medians:
        return ["    (none measured)"]
    best = max(medians.values()) if higher_is_better else min(medians.values())
    return [
        f"    {labels[key]:<32} {_fmt(figures[key], unit):<52} "
        f"{best / median if higher_is_better else median / best:5.1f}x the best"
        for key, median in medians.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000, help="calls per hot-path measurement")
    parser.add_argument("--points", type=int, default=5_000, help="points per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--refresh", action="store_true", help="rebuild bench/.peers-venv first")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "peers.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.refresh:
        try:
            peer_python(refresh=True)
        except PeerError as exc:
            print(f"could not rebuild {PEERS_VENV}: {exc}", file=sys.stderr)
            return 1
    result = measure_peers(args.calls, args.points, args.repeats)
    elapsed = time.perf_counter() - start
    versions = ", ".join(f"{name} {version}" for name, version in result["versions"].items()) or "no peer"
    print(
        f"peer benchmark: {versions}; {args.calls:,} calls, {args.points:,} points x {args.repeats} repeats, "
        f"medians (min - max)"
    )  # the benchmark's report
    print("  hot path, the cost of one call")
    print("\n".join(_rows(result["hot_path_ns"], HOT_LABELS, "ns/call", higher_is_better=False)))
    print(f"  throughput to durable, {args.points:,} points")
    print("\n".join(_rows(result["throughput_pps"], THROUGHPUT_LABELS, "points/s", higher_is_better=True)))
    apart = ", ".join(
        f"{key} {statistics.median(values):.3f}" for key, values in result["timed_apart_s"].items() if values
    )
    print(f"  timed apart (s, medians): {apart}")
    for note in result["notes"]:
        print(f"  note: {note}")
    took = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result["elapsed_s"].items())
    print(f"  took {elapsed:.0f} s ({took})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
