"""``python -m runstream.collector``: the same as ``runstream collector``."""

from runstream.collector.cli import collector_command

collector_command(prog_name="python -m runstream.collector")
