"""A private ``redis-server`` process on a loopback port.

Used by ``runstream up`` for the embedded default, and by the tests and benchmarks,
which start their own servers so they can stop, kill and restart them.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from runstream.errors import ConfigError

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process: start, stop (SIGTERM), kill (SIGKILL), restart.

    Args:
        folder: where the server keeps its files (AOF, log); a temp folder by default.
        port: the port to listen on (a free one by default; kept across restarts).
        appendonly: persist every write to an AOF, so a killed server comes back with
            what it acknowledged (all of it with ``appendfsync="always"``; with
            ``"everysec"`` a crash of the machine, not of the server, may lose a second).
        args: more ``redis-server`` arguments.
        detached: run in a session of its own, so a Ctrl-C meant for its owner does not
            reach it and the owner shuts it down last, in order.
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "always",
        args: tuple[str, ...] = (),
        executable: str | None = None,
        detached: bool = False,
    ) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise ConfigError("redis-server is not installed (apt-get install redis-server)")
        self.executable = found
        self._own_folder = folder is None  # a temp folder we made is removed on exit
        self.folder = folder or Path(tempfile.mkdtemp(prefix="runstream-redis-"))
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.args = args
        self.detached = detached
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", self.appendfsync] if self.appendonly else ["--appendonly", "no"]
        )
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            *persistence,
            "--dir", str(self.folder),
            "--logfile", "redis.log",
            "--daemonize", "no",
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(  # noqa: S603  # our own argv
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=self.detached
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.folder / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.kill()
                raise ConfigError(f"redis-server on port {self.port} did not start: {tail}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """Whether the server answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM) and wait."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> Self:
        """Start again on the same port and folder (after ``stop`` or ``kill``)."""
        self.kill()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
