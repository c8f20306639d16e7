"""The end of a process's runs: the runs this process started and left running, finished at exit.

An interactive run (``exp.start_logging()``, ``run.child_run()``) that its script
never completes is finished when the process exits, through the logger's exit hook
(which runs before the logger's final flush): Completed, or Failed if the interpreter
is exiting on an uncaught exception (as W&B and MLflow do).  :class:`~runstream.run.Run`
registers a run here when it starts and takes it off when any object of the run
finishes it.

The registry holds what finishing needs (the run's handle and the function that
queues its events) strongly, not the ``Run`` object: a run whose object was dropped
(``exp.start_logging().log(...)``) is finished like any other.

A forked child inherits the registry, but the runs in it are its parent's: the child
forgets them (and sends no heartbeats for them), so its exit never ends them.  Runs
the child starts itself are its own, finished at its exit.  A child that leaves
through ``os._exit`` (every multiprocessing child) gets its final flush from
:mod:`runstream._exit_paths`, which this module sets up.

Guarded by the GIL: each change is one dict operation, from whichever thread starts or
finishes a run, or from the exit hook.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Final

from runstream._batcher import Item, RunHandle
from runstream._exit_paths import watch_multiprocessing
from runstream.events import Status, StatusChanged
from runstream.logger import get_logger

__all__ = ["finish_at_exit", "opened", "settle"]

#: Runs this process started and has not finished: handle -> how to queue an event of it.
_OPEN: Final[dict[RunHandle, Callable[[Item], None]]] = {}
#: Runs the exit hook finished, with the status it gave them.
_ENDED_AT_EXIT: Final[dict[RunHandle, Status]] = {}


def opened(handle: RunHandle, append: Callable[[Item], None]) -> None:
    """The run of ``handle`` was started here: finish it at exit unless it is finished first."""
    _OPEN[handle] = append


def settle(handle: RunHandle) -> Status | None:
    """The run of ``handle`` is being finished (by any of its objects): nothing to do for it at exit.

    Returns:
        The status the exit hook gave it, if the exit finished it already; else None.
    """
    _OPEN.pop(handle, None)
    return _ENDED_AT_EXIT.get(handle)


def finish_at_exit() -> None:
    """Runs this process started and left running: completed, or failed if the
    interpreter is exiting on an uncaught exception."""
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    status: Status = "Completed" if error is None else "Failed"
    message = None if error is None else f"{type(error).__name__}: {error}"
    logger = get_logger()
    for handle in list(_OPEN):
        append = _OPEN.pop(handle, None)
        if append is None:  # finished by another thread since the list was taken
            continue
        _ENDED_AT_EXIT[handle] = status
        logger.retire(handle)  # first, so no heartbeat follows the status
        append((handle.index, StatusChanged(status, message, time.time())))


def _forget_parents_runs() -> None:
    """In a forked child: the runs registered are the parent's to finish and to keep alive."""
    logger = get_logger()
    for handle in _OPEN:
        logger.retire(handle)
    _OPEN.clear()
    _ENDED_AT_EXIT.clear()


def _in_forked_child() -> None:
    _forget_parents_runs()
    watch_multiprocessing()  # multiprocessing may have been loaded after runstream


get_logger().add_exit_hook(finish_at_exit)
watch_multiprocessing()
os.register_at_fork(after_in_child=_in_forked_child)
