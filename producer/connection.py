"""The one factory for Redis clients, shared by the producer, collector and consumers.

Every part connects through :func:`connect` so the reply shapes are the same
everywhere: RESP2 is pinned (XREADGROUP answers differ under RESP3) and replies stay
bytes (payloads are binary msgpack).  ``redis://`` and ``rediss://`` URLs with a user
and password (Redis ACL) work as redis-py parses them.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["SOCKET_TIMEOUT", "connect", "mask_url"]

#: Seconds a command may wait on the socket; every blocking read uses a shorter BLOCK.
SOCKET_TIMEOUT: Final = 5.0
CONNECT_TIMEOUT: Final = 2.0
_QUERY_PASSWORD: Final = re.compile(r"((?:^|&)password=)[^&]*")


def connect(url: str, *, retries: int = 3, socket_timeout: float = SOCKET_TIMEOUT) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (RESP2, bytes replies, bounded timeouts).

    Transient failures (connection refused or reset, timeouts) are retried ``retries``
    times with exponential backoff; callers that keep their own backlog (the
    producer) pass a small number and retry on their own schedule.
    """
    return aioredis.Redis.from_url(
        url,
        protocol=2,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )


def mask_url(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***``, for logs and reprs.

    Both places redis-py reads a password from are masked: the user info and a
    ``password=`` query argument.  The rest of the URL is kept as written (IPv6
    brackets, case, even a port that does not parse: a repr must not raise).
    """
    if url is None:
        return None
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}:***@{hostport}" if at and colon else parts.netloc
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
