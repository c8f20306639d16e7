"""What every REST handler of the server replies with: JSON bodies, and 404 for an unknown run."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runstream.consumer.reader import RECORD_GRACE, RecordReader, wait_for_record
from runstream.consumer.updates import json_value

__all__ = ["json_reply", "require_run"]


def json_reply(data: Any, status: int = 200) -> web.Response:
    """``data`` as JSON; a NaN or infinity travels as "NaN", "Infinity", "-Infinity"."""
    return web.json_response(json_value(data), status=status)


async def require_run(reader: RecordReader, run_id: str) -> dict[str, str]:
    """The run's meta hash; 404 if there is no such run (one started a moment ago, whose
    record a running collector has not made yet, is waited for a few seconds)."""
    meta = await wait_for_record(reader, run_id, RECORD_GRACE)
    if not meta:
        raise web.HTTPNotFound(reason=f"no run {run_id!r}")
    return meta
