"""``runstream serve``: the aiohttp server (REST, SSE, web pages).

``create_app(settings)`` builds the application: one Redis client and one
:class:`~.sse.FeedHub` per app (``cleanup_ctx`` owns them), the REST routes of
:mod:`.api` and :mod:`.files_api`, the SSE endpoint, the OpenAPI document built from
the same route table, the pages and their assets (:mod:`.pages`), the health endpoint
(:mod:`.health`), behind the middlewares of :mod:`.security` (tokens, cross-site
requests, path ids); errors are JSON ``{"error": {"status", "message"}}``.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator

import click
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from redis.exceptions import RedisClusterException, RedisError

from runstream.cli_errors import explained
from runstream.config import Settings
from runstream.connection import SOCKET_TIMEOUT, RedisClient, connect, mask_url, seed_nodes, single_node
from runstream.consumer.api import ROUTES
from runstream.consumer.connections import CONNECTIONS, Connections, LimitedSite
from runstream.consumer.downsample import warm_up
from runstream.consumer.health import LIVE_PATH, READY_PATH, check_redis_at_start, health, live, ready
from runstream.consumer.openapi import openapi_document
from runstream.consumer.pages import add_pages, page_csp
from runstream.consumer.reader import RecordReader
from runstream.consumer.replies import require_run
from runstream.consumer.security import (
    Handler,
    Middleware,
    check_path_ids,
    make_auth,
    refuse_cross_site,
    security_headers,
)
from runstream.consumer.series_cache import SeriesCache
from runstream.consumer.settings import IDLE_TIMEOUT, MAX_CONNECTIONS, ServerSettings, load_tokens
from runstream.consumer.sse import FeedHub
from runstream.consumer.state import HUB, READER, REDIS, SERIES_CACHE, SETTINGS, STORE, UPLOADS
from runstream.keys import Keys
from runstream.logconfig import configure_logging
from runstream.object_artifacts import artifact_store

__all__ = ["ServerSettings", "create_app", "serve", "serve_command"]

_log = structlog.get_logger("runstream.server")
_EVENT_ID = re.compile(r"\d+(-\d+)?(/\d+)?")  # a stream id, or "<stream id>/<k>" (see sse.Message)
#: Redis connections of one server; a request waits (up to SOCKET_TIMEOUT) for a free one.
REDIS_CONNECTIONS = 64
#: Bytes of a request body read whole (no route reads one now: uploads stream).
BODY_READ_LIMIT = 1024 * 1024
#: Connections the kernel queues before they are accepted.
BACKLOG = 1024
#: Open SSE responses, closed on shutdown (a set: aiohttp's AppKey cannot hold a WeakSet type).
_STREAMS: web.AppKey[set[EventSourceResponse]] = web.AppKey("streams")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API errors as JSON a client can act on."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("WWW-Authenticate", "Allow", "Retry-After")}
        return web.json_response(
            {"error": {"status": exc.status, "message": exc.reason}}, status=exc.status, headers=headers
        )
    except (RedisError, RedisClusterException) as exc:  # Redis down, or refusing us: the client may retry later
        _log.warning("redis_unavailable", path=request.path, error=f"{type(exc).__name__}: {exc}")
        message = f"the workspace's Redis is unavailable ({type(exc).__name__}); try again later"
        return web.json_response({"error": {"status": 503, "message": message}}, status=503)


async def run_events(request: web.Request) -> web.StreamResponse:
    """SSE: the run's updates; ``id:`` is the stream id, so Last-Event-ID resumes without gaps."""
    run_id = request.match_info["run_id"]
    reader = request.app[READER]
    await require_run(reader, run_id)  # a run started a moment ago is waited for
    start = request.headers.get("Last-Event-ID") or request.query.get("from") or "$"
    if start != "$" and not _EVENT_ID.fullmatch(start):
        raise web.HTTPBadRequest(reason=f"not a live-stream id: {start[:80]!r}")
    async with sse_response(request) as stream:
        request.app[_STREAMS].add(stream)
        try:
            if request.transport is not None:  # None: the client is already gone
                await request.app[HUB].stream(run_id, start, stream, request.transport)
        finally:
            request.app[_STREAMS].discard(stream)
    return stream


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


_REQUESTS: web.AppKey[Counter[tuple[str, int]]] = web.AppKey("requests")


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests by method and status, for /metrics."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        request.app[_REQUESTS][(request.method, exc.status)] += 1
        raise
    request.app[_REQUESTS][(request.method, response.status)] += 1
    return response


async def prometheus(request: web.Request) -> web.Response:
    """Prometheus text exposition: requests, SSE runs and clients, slow clients dropped."""
    hub = request.app[HUB]
    lines = [
        "# HELP runstream_http_requests_total Requests served, by method and status.",
        "# TYPE runstream_http_requests_total counter",
        *(
            f'runstream_http_requests_total{{method="{method}",status="{status}"}} {count}'
            for (method, status), count in sorted(request.app[_REQUESTS].items())
        ),
        "# HELP runstream_sse_runs Runs with a live feed in this server.",
        "# TYPE runstream_sse_runs gauge",
        f"runstream_sse_runs {len(hub.feeds)}",
        "# HELP runstream_sse_clients Open SSE connections.",
        "# TYPE runstream_sse_clients gauge",
        f"runstream_sse_clients {sum(len(f.clients) for f in hub.feeds.values())}",
        "# HELP runstream_sse_dropped_total SSE clients dropped for falling too far behind.",
        "# TYPE runstream_sse_dropped_total counter",
        f"runstream_sse_dropped_total {hub.dropped}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def create_app(settings: ServerSettings) -> web.Application:
    """The server's application for ``settings`` (run it with :func:`serve`, or an AppRunner and a site)."""
    connections = Connections(settings.max_connections, settings.idle_timeout)
    middlewares: list[Middleware] = [
        connections.middleware,
        count_requests,
        errors_as_json,
        refuse_cross_site,
        make_auth(settings.tokens, settings.workspace.workspace, public=frozenset({LIVE_PATH, READY_PATH})),
        check_path_ids,
    ]
    # client_max_size bounds a body read whole; none is (uploads stream, see .uploads).
    app = web.Application(middlewares=middlewares, client_max_size=BODY_READ_LIMIT)  # type: ignore[arg-type]  # aiohttp's Middleware protocol vs a plain callable
    app[SETTINGS] = settings
    app[CONNECTIONS] = connections
    app[UPLOADS] = asyncio.Semaphore(settings.max_uploads)
    app[_STREAMS] = set()
    app[SERIES_CACHE] = SeriesCache()
    app[_REQUESTS] = Counter()
    app[STORE] = artifact_store(settings.workspace)
    app.cleanup_ctx.append(_redis_context)
    app.on_shutdown.append(_close_streams)
    app.on_response_prepare.append(security_headers(page_csp()))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get("/api/v1/runs/{run_id}/events", run_events)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/health", health)
    app.router.add_get(LIVE_PATH, live)
    app.router.add_get(READY_PATH, ready)
    app.router.add_get("/metrics", prometheus)
    add_pages(app.router)
    return app


async def _server_client(url: str) -> RedisClient:
    """``connect``'s client with a pool where requests wait for a free connection: redis-py's
    default pool raises "Too many connections" past 100 concurrent commands (500 SSE clients).
    A cluster's client keeps a pool per node, sized by ``connect`` for the same load.

    A server starts even when Redis does not answer (or refuses it): it answers 503 until
    Redis does.  It then cannot ask a one-node URL whether it names a cluster, and takes it
    for one server; a seed-list URL always means a cluster.
    """
    try:
        client = await connect(url)
    except (RedisError, RedisClusterException) as exc:
        if seed_nodes(url) is not None:
            raise
        _log.warning(
            "redis_unreachable_at_start",
            redis=mask_url(url),
            error=f"{type(exc).__name__}: {exc}",
            hint="taken for one server; for a cluster, name seed nodes or restart once it answers",
        )
        client = single_node(url)
    if not isinstance(client, aioredis.Redis):
        return client  # a cluster's
    base = client.connection_pool  # its options; the probe's one connection is let go with it
    pool = aioredis.BlockingConnectionPool(
        connection_class=base.connection_class,
        max_connections=REDIS_CONNECTIONS,
        timeout=SOCKET_TIMEOUT,
        **base.connection_kwargs,
    )
    await client.aclose()
    return aioredis.Redis.from_pool(pool)


async def _redis_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].workspace
    keys = Keys(settings.workspace, settings.key_prefix, settings.shards)
    async with await _server_client(settings.redis_url) as client:
        app[REDIS] = client
        app[READER] = RecordReader(client, keys)
        app[HUB] = FeedHub(client, keys, app[SETTINGS].client_buffer)
        await check_redis_at_start(client, settings.redis_url)
        warm_up()
        _log.info("server_ready", workspace=settings.workspace)
        yield
        await app[HUB].close()


async def _close_streams(app: web.Application) -> None:
    streams: set[EventSourceResponse] = app[_STREAMS]
    for stream in list(streams):
        stream.stop_streaming()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Bearer tokens, one a line: WORKSPACE:TOKEN, or TOKEN for any workspace.",
)
@click.option("--json/--console", "json_logs", default=None, help="Log format (default: JSON unless on a terminal).")
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=MAX_CONNECTIONS,
    show_default=True,
    help="Connections open at once; past it the longest idle one is closed, or the new one gets 503.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.1),
    default=IDLE_TIMEOUT,
    show_default=True,
    help="Seconds a connection may stay without a request in progress (slow headers included).",
)
def serve_command(  # one parameter per option
    host: str, port: int, token_file: str | None, json_logs: bool | None, max_connections: int, idle_timeout: float
) -> None:
    """Serve the REST API, live updates and the web pages."""
    configure_logging(json=json_logs)
    with explained():  # no workspace configured, a malformed token: one line, exit 1
        settings = ServerSettings(
            workspace=Settings.from_config(),
            host=host,
            port=port,
            tokens=load_tokens(None, token_file),
            max_connections=max_connections,
            idle_timeout=idle_timeout,
        )
    with explained(settings.workspace.redis_url, who="this server"):  # an evicting Redis: one line, exit 1
        asyncio.run(serve(settings))


async def serve(settings: ServerSettings) -> None:
    """Serve ``settings``'s application until SIGINT or SIGTERM, its connections bounded
    (:class:`~.connections.LimitedSite`; aiohttp's keep-alive timeout is ``idle_timeout``)."""
    runner = web.AppRunner(create_app(settings), handle_signals=False, keepalive_timeout=settings.idle_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await LimitedSite(runner, settings.host, settings.port, backlog=BACKLOG).start()
        await stop.wait()
    finally:
        await runner.cleanup()
