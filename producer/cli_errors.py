"""What a ``runstream`` command says when it cannot do its work: one line, and a non-zero exit.

Every command (``runstream collector`` and the reading ones, ``runs``, ``show``,
``tail``, ``wait``, ``cancel``, ``submit``) runs its work inside :func:`explained`,
which turns what a person can mend (no workspace configured, a Redis out of reach or
refusing the user) into a :class:`click.ClickException`: click
prints ``Error: <one line>`` on stderr and exits with the exception's code, instead
of a traceback.  What no line can explain (a bug) still ends in a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import click
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream.connection import mask_url
from runstream.errors import RunstreamError

__all__ = ["EXIT_USAGE", "explain_redis_error", "explained"]

#: Exit code of a command given arguments it cannot use (click's own for usage errors).
EXIT_USAGE: Final = 2
#: redis-py's message for a connection that failed: "Error 111 connecting to host:port. Reason."
_CONNECT_FAILED: Final = re.compile(r"Error (-?\d+) connecting to \S+\.\s+(.*?)\.?$")


def explain_redis_error(exc: RedisError, redis_url: str | None, who: str = "this command") -> str:
    """One line saying what went wrong with the Redis at ``redis_url`` and what to do.

    The error's own type and text close the line (they name nothing secret: the URL is
    shown without its password).
    """
    where, detail = mask_url(redis_url) or "the configured URL", f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AuthenticationError | NoPermissionError):
        return f"Redis at {where} refuses {who}: {detail} (check the user and password in the URL, and the user's ACL)"
    if isinstance(exc, BusyLoadingError):
        return f"Redis at {where} is loading its data set: try again in a moment ({detail})"
    if isinstance(exc, RedisTimeoutError):
        return f"Redis at {where} does not answer in time: is it overloaded or behind a stalled network? ({detail})"
    if isinstance(exc, RedisConnectionError):
        return f"cannot reach Redis at {where} ({_reason(exc)}): is it running, and is the URL right? ({detail})"
    return f"Redis at {where} answered with an error: {detail}"


def _reason(exc: RedisConnectionError) -> str:
    """The short cause of a failed connection: "connection refused", "name or service not known"..."""
    found = _CONNECT_FAILED.match(str(exc))
    if found is None:
        return "connection failed"
    errno, tail = int(found.group(1)), found.group(2)
    return (os.strerror(errno) if errno > 0 else tail or "connection failed").lower()


@contextmanager
def explained(redis_url: str | None = None, who: str = "this command") -> Iterator[None]:
    """Run a command's work; what a person can mend ends it with one line and exit code 1.

    Args:
        redis_url: the Redis the work talks to, named in the line (None: not known yet).
        who: what Redis refuses, in a line about a refusal ("this collector").

    Raises:
        click.ClickException: a Redis error, or runstream's own (no workspace configured,
            a flush that could not finish, a snapshot too large): their messages are
            written for a person.
    """
    try:
        yield
    except RunstreamError as exc:
        raise click.ClickException(str(exc)) from None
    except RedisError as exc:
        raise click.ClickException(explain_redis_error(exc, redis_url, who)) from None
