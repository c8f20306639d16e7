"""The ways out of a process that the logger's final flush must be on, besides ``atexit``.

``atexit`` covers a process that ends through the interpreter's exit: the main
process, an ``os.fork()`` child that returns or calls ``sys.exit``.  A
multiprocessing child (fork, forkserver or spawn) leaves through ``os._exit`` once its
target returns, which skips ``atexit``; what runs on its way out is
``multiprocessing.util._exit_function``, which calls the process's finalizers.  So in
every process where multiprocessing is loaded, :meth:`EventLogger.close` is also a
``multiprocessing.util.Finalize`` of exit priority :data:`EXIT_PRIORITY`
(``close`` does its work once, on whichever path comes first).

A child's bootstrap clears the finalizers it inherited (``BaseProcess._after_fork``)
and then calls the after-fork hooks registered with
``multiprocessing.util.register_after_fork``; that hook (:func:`_in_child`) puts
``close`` back.  It is registered when this module is imported where multiprocessing
is loaded (a spawn or forkserver child loads it before the user's modules), or, if
multiprocessing was loaded later, in the child right after ``os.fork()``.

A ``multiprocessing.Pool`` worker is not left to return: ``Pool.terminate()`` (the end
of a ``with`` block, or the pool's garbage collection) sends it SIGTERM, and no Python
code runs then.  So, in a pool worker, the hook also makes the worker flush before it
hands each task's result back (:func:`_flush_before_results`): what a task logged
before it returned is in Redis before the pool's owner can even see the result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from runstream._log import sdk_logger
from runstream.errors import RunstreamError
from runstream.logger import get_logger

__all__ = ["EXIT_PRIORITY", "watch_multiprocessing"]

#: Below 0: ``_exit_function`` calls ``close`` after the finalizers of pools and queues
#: (priorities 15 and 10) and after it has joined the process's own non-daemon children,
#: so the runs this process started end after its children's points.
EXIT_PRIORITY: Final = -1


class _Hook:
    """What multiprocessing's after-fork registry holds for this module (weakly: the
    registry is a WeakValueDictionary, so the object lives here)."""


_HOOK: Final = _Hook()
#: Whether this process (or the parent it was forked from) registered the after-fork hook.
_watching = False


def watch_multiprocessing() -> None:
    """Put the logger's ``close`` on multiprocessing's exit path here and in this process's children.

    Does nothing where multiprocessing is not loaded: no process of it starts then, and
    a plain script pays no import.  Called when runstream is imported, and in the child
    right after ``os.fork()`` (multiprocessing may have been loaded after runstream).
    """
    global _watching  # once per process lineage: a forked child inherits the registration
    if _watching or "multiprocessing" not in sys.modules:
        return
    from multiprocessing import util

    _watching = True
    util.Finalize(None, _close, exitpriority=EXIT_PRIORITY)
    util.register_after_fork(_HOOK, _in_child)
    if _pool_results() is not None:  # imported by a task: the worker took its put before
        sdk_logger("runstream.logger").warning(
            "pool_worker_not_flushed",
            reason="runstream was first imported inside a task, after this pool worker started",
            hint="import runstream at the top of the main module, or call run.flush() before a task returns",
        )


def _in_child(_hook: _Hook) -> None:
    """multiprocessing's bootstrap of a child, which has just dropped the finalizers it inherited."""
    from multiprocessing import util

    util.Finalize(None, _close, exitpriority=EXIT_PRIORITY)
    results = _pool_results()
    if results is not None:
        _flush_before_results(results)


def _close() -> None:
    get_logger().close()


def _pool_results() -> Any | None:
    """The result queue of this process if it is a ``multiprocessing.Pool`` worker, else None."""
    from multiprocessing import current_process

    pool = sys.modules.get("multiprocessing.pool")
    process = current_process()
    arguments: tuple[object, ...] = getattr(process, "_args", ())
    if pool is None or getattr(process, "_target", None) is not pool.worker or len(arguments) < 2:
        return None
    return arguments[1]  # pool.worker(inqueue, outqueue, ...): a SimpleQueue of the pool's context


def _flush_before_results(results: Any) -> None:
    """Make this pool worker flush the logger before each result goes back.

    The worker binds its result queue's ``put`` when it starts, after the bootstrap has
    called the after-fork hooks, so the instance attribute set here is what it calls.
    The flush comes before ``put`` takes the queue's lock, which the pool's workers share.
    """
    put: Callable[[object], None] | None = getattr(results, "put", None)
    if put is None:
        return

    def put_after_flush(result: object) -> None:
        _flush_quietly()
        put(result)

    results.put = put_after_flush


def _flush_quietly() -> None:
    """Flush, bounded as the exit flush is; a failure is said, never raised into the pool."""
    logger = get_logger()
    try:
        logger.flush(logger.exit_flush_timeout)
    except RunstreamError as exc:
        sdk_logger("runstream.logger").warning(
            "task_not_flushed",
            error=str(exc),
            hint="what is not in Redis is lost if the pool is terminated now; close() and join() it instead",
        )
