"""Submitting scripts: ``ScriptRunConfig``, ``Environment`` and the snapshot of the source folder.

``Experiment.submit(config)`` starts a run (status Queued), stores a zip snapshot of
the source folder as the run's ``snapshot.zip`` (honouring ``.runstreamignore`` and
``.gitignore`` patterns, up to :data:`SNAPSHOT_LIMIT` bytes), and hands the run to an
executor.  The default :class:`LocalExecutor` starts a supervisor process
(:mod:`runstream._supervisor`) that owns the script's process, so the caller may exit.
An executor is anything with ``launch(run, config)``: a Kubernetes Job executor fits
the same interface (see deploy/README.md).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import pathspec

from runstream.errors import RunstreamError

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["SNAPSHOT_LIMIT", "Environment", "LocalExecutor", "PythonSection", "ScriptRunConfig", "snapshot"]

#: Largest snapshot of a source folder, in bytes (the zip's uncompressed content).
SNAPSHOT_LIMIT: Final = 300 * 1024 * 1024
_ALWAYS_IGNORED: Final = [".git/", ".runstream/", "__pycache__/", ".venv/", "outputs/"]


class SnapshotTooLargeError(RunstreamError, ValueError):
    """The source folder exceeds the snapshot limit."""


@dataclass(slots=True)
class PythonSection:
    """``environment.python``: which interpreter runs the script."""

    user_managed_dependencies: bool = True
    interpreter_path: str | None = None


@dataclass(slots=True)
class Environment:
    """Where a submitted script runs (this machine's Python, or ``python.interpreter_path``)."""

    name: str = "user-managed-env"
    python: PythonSection = field(default_factory=PythonSection)


@dataclass(slots=True)
class _RunConfig:
    environment: Environment = field(default_factory=Environment)


class ScriptRunConfig:
    """What to run: ``script`` in ``source_directory`` with ``arguments``, in ``environment``."""

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        script: str,
        arguments: list[object] | None = None,
        environment: Environment | None = None,
    ) -> None:
        self.source_directory = Path(source_directory).absolute()
        self.script = script
        self.arguments = [str(a) for a in arguments or []]
        self.run_config = _RunConfig(environment or Environment())
        if not (self.source_directory / script).is_file():
            raise ValueError(f"no script {script!r} in {str(self.source_directory)!r}")

    def to_json(self) -> str:
        return json.dumps(
            {
                "source_directory": str(self.source_directory),
                "script": self.script,
                "arguments": self.arguments,
                "interpreter": self.run_config.environment.python.interpreter_path or sys.executable,
                "environment": asdict(self.run_config.environment),
            }
        )


def snapshot(folder: Path, limit: int = SNAPSHOT_LIMIT) -> bytes:
    """A zip of ``folder`` without ignored files.

    Raises:
        SnapshotTooLargeError: the files to include exceed ``limit`` bytes.
    """
    patterns = list(_ALWAYS_IGNORED)
    for ignore_file in (".gitignore", ".runstreamignore"):
        if (folder / ignore_file).is_file():
            patterns += (folder / ignore_file).read_text().splitlines()
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not spec.match_file(p.relative_to(folder).as_posix())
    )
    total = sum(p.stat().st_size for p in files)
    if total > limit:
        raise SnapshotTooLargeError(
            f"the source folder {str(folder)!r} holds {total} bytes to snapshot, over the limit of {limit}:"
            " list what the run does not need in .runstreamignore (gitignore patterns)"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class Executor(Protocol):
    """Runs a submitted run's script somewhere, and reports to the run."""

    def launch(self, run: Run, config: ScriptRunConfig) -> None: ...


class LocalExecutor:
    """Runs the script on this machine under a detached supervisor process."""

    def launch(self, run: Run, config: ScriptRunConfig) -> None:
        experiment = run.experiment
        if experiment is None:
            raise RunstreamError("an offline run cannot be submitted")
        settings = experiment.workspace.settings
        logs = settings.data_dir / "runs" / run.id
        logs.mkdir(parents=True, exist_ok=True)
        workspace = {
            "redis_url": settings.redis_url,
            "workspace": settings.workspace,
            "data_dir": str(settings.data_dir),
            "key_prefix": settings.key_prefix,
            "shards": settings.shards,
            "heartbeat_interval": settings.heartbeat_interval,
            "linger_ms": settings.linger_ms,
            # The script's portal URLs, files and archive are the submitter's (the token is
            # not passed on a command line: the environment carries it, if it is set).
            "server_url": settings.server_url,
            "archive_url": settings.archive_url,
            "artifacts_url": settings.artifacts_url,
        }
        command = [sys.executable, "-m", "runstream._supervisor", "--detach", run.id, experiment.name]
        with (logs / "supervisor.log").open("ab") as log:
            # The supervisor forks itself away (--detach) and this call returns at once: it
            # belongs to no caller, which may exit or be interrupted without taking it along.
            subprocess.run(  # noqa: S603  # our own interpreter and module
                [*command, json.dumps(workspace), config.to_json()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                check=True,
                timeout=60,
            )
