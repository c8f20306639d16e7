"""``wait_for_completion``: block on a run's streams until it ends.

No polling: the waiter follows the live stream (:func:`.subscribe.subscribe`),
printing output lines as they arrive when asked to, and returns the run's details
once a final status arrives.  A run that failed raises :class:`RunFailedError` with
its error, as Azure ML's ``wait_for_completion`` does.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO, cast

from runstream.connection import RedisClient
from runstream.consumer.reader import RecordReader
from runstream.consumer.subscribe import Update, subscribe
from runstream.errors import RunstreamError
from runstream.events import TERMINAL_STATUSES, OutputLogged
from runstream.keys import Keys

__all__ = ["RunFailedError", "final_status", "wait_for_completion"]


class RunFailedError(RunstreamError):
    """The run ended Failed; ``details`` is what ``get_details`` returns."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


async def wait_for_completion(
    client: RedisClient, keys: Keys, run_id: str, *, show_output: bool = False, out: TextIO | None = None
) -> dict[str, Any]:
    """Wait until the run is Completed, Failed or Canceled; return its details.

    Raises:
        RunFailedError: the run failed (the message holds its error).
    """
    reader = RecordReader(client, keys)
    status = await reader.status(run_id)
    if status not in TERMINAL_STATUSES or show_output:
        stream = out or sys.stdout
        async for item in subscribe(client, keys, run_id, start="beginning"):
            if show_output and isinstance(item, Update) and isinstance(item.event, OutputLogged):
                for line in item.event.lines:
                    stream.write(line if line.endswith("\n") else line + "\n")
                stream.flush()
    details = await reader.details(run_id)
    if details["status"] == "Failed":
        raise RunFailedError(f"run {run_id} failed: {details.get('error')}", details)
    return details


async def final_status(client: RedisClient, keys: Keys, run_id: str) -> str:
    """Block until the run's status is final, and return it.

    Wakes on each live-stream entry (XREAD BLOCK) and reads the status alone, without
    decoding the updates: cheap for a watcher that only cares how the run ends.
    """
    reader = RecordReader(client, keys)
    live = keys.live(run_id)
    newest = cast("list[tuple[bytes, Any]]", await client.xrevrange(live, count=1))
    last: bytes | str = newest[0][0] if newest else "0-0"
    while True:
        status = await reader.status(run_id)
        if status in TERMINAL_STATUSES:
            return str(status)
        reply = await client.xread({live: last}, count=1000, block=1000)
        for _, entries in cast("list[tuple[bytes, list[tuple[bytes, Any]]]]", reply or []):
            last = entries[-1][0]
