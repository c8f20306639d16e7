"""The server's settings: which workspace, where to listen, who may read.

A token entry is ``WORKSPACE:TOKEN`` (the token opens only that workspace's server)
or a bare ``TOKEN`` (any workspace's server).  A workspace name never holds a ``:``,
so the first ``:`` ends the scope; a bare token therefore holds none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runstream.config import Settings
from runstream.errors import ConfigError
from runstream.keys import check_identifier

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "ServerSettings", "load_tokens", "parse_token", "scoped_tokens"]

#: Seconds a connection may stay without a request in progress (``ServerSettings.idle_timeout``).
IDLE_TIMEOUT = 15.0
#: Connections open at once (``ServerSettings.max_connections``); deploy/'s units allow the
#: process four times as many file descriptors (Redis connections, files being served).
MAX_CONNECTIONS = 4096


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How ``runstream serve`` runs.

    Attributes:
        workspace: the workspace settings (Redis, key names, data folder with the files).
        host, port: where to listen.
        tokens: token entries (``WORKSPACE:TOKEN`` or a bare ``TOKEN``, see :func:`parse_token`);
            empty: no authentication.  Entries scoped to other workspaces open nothing here,
            but still make authentication required.
        client_buffer: bytes of SSE messages that may wait unsent for one client (its
            connection not keeping up) before it is dropped.
        max_upload: bytes a file upload may hold; a bigger one gets 413 and stores nothing.
        max_uploads: uploads streamed to disk at once; one more gets 503 with ``Retry-After``.
        upload_stall: seconds an upload may go without sending a byte before it gets 408
            (and stores nothing).
        idle_timeout: seconds a connection may stay without a request in progress, from
            its opening or the end of its last request; then it is closed (a client that
            sends its headers a byte a second among them).
        max_connections: connections open at once; at the limit a new one replaces the one
            idle longest, or, when every one is in a request, gets 503 and is closed.

    Raises:
        ConfigError: a token entry is malformed (see :func:`parse_token`).
    """

    workspace: Settings
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: frozenset[str] = field(default=frozenset(), repr=False)
    client_buffer: int = 1024 * 1024
    max_upload: int = 1024**3
    max_uploads: int = 4
    upload_stall: float = 60.0
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for entry in self.tokens:
            parse_token(entry)

    def __repr__(self) -> str:
        return (
            f"ServerSettings(workspace={self.workspace!r}, host={self.host!r}, port={self.port},"
            f" tokens={'***' if self.tokens else 'none'})"
        )


def parse_token(entry: str) -> tuple[str | None, str]:
    """Split a token entry into the workspace it is scoped to (None: any) and the token.

    Raises:
        ConfigError: the scope is not a workspace name, or the token is empty.  The
            message never quotes the token.
    """
    text = entry.strip()
    if ":" not in text:
        if not text:
            raise ConfigError("a token entry is empty (write WORKSPACE:TOKEN or TOKEN)")
        return None, text
    scope, _, secret = text.partition(":")
    if not secret.strip():
        raise ConfigError("a token entry has nothing after its ':' (write WORKSPACE:TOKEN or TOKEN)")
    try:
        check_identifier("workspace", scope)
    except ValueError:
        raise ConfigError(
            "a token entry's scope (before the first ':') is not a workspace name; a bare token may not hold ':'"
        ) from None
    return scope, secret.strip()


def scoped_tokens(tokens: frozenset[str], workspace: str) -> tuple[frozenset[str], frozenset[str]]:
    """The tokens that open ``workspace``, and those that open only other workspaces."""
    parsed = [parse_token(entry) for entry in tokens]
    here = frozenset(secret for scope, secret in parsed if scope in (None, workspace))
    return here, frozenset(secret for _, secret in parsed) - here


def load_tokens(token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """Token entries from ``RUNSTREAM_TOKEN`` (or ``token``; comma-separated) and a token
    file (one a line): ``WORKSPACE:TOKEN`` or a bare ``TOKEN``.

    Raises:
        ConfigError: an entry is malformed (see :func:`parse_token`).
    """
    entries = {t.strip() for t in (token or os.environ.get("RUNSTREAM_TOKEN") or "").split(",") if t.strip()}
    if token_file:
        entries |= {line.strip() for line in Path(token_file).read_text().splitlines() if line.strip()}
    for entry in entries:
        parse_token(entry)
    return frozenset(entries)
