"""CLI commands that read runs: ``runs``, ``show``, ``tail``, ``wait``, ``cancel``.

Exit codes a shell can rely on: ``wait`` exits 0 when the run Completed, 1 when it
Failed, 2 when it was Canceled, 3 on timeout; every command exits 4 when the run
does not exist, and 2 when given a malformed run id.  ``cancel`` exits 1 when the run
had ended already (it stays as it ended).  Whatever else stops a command (no
workspace configured, a Redis out of reach) ends it with one line on stderr and exit
code 1 (:mod:`runstream.cli_errors`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from runstream import Experiment, Run, ScriptRunConfig, Workspace
from runstream.cli_errors import EXIT_USAGE, explained
from runstream.config import Settings
from runstream.connection import connect
from runstream.consumer.reader import RECORD_GRACE, RecordReader, wait_for_record
from runstream.consumer.tail import tail
from runstream.consumer.wait import RunFailedError, wait_for_completion
from runstream.events import TERMINAL_STATUSES
from runstream.keys import Keys, check_run_id

__all__ = ["cancel_command", "runs_command", "show_command", "submit_command", "tail_command", "wait_command"]

T = TypeVar("T")
EXIT_CODES = {"Completed": 0, "Failed": 1, "Canceled": 2}
EXIT_TIMEOUT, EXIT_UNKNOWN_RUN = 3, 4
#: How long a command waits for the record of a run created a moment ago before calling it unknown.


class UnknownRunError(click.ClickException):
    """No run of that id in the workspace (exit code 4)."""

    exit_code = EXIT_UNKNOWN_RUN


class BadArgumentError(click.ClickException):
    """An argument the command cannot use (a malformed run id, no such script): said in one line, exit code 2."""

    exit_code = EXIT_USAGE


def _run_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A RUN_ID argument, checked before anything else is done (``check_run_id``)."""
    try:
        return check_run_id(value)
    except (TypeError, ValueError) as exc:
        raise BadArgumentError(str(exc)) from None


def _settings() -> Settings:
    with explained():
        return Settings.from_config()


def _with_reader(work: Callable[[RecordReader], Awaitable[T]], settings: Settings | None = None) -> T:
    settings = settings or _settings()
    keys = Keys(settings.workspace, settings.key_prefix, settings.shards)

    async def main() -> T:
        async with connect(settings.redis_url) as client:
            return await work(RecordReader(client, keys))

    with explained(settings.redis_url):
        return asyncio.run(main())


async def _require_run(reader: RecordReader, run_id: str) -> dict[str, str]:
    meta = await wait_for_record(reader, run_id, RECORD_GRACE)
    if not meta:
        raise UnknownRunError(f"no run {run_id!r} in workspace {reader.keys.workspace!r} (`runstream runs` lists them)")
    return meta


def _when(text: str | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(text))) if text else "-"


def _duration(meta: dict[str, Any]) -> str:
    if "started_at" not in meta:
        return "-"
    end = float(meta["ended_at"]) if "ended_at" in meta else time.time()
    return f"{end - float(meta['started_at']):.1f}s"


@click.command("runs")
@click.argument("experiment", required=False)
@click.option("--filter", "filter_text", help="Only runs that match: \"metrics.loss < 0.1 and tags.model = 'cnn'\".")
@click.option("--order-by", multiple=True, help="Sort key, repeatable: 'metrics.loss ASC' (default: newest first).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many runs.")
def runs_command(experiment: str | None, filter_text: str | None, order_by: tuple[str, ...], limit: int | None) -> None:
    """List runs, newest first (of EXPERIMENT, or of every experiment), or as --filter and --order-by say."""
    from runstream.consumer.search import search_runs  # numpy's: loaded for this command only
    from runstream.consumer.search_filter import FilterError

    async def work(reader: RecordReader) -> list[list[str]]:
        try:
            found = await search_runs(reader, experiment, filter_text, list(order_by), limit)
        except FilterError as exc:
            raise BadArgumentError(str(exc)) from None
        rows = []
        for run in found.runs:
            tag_text = ",".join(f"{k}={v}" for k, v in sorted(run["tags"].items()))
            meta = {k: v for k, v in (("started_at", run["started"]), ("ended_at", run["ended"])) if v is not None}
            started = _when(None if run["started"] is None else str(run["started"]))
            rows.append([run["run_id"], run["status"] or "?", started, _duration(meta), tag_text])
        return rows

    rows = _with_reader(work)
    header = ["RUN", "STATUS", "STARTED", "DURATION", "TAGS"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@click.command("show")
@click.argument("run_id", callback=_run_id)
def show_command(run_id: str) -> None:
    """Show a run: status, tags, and last / min / max of each metric."""

    async def work(reader: RecordReader) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
        meta = await _require_run(reader, run_id)
        return meta, await reader.tags(run_id), await reader.metrics(run_id)

    meta, tags, metrics = _with_reader(work)
    click.echo(f"run      {run_id}")
    click.echo(f"status   {meta.get('status')}" + (f"  ({meta['error']})" if meta.get("error") else ""))
    click.echo(f"started  {_when(meta.get('started_at'))}   duration {_duration(meta)}")
    click.echo("tags     " + (", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"))
    for name, value in sorted(metrics.items()):
        click.echo(f"  {name}: {_summary(value)}")


def _summary(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return f"last {value[-1]!r}  min {min(value)!r}  max {max(value)!r}  ({len(value)} points)"
    if isinstance(value, dict):
        rows = len(next(iter(value.values()), []))
        return f"table of {rows} rows: {', '.join(value)}"
    return repr(value)


@click.command("tail")
@click.argument("run_id", callback=_run_id)
@click.option("--from-start", is_flag=True, help="Print the run's updates from its beginning.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME", help="Only this metric's updates (repeatable).")
@click.option(
    "--every",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="A line per metric every SECONDS (step, last value, points since) instead of each update.",
)
def tail_command(run_id: str, from_start: bool, as_json: bool, metrics: tuple[str, ...], every: float | None) -> None:
    """Print a run's updates as they come, until it ends (like tail -f); an ended run's history."""

    async def work(reader: RecordReader) -> None:
        meta = await _require_run(reader, run_id)
        await tail(
            reader, run_id, meta, click.echo, from_start=from_start, as_json=as_json, metrics=metrics, every=every
        )

    _with_reader(work)


@click.command("wait")
@click.argument("run_id", callback=_run_id)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds (exit 3).")
@click.option("--show-output", is_flag=True, help="Print the run's output as it arrives.")
def wait_command(run_id: str, timeout: float | None, show_output: bool) -> None:
    """Wait for a run to end; exit 0 Completed, 1 Failed, 2 Canceled, 3 timeout."""

    async def work(reader: RecordReader) -> str:
        await _require_run(reader, run_id)
        try:
            async with asyncio.timeout(timeout):
                details = await wait_for_completion(reader.client, reader.keys, run_id, show_output=show_output)
        except RunFailedError as exc:
            click.echo(str(exc), err=True)
            return "Failed"
        except TimeoutError:
            click.echo(f"run {run_id} still running after {timeout} s", err=True)
            return "timeout"
        return str(details["status"])

    status = _with_reader(work)
    click.echo(status)
    sys.exit(EXIT_CODES.get(status, EXIT_TIMEOUT))


@click.command("cancel")
@click.argument("run_id", callback=_run_id)
def cancel_command(run_id: str) -> None:
    """Mark a run Canceled (exit 1 if it had ended already: it stays as it ended)."""
    settings = _settings()

    async def work(reader: RecordReader) -> dict[str, str]:
        return await _require_run(reader, run_id)

    meta = _with_reader(work, settings)
    if meta.get("status") in TERMINAL_STATUSES:
        raise click.ClickException(f"run {run_id} has ended {meta['status']}: there is nothing to cancel")
    with explained(settings.redis_url):
        # Sent as any producer sends a status, so the collector applies it in order; raises
        # (one line) if the run ended meanwhile.
        Run(Experiment(Workspace.from_settings(settings), meta["experiment"]), run_id).cancel()
    click.echo(f"run {run_id} canceled")


@click.command("submit", context_settings={"ignore_unknown_options": True})
@click.argument("script")
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@click.option("--experiment", "experiment_name", required=True, help="The experiment to run it in.")
@click.option("--source", type=click.Path(exists=True, file_okay=False), default=".", help="The folder to snapshot.")
@click.option("--wait", is_flag=True, help="Wait for the run to end, printing its output; exit as `wait` does.")
def submit_command(script: str, arguments: tuple[str, ...], experiment_name: str, source: str, wait: bool) -> None:
    """Run SCRIPT [ARGUMENTS] as a run of EXPERIMENT, under a supervisor."""
    try:
        config = ScriptRunConfig(source, script, arguments=list(arguments))
    except (TypeError, ValueError) as exc:  # no such script, say
        raise BadArgumentError(str(exc)) from None
    settings = _settings()

    async def reachable(reader: RecordReader) -> None:
        await reader.client.ping()  # before a run is made that could only be spooled

    _with_reader(reachable, settings)
    with explained(settings.redis_url):
        run = Experiment(Workspace.from_settings(settings), experiment_name).submit(config)
    click.echo(run.id)
    if not wait:
        return
    with explained(settings.redis_url):
        try:
            details = run.wait_for_completion(show_output=True)
        except RunFailedError as exc:
            click.echo(str(exc), err=True)
            sys.exit(EXIT_CODES["Failed"])
    sys.exit(EXIT_CODES.get(str(details["status"]), EXIT_TIMEOUT))
