"""``PUT /api/v1/runs/{run_id}/files/{name}``: a file upload, streamed to disk.

The body is never held whole: it is read chunk by chunk from the connection and written,
a megabyte at a time in a worker thread, through the store's ``open_upload`` (a
temporary file, renamed into place once complete, or put whole into an object store:
either way a reader sees all of it or nothing).  Memory per upload is therefore bounded
(about a megabyte and aiohttp's read buffer), and so are uploads at once: past ``max_uploads`` a request gets 503 with
``Retry-After`` at once, before its body is read.  A body over ``max_upload`` bytes
gets 413 (at once when its Content-Length says so, else as soon as it passes), one that
stalls ``upload_stall`` seconds 408; either stores nothing.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

from aiohttp import web

from runstream.artifacts import LocalArtifactStore, StoredFile, Upload
from runstream.consumer.files_api import file_name, store_path
from runstream.consumer.replies import json_reply, require_run
from runstream.consumer.settings import ServerSettings
from runstream.consumer.state import READER, SETTINGS, STORE, UPLOADS

__all__ = ["WRITE_SIZE", "upload_file"]

#: Bytes gathered from the connection before one write to the file (one thread hop).
WRITE_SIZE = 1024 * 1024


async def upload_file(request: web.Request) -> web.Response:
    run_id, name = request.match_info["run_id"], file_name(request)
    await require_run(request.app[READER], run_id)
    store, settings, uploads = request.app[STORE], request.app[SETTINGS], request.app[UPLOADS]
    if isinstance(store, LocalArtifactStore):
        _check_writable(store_path(store, run_id, name), name)
    if request.content_length is not None and request.content_length > settings.max_upload:
        raise web.HTTPRequestEntityTooLarge(max_size=settings.max_upload, actual_size=request.content_length)
    if uploads.locked():
        raise web.HTTPServiceUnavailable(
            reason=f"{settings.max_uploads} uploads are in progress, as many as this server takes: retry later",
            headers={"Retry-After": "1"},
        )
    async with uploads:
        try:
            upload = await asyncio.to_thread(store.open_upload, run_id, name)
        except OSError as exc:
            raise _refusal(exc, name) from exc
        stored = await _receive(request, upload, settings)
    return json_reply({"name": stored.name, "size": stored.size, "sha256": stored.sha256}, status=201)


async def _receive(request: web.Request, upload: Upload, settings: ServerSettings) -> StoredFile:
    """The request's body written to ``upload``, then committed; aborted on any failure."""
    try:
        pending = bytearray()
        while chunk := await _next_chunk(request, settings.upload_stall):
            if upload.size + len(pending) + len(chunk) > settings.max_upload:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=settings.max_upload, actual_size=upload.size + len(pending) + len(chunk)
                )
            pending += chunk
            if len(pending) >= WRITE_SIZE:
                await asyncio.to_thread(upload.write, bytes(pending))
                pending.clear()
        await asyncio.to_thread(upload.write, bytes(pending))
        return await asyncio.to_thread(upload.commit)
    except OSError as exc:
        raise _refusal(exc, upload.name) from exc
    finally:
        await asyncio.to_thread(upload.abort)  # a no-op once committed


async def _next_chunk(request: web.Request, stall: float) -> bytes:
    """What the connection has of the body (b"" at its end), waiting ``stall`` seconds at most."""
    try:
        async with asyncio.timeout(stall):
            return await request.content.readany()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason=f"the upload sent nothing for {stall:g} s") from None


def _refusal(exc: OSError, name: str) -> web.HTTPException | OSError:
    """The reply to a file that could not be written: the caller's mistake (400), a full
    disk (507), or, for anything else, the error itself (a 500, logged with its traceback)."""
    if isinstance(exc, IsADirectoryError | NotADirectoryError | FileExistsError):
        return web.HTTPBadRequest(reason=f"{name!r} cannot be a file: a folder or a file of the run is in the way")
    if exc.errno == errno.ENOSPC:
        return web.HTTPInsufficientStorage(reason="the server's disk is full")
    return exc


def _check_writable(path: Path, name: str) -> None:
    """400 when ``name`` cannot be a file: it is a folder of the run's files, or lies inside one of its files."""
    if path.is_dir():
        raise web.HTTPBadRequest(reason=f"{name!r} is a folder of the run's files, not a file")
    for parent in path.parents:
        if parent.is_file():
            raise web.HTTPBadRequest(reason=f"{name!r} lies inside a file of the run, not a folder")
        if parent.is_dir():
            return
