"""The submitted run a script belongs to, as its supervisor's environment names it.

``exp.submit`` runs a script under a supervisor (:mod:`runstream._supervisor`) that sets
``RUNSTREAM_RUN_ID`` (and ``RUNSTREAM_EXPERIMENT``, the workspace variables and
``RUNSTREAM_OUTPUT_FLUSH``).  ``Run.get_context()`` reads them through
:func:`submitted_run`; any process started from that script with its environment
(multiprocessing children of every start method included) finds the same run.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from typing import Final

from runstream.errors import ConfigError

__all__ = ["submitted_run"]

_RUN_ID: Final = re.compile(r"(?P<experiment>.+)_(?P<seconds>\d+)_(?P<hex>[0-9a-f]{8})")
#: The output flusher thread, once started (one per process).
_OUTPUT_FLUSHER: list[threading.Thread] = []


def submitted_run() -> tuple[str, str] | None:
    """``(experiment name, run id)`` of the submitted run this process belongs to, or None outside one.

    Inside one, also flushes stdout and stderr every ``RUNSTREAM_OUTPUT_FLUSH`` seconds.

    Raises:
        ConfigError: the run id does not name its experiment and RUNSTREAM_EXPERIMENT is not set.
    """
    run_id = os.environ.get("RUNSTREAM_RUN_ID")
    if not run_id:
        return None
    match = _RUN_ID.fullmatch(run_id)
    experiment_name = os.environ.get("RUNSTREAM_EXPERIMENT") or (match["experiment"] if match else None)
    if not experiment_name:
        raise ConfigError(f"cannot tell the experiment of run {run_id!r}: set RUNSTREAM_EXPERIMENT")
    _flush_output_every(os.environ.get("RUNSTREAM_OUTPUT_FLUSH"))
    return experiment_name, run_id


def _flush_output_every(seconds: str | None) -> None:
    """In a submitted script: flush stdout and stderr every ``seconds``, so its output shows
    live while it is written in blocks (no write per line, as unbuffered output would do)."""
    if not seconds or _OUTPUT_FLUSHER:
        return
    period = float(seconds)

    def flush_forever() -> None:
        while True:
            time.sleep(period)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(ValueError, OSError):  # closed at exit
                    stream.flush()

    thread = threading.Thread(target=flush_forever, name="runstream-output-flush", daemon=True)
    thread.start()
    _OUTPUT_FLUSHER.append(thread)
