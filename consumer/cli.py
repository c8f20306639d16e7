"""The ``runstream`` command: one entry point for every part of the pipeline.

Each command lives beside the code it drives (``runstream collector`` in
:mod:`runstream.collector.cli`); this group gathers them.
"""

from __future__ import annotations

import os

import click

from runstream import __version__
from runstream.collector.cli import collector_command
from runstream.consumer.commands import (
    cancel_command,
    runs_command,
    show_command,
    submit_command,
    tail_command,
    wait_command,
)

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
):
    main.add_command(command)


@main.command("serve", context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Serve the REST API, live updates and the web pages (needs the `server` extra)."""
    # Before numpy is imported: a long series' arrays are fresh memory on each first read,
    # and faulting them in as transparent huge pages costs ~2x plain pages (compaction).
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    try:
        from runstream.consumer.server import serve_command  # aiohttp only when serving
    except ImportError as exc:
        message = f"runstream serve needs the server extra: pip install 'runstream[server]' ({exc})"
        raise click.ClickException(message) from exc
    serve_command.main(list(args), prog_name="runstream serve", standalone_mode=True)
