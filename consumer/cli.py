"""The ``runstream`` command: one entry point for every part of the pipeline.

Each command lives beside the code it drives (``runstream collector`` in
:mod:`runstream.collector.cli`); this group gathers them.
"""

from __future__ import annotations

import importlib
import os

import click

from runstream import __version__
from runstream.cli_errors import explained
from runstream.collector.cli import collector_command
from runstream.consumer.commands import (
    cancel_command,
    runs_command,
    show_command,
    submit_command,
    tail_command,
    wait_command,
)
from runstream.consumer.storage_commands import archive_command, delete_command, export_command, restore_command

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="runstream")
def main() -> None:
    """runstream: experiment tracking on Redis streams."""


for command in (
    collector_command,
    runs_command,
    show_command,
    tail_command,
    wait_command,
    cancel_command,
    submit_command,
    archive_command,
    restore_command,
    delete_command,
    export_command,
):
    main.add_command(command)


def _lazy(name: str, module: str, attribute: str, summary: str) -> None:
    """A command whose module loads only when it runs (aiohttp and numpy are the `server` extra)."""

    @main.command(name, help=summary, context_settings={"ignore_unknown_options": True}, add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def passthrough(args: tuple[str, ...]) -> None:
        # Before numpy is imported: a long series' arrays are fresh memory on each first
        # read, and faulting them in as transparent huge pages costs ~2x plain pages.
        os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
        try:
            command = getattr(importlib.import_module(module), attribute)
        except ImportError as exc:
            message = f"runstream {name} needs the server extra: pip install 'runstream[server]' ({exc})"
            raise click.ClickException(message) from exc
        with explained():  # what reaches here past the command's own click handling: no workspace, say
            command.main(list(args), prog_name=f"runstream {name}", standalone_mode=True)


_lazy("serve", "runstream.consumer.server", "serve_command", "Serve the REST API, live updates and the web pages.")
_lazy("up", "runstream.consumer.embedded", "up_command", "Start Redis, a collector and the server here, until Ctrl-C.")
_lazy("down", "runstream.consumer.embedded", "down_command", "Stop the `runstream up` of this folder.")
_lazy("demo", "runstream.consumer.demo", "demo_command", "Run a small training sweep and show it live.")
