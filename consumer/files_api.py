"""REST handlers of a run's files: the list and downloads (uploads: :mod:`.uploads`).

A run file is whatever a training script (or a remote producer) stored, so it is served
as untrusted: as an attachment (only the raster image types the run page shows stay
inline), with ``X-Content-Type-Options: nosniff`` and a ``Content-Security-Policy``
that sandboxes it, so an uploaded HTML or SVG file opened in the browser runs in an
opaque origin, never in the app's (where it could read the API with the viewer's cookie).
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from runstream.artifacts import LocalArtifactStore
from runstream.consumer.replies import json_reply, require_run
from runstream.consumer.state import READER, STORE
from runstream.errors import InvalidNameError
from runstream.validation import check_file_name

__all__ = ["FILE_CSP", "INLINE_TYPES", "download_file", "file_headers", "file_name", "list_files", "store_path"]

#: Types served inline: the raster images the run page shows (no script runs in them).
#: SVG is not among them: it is a document that can hold script.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: The policy of every file response: nothing loads, nothing runs, and the document gets
#: an opaque origin of its own (``sandbox``), away from the app's cookies and API.
FILE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
_UNSAFE_IN_QUOTES = re.compile(r'[^\x20-\x7e]|["\\]')


def file_headers(name: str) -> dict[str, str]:
    """The headers a run file ``name`` is served with (type, disposition, nosniff, sandbox)."""
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    base = name.rsplit("/", 1)[-1]
    fallback = _UNSAFE_IN_QUOTES.sub("_", base)  # for clients that do not read filename*
    disposition = "inline" if content_type in INLINE_TYPES else "attachment"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CSP,
    }


async def list_files(request: web.Request) -> web.Response:
    reader, run_id = request.app[READER], request.match_info["run_id"]
    await require_run(reader, run_id)
    files = await reader.files(run_id)
    return json_reply(
        {"files": [{"name": n, "size": f.get("size"), "sha256": f.get("sha256")} for n, f in files.items()]}
    )


def file_name(request: web.Request) -> str:
    try:
        return check_file_name(request.match_info["name"])
    except (InvalidNameError, TypeError) as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None


async def download_file(request: web.Request) -> web.StreamResponse:
    run_id, name, store = request.match_info["run_id"], file_name(request), request.app[STORE]
    await require_run(request.app[READER], run_id)
    if isinstance(store, LocalArtifactStore):
        path = store_path(store, run_id, name)
        if not path.is_file():
            raise web.HTTPNotFound(reason=f"run {run_id} has no file {name!r}")
        return web.FileResponse(path, headers=file_headers(name))
    try:
        size = await asyncio.to_thread(store.size, run_id, name)
    except FileNotFoundError:
        raise web.HTTPNotFound(reason=f"run {run_id} has no file {name!r}") from None
    except InvalidNameError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    # Streamed from the object store as it sends it: a large file is never held whole.
    response = web.StreamResponse(headers=file_headers(name))
    response.content_length = size
    await response.prepare(request)
    async for chunk in store.chunks(run_id, name):
        await response.write(chunk)
    await response.write_eof()
    return response


def store_path(store: LocalArtifactStore, run_id: str, name: str) -> Path:
    """Where the store keeps the file; 400 for one that resolves outside the run's folder (a link)."""
    try:
        return store.path_of(run_id, name)
    except InvalidNameError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
