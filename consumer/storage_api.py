"""REST handlers that move or remove runs: archive, restore, delete (DESIGN §7).

Like every route they need the server's token when it has any; like every route
that changes something, a request carrying only the token cookie must come from the
page's own origin (:mod:`.security`).  A run that has not ended is 409: cancel it
first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import structlog
from aiohttp import web

from runstream.archive.archiver import Archived
from runstream.archive.lifecycle import Lifecycle, NotEndedError
from runstream.archive.store import open_store
from runstream.consumer.replies import json_reply, require_run
from runstream.consumer.state import READER, SETTINGS, STORE

__all__ = ["archive_experiment", "archive_run", "delete_experiment", "delete_run", "restore_run", "run_storage"]

_log = structlog.get_logger("runstream.server")


def _lifecycle(request: web.Request) -> Lifecycle:
    reader, settings = request.app[READER], request.app[SETTINGS].workspace
    store = open_store(settings.archive_url, settings.data_dir)
    return Lifecycle(reader.client, reader.keys, store, request.app[STORE], _log)


@contextmanager
def _ended_only() -> Iterator[None]:
    """A run that has not ended, met inside, is the client's conflict: 409, saying which."""
    try:
        yield
    except NotEndedError as exc:
        raise web.HTTPConflict(reason=str(exc)) from None


async def _require_experiment(request: web.Request) -> str:
    name = request.match_info["experiment"]
    if name not in await request.app[READER].experiments():
        raise web.HTTPNotFound(reason=f"no experiment {name!r}")
    return name


async def run_storage(request: web.Request) -> web.Response:
    """Where the run's record is: Redis, or the archive (since when).  Apart from the run's
    details, which read the same either way (what the page's Archive / Restore offers)."""
    reader, run_id = request.app[READER], request.match_info["run_id"]
    await require_run(reader, run_id)
    store, archived_at = cast(
        "list[bytes | None]", await reader.client.hmget(reader.keys.meta(run_id), ["archive", "archived_at"])
    )
    return json_reply(
        {
            "id": run_id,
            "archived": store is not None,
            "archived_at": float(archived_at) if archived_at else None,
        }
    )


async def delete_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    await require_run(request.app[READER], run_id)
    with _ended_only():
        deleted = await _lifecycle(request).delete_run(run_id)
    return json_reply({"deleted": deleted})


async def archive_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    await require_run(request.app[READER], run_id)
    with _ended_only():
        result = await _lifecycle(request).archive_run(run_id)
    return json_reply({"id": run_id, "archived": isinstance(result, Archived) or result == "already"})


async def restore_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    await require_run(request.app[READER], run_id)
    restored = await _lifecycle(request).restore_run(run_id)
    return json_reply({"id": run_id, "restored": restored})


async def delete_experiment(request: web.Request) -> web.Response:
    name = await _require_experiment(request)
    with _ended_only():
        deleted = await _lifecycle(request).delete_experiment(name)
    return json_reply({"experiment": name, "deleted": deleted})


async def archive_experiment(request: web.Request) -> web.Response:
    name = await _require_experiment(request)
    life, archived = _lifecycle(request), []
    for run_id in await life.runs_of(name):
        try:
            if isinstance(await life.archive_run(run_id), Archived):
                archived.append(run_id)
        except NotEndedError:
            continue  # archived when it is due
    return json_reply({"experiment": name, "archived": archived})
