"""The server's settings: which workspace, where to listen, who may read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runstream.config import Settings

__all__ = ["ServerSettings", "load_tokens"]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How ``runstream serve`` runs.

    Attributes:
        workspace: the workspace settings (Redis, key names, data folder with the files).
        host, port: where to listen.
        tokens: bearer tokens that may read; empty: no authentication.
        client_buffer: bytes of SSE messages that may wait unsent for one client (its
            connection not keeping up) before it is dropped.
    """

    workspace: Settings
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: frozenset[str] = field(default=frozenset(), repr=False)
    client_buffer: int = 1024 * 1024

    def __repr__(self) -> str:
        return (
            f"ServerSettings(workspace={self.workspace!r}, host={self.host!r}, port={self.port},"
            f" tokens={'***' if self.tokens else 'none'})"
        )


def load_tokens(token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """Tokens from ``RUNSTREAM_TOKEN`` (or ``token``) and a token file (one token a line)."""
    tokens = {t for t in (token or os.environ.get("RUNSTREAM_TOKEN") or "").split(",") if t.strip()}
    if token_file:
        tokens |= {line.strip() for line in Path(token_file).read_text().splitlines() if line.strip()}
    return frozenset(t.strip() for t in tokens)
