"""``runstream delete``, ``archive``, ``restore`` and ``export``: runs and experiments moved, removed
or written out (DESIGN §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from runstream import Experiment, Workspace
from runstream._run_storage import with_lifecycle
from runstream.cli_errors import explained
from runstream.config import Settings
from runstream.consumer.commands import BadArgumentError, UnknownRunError
from runstream.errors import RunstreamError
from runstream.keys import check_identifier, check_run_id

if TYPE_CHECKING:
    from runstream.archive.lifecycle import Lifecycle

__all__ = ["archive_command", "delete_command", "export_command", "restore_command"]


def _run_ids(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(check_run_id(value) for value in values)
    except (TypeError, ValueError) as exc:
        raise BadArgumentError(str(exc)) from None


def _experiment(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else check_identifier("experiment", value)
    except ValueError as exc:
        raise BadArgumentError(str(exc)) from None


def _workspace() -> Workspace:
    with explained():
        return Workspace.from_settings(Settings.from_config())


def _targets(run_ids: tuple[str, ...], experiment: str | None) -> None:
    if bool(run_ids) == bool(experiment):
        raise BadArgumentError("name the runs (RUN_ID ...) or an experiment (--experiment NAME), one or the other")


@click.command("delete")
@click.argument("run_ids", nargs=-1, callback=_run_ids)
@click.option("--experiment", callback=_experiment, help="Delete this experiment and all its runs.")
@click.option("--yes", is_flag=True, help="Do not ask first.")
def delete_command(run_ids: tuple[str, ...], experiment: str | None, yes: bool) -> None:
    """Delete ended runs (with their children, archives and files), or a whole experiment, for good."""
    _targets(run_ids, experiment)
    what = f"experiment {experiment} and all its runs" if experiment else ", ".join(run_ids)
    if not yes:
        click.confirm(f"Delete {what} for good?", abort=True)
    workspace = _workspace()
    with explained(workspace.settings.redis_url):
        try:
            if experiment:
                deleted = with_lifecycle(workspace, lambda life: life.delete_experiment(experiment))
            else:
                deleted = with_lifecycle(workspace, lambda life: _delete_runs(life, run_ids, workspace.name))
        except RunstreamError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"deleted {len(deleted)} run{'s' * (len(deleted) != 1)}: {', '.join(deleted)}")


async def _delete_runs(life: Lifecycle, run_ids: tuple[str, ...], workspace: str) -> list[str]:
    for run_id in run_ids:  # every one exists, or nothing is deleted
        if not await life.exists(run_id):
            raise UnknownRunError(f"no run {run_id!r} in workspace {workspace!r}")
    return [deleted for run_id in run_ids for deleted in await life.delete_run(run_id)]


async def _archive_runs(life: Lifecycle, run_ids: tuple[str, ...]) -> list[str]:
    from runstream.archive.archiver import Archived  # the archive extra's: loaded only for this command

    return [run_id for run_id in run_ids if isinstance(await life.archive_run(run_id), Archived)]


async def _restore_runs(life: Lifecycle, run_ids: tuple[str, ...]) -> list[str]:
    return [run_id for run_id in run_ids if await life.restore_run(run_id)]


@click.command("archive")
@click.argument("run_ids", nargs=-1, callback=_run_ids)
@click.option("--experiment", callback=_experiment, help="Archive every ended run of this experiment.")
def archive_command(run_ids: tuple[str, ...], experiment: str | None) -> None:
    """Move ended runs' records out of Redis into the archive now (reads go on as before)."""
    _targets(run_ids, experiment)
    workspace = _workspace()
    with explained(workspace.settings.redis_url):
        try:
            if experiment:
                archived = Experiment(workspace, experiment).archive()
            else:
                archived = with_lifecycle(workspace, lambda life: _archive_runs(life, run_ids))
        except RunstreamError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"archived {len(archived)} run{'s' * (len(archived) != 1)}")


@click.command("restore")
@click.argument("run_ids", nargs=-1, required=True, callback=_run_ids)
def restore_command(run_ids: tuple[str, ...]) -> None:
    """Put archived runs' records back into Redis (archived again when their retention says)."""
    workspace = _workspace()
    with explained(workspace.settings.redis_url):
        restored = with_lifecycle(workspace, lambda life: _restore_runs(life, run_ids))
    click.echo(f"restored {len(restored)} run{'s' * (len(restored) != 1)}")


@click.command("export")
@click.argument("run_id", required=False)
@click.option("--experiment", callback=_experiment, help="Export this experiment's runs, a row a run.")
@click.option("--filter", "filter_text", help="With --experiment: only the runs that match.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="A .parquet or .csv file.")
def export_command(run_id: str | None, experiment: str | None, filter_text: str | None, output: str) -> None:
    """Write a run's metrics (a row a point) or an experiment's runs (a row a run) to Parquet or CSV."""
    from runstream import Run

    _targets(_run_ids(click.get_current_context(), click.Argument(["run_id"]), (run_id,) if run_id else ()), experiment)
    workspace = _workspace()
    with explained(workspace.settings.redis_url):
        try:
            if experiment:
                written = Experiment(workspace, experiment).export(output, filter=filter_text)
            else:
                assert run_id is not None  # noqa: S101  # _targets checked one of the two was given
                written = Run(Experiment(workspace, run_id.rsplit("_", 2)[0]), run_id).export(output)
        except (RunstreamError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written}")
