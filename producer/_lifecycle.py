"""The end of a process's runs: the runs this process started and left running, finished at exit.

An interactive run (``exp.start_logging()``, ``run.child_run()``) that its script
never completes is finished when the process exits, through the logger's exit hook
(which runs before the logger's final flush): Completed, or Failed if the interpreter
is exiting on an uncaught exception (as W&B and MLflow do).  :class:`~runstream.run.Run`
registers a run here when it starts and takes it off when it finishes itself.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING

from runstream.logger import get_logger

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["finish_at_exit", "opened", "settled"]

_UNFINISHED: weakref.WeakSet[Run] = weakref.WeakSet()


def opened(run: Run) -> None:
    """``run`` was started here: finish it at exit unless it finishes itself first."""
    _UNFINISHED.add(run)


def settled(run: Run) -> None:
    """``run`` is finishing itself: nothing to do for it at exit."""
    _UNFINISHED.discard(run)


def finish_at_exit() -> None:
    """Runs this process started and left running: completed, or failed if the
    interpreter is exiting on an uncaught exception."""
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    for run in list(_UNFINISHED):
        if error is not None:
            run._finish("Failed", f"{type(error).__name__}: {error}", None)  # the package's own
        else:
            run._finish("Completed", None, None)  # the package's own


get_logger().add_exit_hook(finish_at_exit)
