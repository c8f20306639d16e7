"""The supervisor of a submitted run: ``python -m runstream._supervisor RUN EXPERIMENT WORKSPACE CONFIG``.

Started detached by :class:`runstream.submit.LocalExecutor`.  It owns the script's
process: unpacks the run's snapshot into a working copy, runs the script with the
run's environment (``RUNSTREAM_RUN_ID`` and the workspace variables), captures its
stdout and stderr line by line into the run's output log, sends the run's heartbeats,
stops the script when the run is canceled (SIGTERM, then SIGKILL after a grace
period), uploads ``./outputs`` when it ends, and sets the final status: Completed on
exit code 0, else Failed with the last line of stderr (a traceback's error line).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
from pathlib import Path
from typing import IO, Any, Final

from runstream.config import Settings
from runstream.connection import connect
from runstream.events import OutputLogged
from runstream.experiment import Experiment
from runstream.logger import get_logger
from runstream.run import Run
from runstream.workspace import Workspace

#: Seconds between SIGTERM and SIGKILL when a run is canceled.
GRACE: Final = 10.0
#: How often a submitted script's own output buffers are flushed, in seconds.
OUTPUT_FLUSH: Final = 0.1
#: How often captured lines are sent, in seconds.
OUTPUT_TICK: Final = 0.02
#: Bytes the pipes from the script may hold, and read at once.
PIPE_SIZE: Final = 1 << 20
#: How long the readers let output gather after emptying a pipe, in seconds.
READ_PAUSE: Final = 0.005


def _pump(stream: IO[bytes], lines: deque[str], tail: deque[str] | None) -> None:
    """Split what the script writes into lines, reading in large chunks.

    After a read that emptied the pipe, the reader pauses (:data:`READ_PAUSE`) so what
    the script writes next gathers in the pipe: an unbuffered script (PYTHONUNBUFFERED
    is common) makes a write per line, and a reader woken by each would cost the
    script's machine more than the script itself.
    """
    fd = stream.fileno()
    with contextlib.suppress(OSError, AttributeError):  # Linux only; a smaller pipe still works
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # room for the pauses: the script rarely waits
    pending = b""
    while chunk := os.read(fd, PIPE_SIZE):
        complete, newline, pending = (pending + chunk).rpartition(b"\n")
        if not newline:
            continue  # no line ended in this chunk yet
        decoded = complete.decode(errors="replace").split("\n")  # one decode per chunk, not per line
        lines.extend(decoded)
        if tail is not None:
            tail.extend(line for line in decoded if line.strip())
        if len(chunk) < PIPE_SIZE:
            time.sleep(READ_PAUSE)
    if pending:
        lines.append(pending.decode(errors="replace"))
        if tail is not None and pending.strip():
            tail.append(pending.decode(errors="replace"))


def _watch_cancel(run: Run, canceled: threading.Event) -> None:
    """Set ``canceled`` if the run ends Canceled (by anyone) while the script runs."""
    from runstream.consumer.wait import final_status  # lazy, as the SDK's readers are

    experiment = run._require_experiment()  # the package's own
    settings, keys = experiment.workspace.settings, experiment.workspace.keys

    async def watch() -> str:
        async with connect(settings.redis_url) as client:
            return await final_status(client, keys, run.id)

    if get_logger().call(watch) == "Canceled":
        canceled.set()


def _stop(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def supervise(run: Run, config: dict[str, Any], work: Path) -> tuple[int, list[str]]:
    """Run the script to its end: its exit code (negative: stopped by that signal) and stderr's tail."""
    settings = run._require_experiment().workspace.settings  # the package's own
    env = {
        **os.environ,
        "RUNSTREAM_RUN_ID": run.id,
        "RUNSTREAM_EXPERIMENT": run._require_experiment().name,
        "RUNSTREAM_REDIS_URL": settings.redis_url,
        "RUNSTREAM_WORKSPACE": settings.workspace,
        "RUNSTREAM_DATA_DIR": str(settings.data_dir),
        # Not PYTHONUNBUFFERED (a write per line halves the speed of a chatty script): the
        # SDK flushes the script's stdout and stderr every OUTPUT_FLUSH seconds instead,
        # once the script calls Run.get_context().
        "RUNSTREAM_OUTPUT_FLUSH": str(OUTPUT_FLUSH),
        # The rest of the workspace the script logs to, where this process' settings name it:
        # its portal URLs, its files and its archive are the submitter's.
        **{
            variable: value
            for variable, value in (
                ("RUNSTREAM_URL", settings.server_url),
                ("RUNSTREAM_ARTIFACTS_URL", settings.artifacts_url),
                ("RUNSTREAM_ARCHIVE_URL", settings.archive_url),
            )
            if value
        },
    }
    command = [str(config["interpreter"]), str(config["script"]), *[str(a) for a in config["arguments"]]]
    child = subprocess.Popen(  # noqa: S603  # the user's own script, as submitted
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert child.stdout is not None  # noqa: S101  # PIPE
    assert child.stderr is not None  # noqa: S101  # PIPE
    out, err, tail = deque[str](), deque[str](), deque[str](maxlen=20)
    readers = [
        threading.Thread(target=_pump, args=(child.stdout, out, None), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, err, tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    canceled = threading.Event()
    threading.Thread(target=_watch_cancel, args=(run, canceled), daemon=True).start()
    while True:
        done = child.poll() is not None and not any(r.is_alive() for r in readers)
        for stream, lines in (("stdout", out), ("stderr", err)):
            batch = [lines.popleft() for _ in range(len(lines))]
            if batch:
                run._emit(OutputLogged(stream, batch, time.time()))  # type: ignore[arg-type]  # "stdout" | "stderr"
        if done:
            break
        if canceled.is_set() and child.poll() is None:
            _stop(child)
        time.sleep(OUTPUT_TICK)
    return (child.returncode if not canceled.is_set() else -signal.SIGTERM), list(tail)


def main(argv: list[str]) -> int:
    run_id, experiment_name, workspace_json, config_json = argv
    values = json.loads(workspace_json)
    values["data_dir"] = Path(values["data_dir"])
    workspace = Workspace.from_settings(Settings(**values))
    run = Run._supervise(Experiment(workspace, experiment_name), run_id)
    config = json.loads(config_json)
    run._set_status("Starting")
    work = workspace.settings.data_dir / "runs" / run_id / "work"
    work.mkdir(parents=True, exist_ok=True)
    snapshot = work.parent / "snapshot.zip"
    run.download_file("snapshot.zip", snapshot)
    with zipfile.ZipFile(snapshot) as archive:
        archive.extractall(work)
    run._set_status("Running")
    code, tail = supervise(run, config, work)
    if run.get_status() == "Canceled":
        return 0
    run._set_status("Finalizing")
    if (work / "outputs").is_dir():
        run.upload_folder("outputs", work / "outputs")
    run.add_properties({"exit_code": str(code)})
    if code == 0:
        run.complete()
    else:
        run.fail(tail[-1] if tail else f"the script exited with code {code}")
    return 0


def detach() -> None:
    """Fork away from the launching process: the parent returns at once, the child leads a new session."""
    if os.fork():
        os._exit(0)
    os.setsid()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--detach"]:
        detach()
        arguments = arguments[1:]
    sys.exit(main(arguments))
