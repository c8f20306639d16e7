"""What the server says of the pipeline's health, and what it checks of Redis at start.

Three routes, for three askers:

- ``/api/v1/health/live`` (no token): ``{"status": "up"}`` while the process serves
  requests, and nothing else: the liveness probe.
- ``/api/v1/health/ready`` (no token): 200 ``{"status": "ready"}`` when Redis answers,
  503 ``{"status": "unavailable"}`` when it does not, and nothing else: the readiness
  probe (a server without Redis answers every read with 503).
- ``/api/v1/health`` (behind the token): the whole picture: each collector's last
  report and whether it is alive (it reported within two lease TTLs), the ingest lag,
  Redis's memory against ``maxmemory``, its eviction policy and persistence, this
  server's SSE figures, and ``"status": "degraded"`` with the ``reasons`` whenever one
  of them is wrong.

At start (:func:`check_redis_at_start`) the server refuses a Redis whose
``maxmemory-policy`` is not ``noeviction`` and warns about one that persists nothing,
as the collector does (:func:`runstream.collector.checks.check_redis`); a Redis that
does not answer yet is checked by the health endpoint once it does.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any, Final, cast

import structlog
from aiohttp import web
from redis.exceptions import RedisClusterException, RedisError

from runstream.collector.checks import check_redis
from runstream.connection import RedisClient, mask_url
from runstream.consumer.state import HUB, READER, REDIS
from runstream.redis_settings import NO_EVICTION, RedisSettings, read_redis_settings

__all__ = [
    "LIVE_PATH",
    "MAX_LAG",
    "MEMORY_FULL",
    "READY_PATH",
    "assess",
    "check_redis_at_start",
    "health",
    "live",
    "ready",
]

_log = structlog.get_logger("runstream.server")
LIVE_PATH: Final = "/api/v1/health/live"
READY_PATH: Final = "/api/v1/health/ready"
#: The lease TTL of a collector whose report does not say (the collector's default).
DEFAULT_LEASE_TTL: Final = 5.0
#: Used memory over this fraction of ``maxmemory``: Redis is about to refuse writes.
MEMORY_FULL: Final = 0.9
#: Ingest entries not yet applied, summed over the live collectors, that mean they are falling behind.
MAX_LAG: Final = 100_000
#: Seconds the readiness probe waits for Redis's PING.
_PING_BOUND: Final = 2.0


def _alive(report: dict[str, Any], now: float) -> bool:
    """Whether a collector's report is recent: published within two of its lease TTLs."""
    ttl = float(report.get("lease_ttl") or DEFAULT_LEASE_TTL)
    return now - float(report.get("updated_at") or 0) <= 2 * ttl


def _collectors(raw: dict[bytes, bytes], now: float) -> dict[str, dict[str, Any]]:
    """The collectors' reports by reader, each with ``alive``; what is not a report is left out."""
    reports = {}
    for reader, value in raw.items():
        try:
            report = json.loads(value)
        except ValueError:
            continue
        if isinstance(report, dict):
            reports[reader.decode(errors="replace")] = report | {"alive": _alive(report, now)}
    return reports


def _lag(collectors: dict[str, dict[str, Any]]) -> int:
    """Ingest entries not yet applied, over the shards of the live collectors."""
    return sum(int(n) for r in collectors.values() if r["alive"] for n in (r.get("lag") or {}).values())


def assess(collectors: dict[str, dict[str, Any]], redis: RedisSettings) -> list[str]:
    """What is wrong with the pipeline, as the health endpoint lists it (empty: nothing)."""
    reasons = []
    alive = {reader: report for reader, report in collectors.items() if report["alive"]}
    if not alive:
        reasons.append("no collector is alive: nothing logged is applied to the records")
    for reader, report in alive.items():
        if report.get("outage"):
            reasons.append(f"collector {reader} is in an outage: {report['outage'].get('cause', 'unknown')}")
    lag = _lag(collectors)
    if lag > MAX_LAG:
        reasons.append(f"the collectors lag {lag} ingest entries behind")
    if redis.evicting:
        reasons.append(f"Redis has maxmemory-policy {redis.maxmemory_policy}: it evicts records when full")
    if redis.memory_fraction is not None and redis.memory_fraction > MEMORY_FULL:
        reasons.append(f"Redis uses {redis.memory_fraction:.0%} of its maxmemory: it refuses writes when full")
    if redis.persistent is False:
        reasons.append("Redis persists nothing (no AOF, no RDB save points): a restart loses every record")
    return reasons


async def health(request: web.Request) -> web.Response:
    """The whole picture (see the module's docstring); 503 when Redis does not answer."""
    client = request.app[REDIS]
    raw = cast("dict[bytes, bytes]", await client.hgetall(request.app[READER].keys.collectors()))
    collectors, redis = _collectors(raw, time.time()), await read_redis_settings(client)
    reasons, hub = assess(collectors, redis), request.app[HUB]
    return web.json_response(
        {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "collectors": collectors,
            "lag": _lag(collectors),
            "redis": asdict(redis) | {"memory_fraction": redis.memory_fraction, "persistent": redis.persistent},
            "sse": {
                "runs": len(hub.feeds),
                "clients": sum(len(f.clients) for f in hub.feeds.values()),
                "dropped": hub.dropped,
            },
        }
    )


async def live(request: web.Request) -> web.Response:
    """Liveness: the process serves requests.  No token needed; nothing else said."""
    return web.json_response({"status": "up"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: Redis answers (200), or not (503).  No token needed; nothing else said."""
    try:
        async with asyncio.timeout(_PING_BOUND):  # within the probes' timeouts (deploy/: 3 s and more)
            await request.app[REDIS].ping()
    except (RedisError, RedisClusterException, OSError, TimeoutError):
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ready"})


async def check_redis_at_start(client: RedisClient, url: str) -> None:
    """Refuse an evicting Redis, warn about one without persistence; a Redis that does not
    answer (yet) is let be: the server starts and answers 503 until it does.

    Raises:
        ConfigError: Redis's ``maxmemory-policy`` is not ``noeviction``.
    """
    try:
        await check_redis(client, url, _log)
    except (RedisError, RedisClusterException) as exc:
        _log.warning(
            "redis_settings_unchecked",
            redis=mask_url(url),
            error=f"{type(exc).__name__}: {exc}",
            hint=f"/api/v1/health shows maxmemory-policy (it must be {NO_EVICTION}) and persistence once it answers",
        )
