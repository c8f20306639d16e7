"""The web pages and their assets, and the Content-Security-Policy they run under.

Every asset comes from this server (no CDN): the pages and their scripts from
``static/``, plotly.js from the installed ``plotly`` package.  The pages hold no inline
script or style, so their policy (:func:`page_csp`) allows scripts, styles, images and
API calls from this origin only.  plotly.js needs two inline ``<style>`` elements, each
allowed by its hash rather than by ``'unsafe-inline'``: the one it creates empty and
fills through the CSSOM (which the policy does not govern), and maplibre's stylesheet,
which the bundle inserts as a fixed text when it loads (its hash is taken from the
installed bundle, so a plotly upgrade keeps it right).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import hashlib
import json
import re
from pathlib import Path

import plotly  # type: ignore[import-untyped]  # used only to find its plotly.min.js
import structlog
from aiohttp import web

from runstream.consumer.security import Handler

__all__ = ["PLOTLY_JS", "STATIC", "add_pages", "page_csp"]

_log = structlog.get_logger("runstream.server")
# Resolved: in an editable install the package is a tree of links to the source files.
STATIC = (Path(__file__).resolve().parent / "static").resolve()
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
#: A fixed stylesheet the bundle inserts as an inline ``<style>`` (maplibre's, in plotly.js 4).
_BUNDLED_STYLE = re.compile(r"""createElement\("style"\);[^;]{0,300}?\.textContent='((?:[^'\\]|\\.)*)'""")


def _js_string(body: str) -> str:
    """The text of a single-quoted JS string literal's ``body``, read as JSON reads one
    double-quoted (the same escapes, once ``\\'`` is a plain quote and ``"`` escaped)."""
    as_json = re.sub(r'\\.|"', lambda m: {"\\'": "'", '"': '\\"'}.get(m[0], m[0]), body)
    text: str = json.loads('"' + as_json + '"')
    return text


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def page_csp() -> str:
    """The pages' Content-Security-Policy: this origin only, no inline script, no framing."""
    bundled = _BUNDLED_STYLE.search(PLOTLY_JS.read_text(encoding="utf-8"))
    styles = [""]
    try:
        styles += [_js_string(bundled[1])] if bundled else []
    except ValueError:  # an escape JSON lacks: the style is refused, which only a map trace would miss
        _log.warning("plotly_style_not_hashed", hint="maplibre's inline style will be refused by the pages' CSP")
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' " + " ".join(_csp_hash(text) for text in styles),
            # data: the pages' empty icon (no /favicon.ico request); blob: Plotly's
            # "download plot as png" draws the chart through one.  No image runs script.
            "img-src 'self' data: blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def _page(name: str) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return page


@functools.cache
def _plotly_gzip() -> bytes:
    return gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=6)


async def plotly_js(request: web.Request) -> web.StreamResponse:
    """plotly.min.js (4.6 MB; 1.4 MB gzipped, compressed once), cached by browsers for a
    week and revalidated by the plotly version."""
    etag = f'"plotly-{plotly.__version__}"'
    headers = {
        "Content-Type": "application/javascript",
        "Cache-Control": "public, max-age=604800",
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body = await asyncio.to_thread(_plotly_gzip)
        return web.Response(body=body, headers=headers | {"Content-Encoding": "gzip"})
    return web.FileResponse(PLOTLY_JS, headers=headers)


def add_pages(router: web.UrlDispatcher) -> None:
    """The pages, plotly.js and the static assets."""
    router.add_get("/", _page("index.html"))
    router.add_get("/experiments/{name}", _page("experiment.html"))
    router.add_get("/runs/{run_id}", _page("run.html"))
    router.add_get("/compare", _page("compare.html"))
    router.add_get("/static/vendor/plotly.min.js", plotly_js)
    # Symlinks are followed (an editable install links each file); ".." is still refused.
    router.add_static("/static/", STATIC, follow_symlinks=True)
