"""``runstream serve`` in a process of its own, for tests of what only the real serve path does
(its connection bounds, its memory), and raw HTTP over loopback sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

from runstream import Workspace
from runstream.redis_server import free_port
from tests.conftest import wait_until

__all__ = ["ServeProcess", "read_status", "status_of"]


class ServeProcess:
    """``runstream serve --port <free> [options]`` for ``workspace``, logging to ``log``; stopped on exit."""

    def __init__(self, workspace: Workspace, log: Path, *options: str) -> None:
        self.port = free_port()
        self.log = log
        env = {key: value for key, value in os.environ.items() if not key.startswith("RUNSTREAM_")}
        env |= {
            "RUNSTREAM_REDIS_URL": workspace.settings.redis_url,
            "RUNSTREAM_WORKSPACE": workspace.name,
            "RUNSTREAM_DATA_DIR": str(workspace.settings.data_dir),
        }
        command = [sys.executable, "-c", "from runstream.consumer.cli import main; main()", "serve"]
        command += ["--port", str(self.port), "--json", *options]
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def __enter__(self) -> Self:
        wait_until(self._listening, 30, "runstream serve listening")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.process.terminate()
        self.process.wait(30)

    def _listening(self) -> bool:
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss(self) -> int:
        """The process's peak resident memory so far, in bytes (``VmHWM``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")


async def read_status(reader: asyncio.StreamReader, bound: float = 30.0) -> tuple[int, dict[str, str]]:
    """The status and headers of the HTTP response ``reader`` receives."""
    async with asyncio.timeout(bound):
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    return int(status_line.split()[1]), headers


async def status_of(host: str, port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Send raw ``request`` bytes on a new connection; the response's status and headers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_status(reader)
    finally:
        writer.close()
        await writer.wait_closed()
