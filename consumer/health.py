"""``/api/v1/health``: what the server knows of the pipeline's state.

The collectors' published counters (``keys.collectors()``) and this server's SSE figures.
"""

from __future__ import annotations

from typing import cast

from aiohttp import web

from runstream.consumer.state import HUB, READER, REDIS

__all__ = ["health"]


async def health(request: web.Request) -> web.Response:
    """The collectors' published counters, and this server's SSE figures."""
    reports = cast("dict[bytes, bytes]", await request.app[REDIS].hgetall(request.app[READER].keys.collectors()))
    hub = request.app[HUB]
    return web.json_response(
        {
            "status": "ok",
            "collectors": {k.decode(): v.decode() for k, v in reports.items()},
            "sse": {
                "runs": len(hub.feeds),
                "clients": sum(len(f.clients) for f in hub.feeds.values()),
                "dropped": hub.dropped,
            },
        }
    )
