"""REST handlers under ``/api/v1/``: experiments, runs, metrics, output, cancel; files: :mod:`.files_api`.

Each handler reads the run records through :class:`~.reader.RecordReader`; JSON
never carries a bare NaN or infinity (they travel as "NaN", "Infinity", "-Infinity").
The route table :data:`ROUTES` is also the source of the OpenAPI document, so the
two cannot drift apart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from runstream import Experiment, Run, Workspace
from runstream.consumer.downsample import downsample_indices, series_arrays
from runstream.consumer.files_api import download_file, list_files
from runstream.consumer.reader import RecordReader, time_or_none, unpack_values
from runstream.consumer.replies import json_reply, require_run
from runstream.consumer.search import search_runs
from runstream.consumer.search_filter import FilterError
from runstream.consumer.state import READER, SERIES_CACHE, SETTINGS
from runstream.consumer.storage_api import (
    archive_experiment,
    archive_run,
    delete_experiment,
    delete_run,
    restore_run,
    run_storage,
)
from runstream.consumer.uploads import upload_file
from runstream.errors import RunstreamError
from runstream.events import TERMINAL_STATUSES

__all__ = ["MAX_POINTS_CAP", "MAX_POINTS_DEFAULT", "OUTPUT_LINES_CAP", "OUTPUT_LINES_DEFAULT", "ROUTES", "Route"]

MAX_POINTS_DEFAULT = 2000
#: The most points one metric read may ask for (``max_points``; above it: 400): a chart
#: shows a few thousand, and every point costs JSON built on the event loop.
MAX_POINTS_CAP = 100_000
OUTPUT_LINES_DEFAULT = 200
#: The most output lines one read may ask for (``limit``; above it: 400).
OUTPUT_LINES_CAP = 10_000
#: The most runs one page of the runs list holds (``limit``).
RUNS_LIMIT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Route:
    """One API route: what aiohttp serves and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: Any
    summary: str
    params: tuple[str, ...] = ()


async def list_experiments(request: web.Request) -> web.Response:
    reader = request.app[READER]
    names = await reader.experiments()
    counts = await asyncio.gather(*(reader.run_count(n) for n in names))
    return json_reply({"experiments": [{"name": n, "runs": c} for n, c in zip(names, counts, strict=True)]})


async def list_runs(request: web.Request) -> web.Response:
    """Runs that match the query (``filter`` in the search syntax, ``status``, ``tag=k[=v]``),
    sorted (``order_by``, newest first by default) and paged (``limit``, ``offset``)."""
    reader, query = request.app[READER], request.query
    clauses = [query["filter"]] if query.get("filter") else []
    if "status" in query:
        clauses.append(f"attributes.status = {_quoted(query['status'])}")
    if "tag" in query:
        key, _, value = query["tag"].partition("=")
        clauses.append(f"tags.`{key}` = {_quoted(value)}" if value else f"tags.`{key}` IS NOT NULL")
    limit = _count_param(request, "limit", RUNS_LIMIT_CAP, RUNS_LIMIT_CAP) if "limit" in query else None
    offset = _int_param(request, "offset", 0) or 0
    if offset < 0:
        raise web.HTTPBadRequest(reason=f"offset must be 0 or more, not {offset}")
    try:
        found = await search_runs(
            reader,
            query.get("experiment"),
            " and ".join(clauses),
            query.getall("order_by", []),
            limit,
            offset,
        )
    except FilterError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    return json_reply({"total": found.total, "runs": [_listed(s) for s in found.runs]})


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _listed(summary: dict[str, Any]) -> dict[str, Any]:
    """A run as the runs list shows it, from its summary."""
    return {
        "id": summary["run_id"],
        "experiment": summary["experiment"],
        "display_name": summary["name"],
        "status": summary["status"],
        "parent_id": summary["parent_id"],
        "created_at": summary["created"],
        "started_at": summary["started"],
        "ended_at": summary["ended"],
        "duration": summary["duration"],
        "tags": summary["tags"],
        "params": summary["params"],
        "metrics": {name: stats["last"] for name, stats in summary["metrics"].items()},
        "metric_stats": summary["metrics"],
    }


async def run_details(request: web.Request) -> web.Response:
    reader, run_id = request.app[READER], request.match_info["run_id"]
    meta = await require_run(reader, run_id)
    properties, tags, files, children, (index, live_id) = await asyncio.gather(
        reader.properties(run_id),
        reader.tags(run_id),
        reader.files(run_id),
        reader.children(run_id),
        reader.metric_index_at(run_id),
    )
    return json_reply(
        {
            "id": run_id,
            "experiment": meta.get("experiment"),
            "display_name": meta.get("display_name"),
            "status": meta.get("status"),
            "parent_id": meta.get("parent_id"),
            "created_at": time_or_none(meta.get("created_at")),
            "started_at": time_or_none(meta.get("started_at")),
            "ended_at": time_or_none(meta.get("ended_at")),
            "error": meta.get("error"),
            "properties": properties,
            "tags": tags,
            "files": [{"name": n, "size": f.get("size"), "sha256": f.get("sha256")} for n, f in files.items()],
            "children": children,
            "metrics": index,
            "live_id": live_id,
        }
    )


async def run_metrics(request: web.Request) -> web.Response:
    reader, run_id = request.app[READER], request.match_info["run_id"]
    await require_run(reader, run_id)
    return json_reply({"metrics": await reader.metric_index(run_id)})


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{name} must be an integer, not {raw!r}") from None


def _count_param(request: web.Request, name: str, default: int, most: int) -> int:
    """A count from the query (``default`` when absent): 400 unless it is an integer from 1 to ``most``."""
    value = _int_param(request, name, default)
    if value is None or not 1 <= value <= most:
        raise web.HTTPBadRequest(reason=f"{name} must be an integer from 1 to {most}, not {request.query[name]!r}")
    return value


async def metric_series(request: web.Request) -> web.Response:
    reader, run_id, name = request.app[READER], request.match_info["run_id"], request.match_info["name"]
    await require_run(reader, run_id)
    index = await reader.metric_index(run_id)
    if name not in index:
        raise web.HTTPNotFound(reason=f"run {run_id} has no metric {name!r}")
    kind = index[name]["kind"]
    if kind not in ("series", "list"):
        return json_reply({"name": name, "kind": kind, **(await _structured(reader, run_id, name, kind))})
    max_points = _count_param(request, "max_points", MAX_POINTS_DEFAULT, MAX_POINTS_CAP)
    start, end = _int_param(request, "start", None), _int_param(request, "end", None)
    count = int(index[name]["count"])
    cache = request.app[SERIES_CACHE]
    arrays = cache.get(run_id, name, count)
    parts: list[bytes] = []
    if arrays is None:
        if (archived := await reader.archived(run_id)) is not None:  # decoded already: no packed form needed
            arrays = await archived.arrays(name)
            parts = await archived.packed_parts(name) if arrays is None else []
        else:
            parts = await reader.packed_parts(run_id, name)
            arrays = series_arrays(parts)
        if arrays is not None and len(arrays[0]) == count:  # as counted: cache it under that count
            cache.put(run_id, name, count, arrays)
    if arrays is None:  # text values: the newest points, as they are
        texts = unpack_values(b"".join(parts))
        return json_reply(
            {
                "name": name,
                "kind": kind,
                "count": len(texts),
                "downsampled": len(texts) > max_points,
                "steps": None,
                "values": texts[-max_points:],
            }
        )
    steps, numbers, value_type = arrays
    if start is not None or end is not None:
        mask = np.ones(len(steps), dtype=bool)
        if start is not None:
            mask &= steps >= start
        if end is not None:
            mask &= steps <= end
        steps, numbers = steps[mask], numbers[mask]
    keep = downsample_indices(steps, numbers, max_points)
    chosen = numbers[keep]
    values: list[Any] = (
        chosen.astype(np.int64).tolist()
        if value_type == "int"
        else (chosen.astype(bool).tolist() if value_type == "bool" else chosen.tolist())
    )
    return json_reply(
        {
            "name": name,
            "kind": kind,
            "count": len(steps),
            "downsampled": len(keep) < len(steps),
            "steps": steps[keep].tolist(),
            "values": values,
        }
    )


async def _structured(reader: RecordReader, run_id: str, name: str, kind: str) -> dict[str, Any]:
    value = (await reader.metrics(run_id, name))[name]
    if kind == "image":
        return {"files": value if isinstance(value, list) else [value]}
    return {"columns": value}


async def run_output(request: web.Request) -> web.Response:
    reader, run_id = request.app[READER], request.match_info["run_id"]
    await require_run(reader, run_id)
    limit = _count_param(request, "limit", OUTPUT_LINES_DEFAULT, OUTPUT_LINES_CAP)
    return json_reply({"lines": await reader.output(run_id, limit)})


async def cancel_run(request: web.Request) -> web.Response:
    reader, run_id = request.app[READER], request.match_info["run_id"]
    meta = await require_run(reader, run_id)
    if meta.get("status") in TERMINAL_STATUSES:
        raise web.HTTPConflict(reason=f"run {run_id} has ended {meta['status']}: there is nothing to cancel")
    workspace = Workspace.from_settings(request.app[SETTINGS].workspace)
    run = Run(Experiment(workspace, meta["experiment"]), run_id)
    try:
        await asyncio.to_thread(run.cancel)
    except RunstreamError:  # the run ended otherwise while the cancel was on its way (the SDK read it back)
        raise web.HTTPConflict(
            reason=f"run {run_id} ended {run.status} before the cancel arrived: it stays {run.status}"
        ) from None
    return json_reply({"id": run_id, "status": "Canceled"}, status=202)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/experiments", list_experiments, "Experiments with their run counts"),
    Route(
        "GET",
        "/api/v1/runs",
        list_runs,
        "Runs that match a filter, sorted and paged (newest first by default)",
        ("experiment", "status", "tag", "filter", "order_by", "limit", "offset"),
    ),
    Route("GET", "/api/v1/runs/{run_id}", run_details, "A run's details"),
    Route("GET", "/api/v1/runs/{run_id}/metrics", run_metrics, "A run's metrics: kind and count"),
    Route(
        "GET",
        "/api/v1/runs/{run_id}/metrics/{name}",
        metric_series,
        "One metric, downsampled",
        ("max_points", "start", "end"),
    ),
    Route("GET", "/api/v1/runs/{run_id}/files", list_files, "A run's files"),
    Route("GET", "/api/v1/runs/{run_id}/files/{name:.+}", download_file, "Download a file"),
    Route("PUT", "/api/v1/runs/{run_id}/files/{name:.+}", upload_file, "Upload a file (remote producers)"),
    Route("GET", "/api/v1/runs/{run_id}/output", run_output, "The newest output lines", ("limit",)),
    Route("POST", "/api/v1/runs/{run_id}/cancel", cancel_run, "Cancel a run"),
    Route("GET", "/api/v1/runs/{run_id}/storage", run_storage, "Where a run's record is: Redis or the archive"),
    Route("DELETE", "/api/v1/runs/{run_id}", delete_run, "Delete an ended run: record, archive, files, children"),
    Route("POST", "/api/v1/runs/{run_id}/archive", archive_run, "Archive an ended run now"),
    Route("POST", "/api/v1/runs/{run_id}/restore", restore_run, "Put an archived run's record back into Redis"),
    Route("DELETE", "/api/v1/experiments/{experiment}", delete_experiment, "Delete an experiment and its runs"),
    Route("POST", "/api/v1/experiments/{experiment}/archive", archive_experiment, "Archive an experiment's ended runs"),
)
