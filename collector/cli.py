"""``runstream collector``: run a collector until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace

import click
import structlog
from redis.exceptions import RedisError

from runstream.cli_errors import explained
from runstream.collector.service import Collector, CollectorSettings, collector_client
from runstream.config import Settings
from runstream.connection import mask_url
from runstream.errors import ConfigError
from runstream.logconfig import configure_logging

__all__ = ["collector_command", "run_collector"]

_log = structlog.get_logger("runstream.collector")


async def run_collector(settings: CollectorSettings, stop: asyncio.Event | None = None) -> None:
    """Run one collector until ``stop`` is set (or SIGTERM/SIGINT arrives)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with collector_client(settings.workspace.redis_url) as client:
        await Collector(settings, client).run(stop)


@click.command("collector")
@click.option("--reader", help="This collector's name in the consumer groups (default: host-pid).")
@click.option(
    "--heartbeat-timeout",
    type=float,
    default=30.0,
    show_default=True,
    envvar="RUNSTREAM_HEARTBEAT_TIMEOUT",
    show_envvar=True,
    help="Seconds without a heartbeat before a run is NotResponding (Running again when heard from).",
)
@click.option(
    "--heartbeat-lost-after",
    type=float,
    default=None,
    envvar="RUNSTREAM_HEARTBEAT_LOST_AFTER",
    show_envvar=True,
    help="Seconds without a heartbeat before a run is Failed (heartbeat lost), for good.  [default: 10x the timeout]",
)
@click.option(
    "--gap-timeout",
    type=float,
    default=60.0,
    show_default=True,
    envvar="RUNSTREAM_GAP_TIMEOUT",
    show_envvar=True,
    help="Seconds a batch waits for a missing earlier seq of its producer before the gap is dead-lettered"
    " and counted (lost_batches) and the batch applied.",
)
@click.option(
    "--live-kept-after-end",
    type=float,
    default=60.0,
    show_default=True,
    envvar="RUNSTREAM_LIVE_KEPT_AFTER_END",
    show_envvar=True,
    help="Seconds an ended run's live stream stays whole before it is trimmed to its final entry"
    " (a client further behind reads the record).",
)
@click.option(
    "--archive-after",
    default="600",
    show_default=True,
    callback=lambda _ctx, _param, value: _seconds_or_never(value),
    envvar="RUNSTREAM_ARCHIVE_AFTER",
    show_envvar=True,
    help="Seconds after its end that a run is archived (moved out of Redis into the object store of"
    " RUNSTREAM_ARCHIVE_URL, by default the folder `archive` in the data folder), or `never`.",
)
@click.option(
    "--delete-after",
    default="never",
    show_default=True,
    callback=lambda _ctx, _param, value: _seconds_or_never(value),
    envvar="RUNSTREAM_DELETE_AFTER",
    show_envvar=True,
    help="Seconds after its end that a run is deleted (its record, archive and files), or `never`."
    " An experiment may have its own (Experiment.set_retention).",
)
@click.option("--lease-ttl", type=float, default=5.0, show_default=True, help="Seconds a lease lasts unrenewed.")
@click.option("--json/--console", "json_logs", default=None, help="Log format (default: JSON unless on a terminal).")
def collector_command(
    reader: str | None,
    heartbeat_timeout: float,
    heartbeat_lost_after: float | None,
    gap_timeout: float,
    live_kept_after_end: float,
    archive_after: float | None,
    delete_after: float | None,
    lease_ttl: float,
    json_logs: bool | None,
) -> None:
    """Fold the workspace's ingest streams into run records (until SIGTERM)."""
    configure_logging(json=json_logs)
    with explained():
        workspace = Settings.from_config()
    settings = CollectorSettings(
        workspace=workspace,
        heartbeat_timeout=heartbeat_timeout,
        heartbeat_lost_after=heartbeat_lost_after,
        gap_timeout=gap_timeout,
        live_kept_after_end=live_kept_after_end,
        archive_after=archive_after,
        delete_after=delete_after,
        lease_ttl=lease_ttl,
    )
    # One line for what stops it (a Redis out of reach or refusing it, or one that would lose
    # records: it evicts keys), and the log says so too.
    with explained(workspace.redis_url, who="this collector"):
        try:
            asyncio.run(run_collector(replace(settings, reader=reader) if reader else settings))
        except (RedisError, ConfigError) as exc:
            _log.error("collector_failed", redis=mask_url(workspace.redis_url), error=f"{type(exc).__name__}: {exc}")
            raise


def _seconds_or_never(text: str) -> float | None:
    if text.strip().lower() == "never":
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise click.BadParameter(f"must be a number of seconds or `never`, not {text!r}") from None
    if seconds < 0:
        raise click.BadParameter(f"must be 0 or more seconds, not {text!r}")
    return seconds
