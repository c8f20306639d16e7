"""An archiving process SIGKILLed at any point leaves the run whole in Redis or whole in the archive.

Each test archives one run in a process of its own (the archive's own loop,
:class:`~runstream.archive.due.DueRuns`, as a collector runs it) that kills itself
with SIGKILL at one point of the archival: before anything is written, with part
of the file set written and no manifest, with all of it written and verified but
the record not yet swapped for the stub, and after the swap but before the run left
the due index.  The swap itself is one script on the run's slot, which Redis runs
whole or not at all, so "mid-delete" has no point to kill at inside it.

After the kill, every read of the run gives what it gave before; then an archiving
pass of this process finishes the job, and the reads are still the same, from the
archive, with nothing doubled (one file set, one stub, the due index empty).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from runstream import Experiment, Run
from runstream.archive.due import DueRuns
from runstream.archive.lifecycle import Lifecycle
from runstream.archive.store import open_store
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.retention import Retention
from runstream.workspace import Workspace
from tests.conftest import CollectorThread, wait_until
from tests.test_archive import STUB, every_read, exact, log_everything, run_keys

#: The archiving process: archives what is due, and SIGKILLs itself where told (argv[2]).
_KILLED_ARCHIVER = """
import asyncio, json, os, signal, sys
import structlog
from runstream.archive.due import DueRuns
from runstream.archive.lifecycle import Lifecycle
from runstream.archive.store import ArchiveStore, open_store
from runstream.artifacts import LocalArtifactStore
from runstream.connection import connect
from runstream.keys import Keys
from runstream.retention import Retention

config, point = json.loads(sys.argv[1]), sys.argv[2]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingStore(ArchiveStore):
    puts = 0

    async def put(self, path: str, data: bytes) -> None:
        KillingStore.puts += 1
        if point == f"put:{KillingStore.puts}":
            die()
        await super().put(path, data)


async def main() -> None:
    keys = Keys(config["workspace"], config["prefix"], config["shards"])
    data = __import__("pathlib").Path(config["data_dir"])
    plain = open_store(None, data)
    store = KillingStore(plain.store, plain.url, plain.folder)
    files = LocalArtifactStore(data / "artifacts" / config["workspace"])
    async with connect(config["redis_url"]) as client:
        life = Lifecycle(client, keys, store, files, structlog.get_logger())
        archiver = life.archiver
        swap = archiver._swap

        async def swap_then_maybe_die(**kwargs):
            if point == "before swap":
                die()
            reply = await swap(**kwargs)
            if point == "after swap":
                die()
            return reply

        archiver._swap = swap_then_maybe_die

        class Names:
            keys = Keys(config["workspace"], config["prefix"], config["shards"])

        due = DueRuns(life, Names(), set(range(keys.shards)), structlog.get_logger(),
                      defaults=Retention(0.0, None), unreachable=())
        await due.archive_due(1e12)


asyncio.run(main())
print("not killed", flush=True)
"""

#: Where the archiving process is killed, and whether the run is archived after the kill.
POINTS = [
    ("put:1", False),  # nothing written yet
    ("put:3", False),  # two of the four objects written, no manifest
    ("put:4", False),  # the file set written but its manifest
    ("before swap", False),  # written and verified; the record still whole in Redis
    ("after swap", True),  # the stub in place; the run still in the due index
]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def ended_run(
    experiment: Experiment, start_collector: Callable[..., CollectorThread], tmp_path: Path, client: redis.Redis
) -> tuple[Run, dict[str, Any]]:
    """A run with every shape, ended under a collector that archives nothing (stopped then), made
    due by hand; and its reads."""
    collector = start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
    image = tmp_path / "roc.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    run = experiment.start_logging()
    log_everything(run, image)
    run.complete()
    keys = experiment.workspace.keys
    wait_until(lambda: client.xlen(keys.live(run.id)) == 1, 30, "the ended run's live stream trimmed")
    collector.stop()  # its own retention pass (never archive) would take the run out of the due index
    client.delete(keys.archive_due())  # the run alone is due (not its child)
    client.zadd(keys.archive_due(), {run.id: time.time()})
    return run, asyncio.run(reads(experiment.workspace, run.id))


async def reads(workspace: Workspace, run_id: str) -> dict[str, Any]:
    async with connect(workspace.settings.redis_url) as redis_client:
        return await every_read(RecordReader(redis_client, workspace.keys), run_id)


def kill_the_archiver(workspace: Workspace, point: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "archiver.py"
    script.write_text(textwrap.dedent(_KILLED_ARCHIVER))
    settings = workspace.settings
    config = {
        "redis_url": settings.redis_url,
        "workspace": workspace.name,
        "prefix": workspace.keys.prefix,
        "shards": workspace.keys.shards,
        "data_dir": str(settings.data_dir),
    }
    return subprocess.run(
        [sys.executable, str(script), json.dumps(config), point],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def archive_what_is_due(workspace: Workspace) -> list[str]:
    async with connect(workspace.settings.redis_url) as redis_client:
        store = open_store(None, workspace.settings.data_dir)
        life = Lifecycle(redis_client, workspace.keys, store, workspace.artifacts, structlog.get_logger())
        due = DueRuns(
            life,
            workspace,
            set(range(workspace.keys.shards)),
            structlog.get_logger(),
            defaults=Retention(0.0, None),
            unreachable=(),
        )
        return [archived.run_id for archived in await due.archive_due(time.time() + 1)]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "archived_by_the_killed"), POINTS, ids=[p for p, _ in POINTS])
def test_killed_while_archiving(
    experiment: Experiment,
    ended_run: tuple[Run, dict[str, Any]],
    client: redis.Redis,
    tmp_path: Path,
    point: str,
    archived_by_the_killed: bool,
) -> None:
    run, before = ended_run
    workspace, keys = experiment.workspace, experiment.workspace.keys

    killed = kill_the_archiver(workspace, point, tmp_path)
    after_kill = asyncio.run(reads(workspace, run.id))
    stub_after_kill = client.hget(keys.meta(run.id), "archive") is not None
    keys_after_kill = run_keys(client, workspace, run.id)
    finished = asyncio.run(archive_what_is_due(workspace))
    after = asyncio.run(reads(workspace, run.id))

    assert -9 == killed.returncode, killed.stdout + killed.stderr
    assert exact(before) == exact(after_kill)  # whole where it is, Redis or archive
    assert archived_by_the_killed == stub_after_kill
    assert (keys_after_kill == STUB) == archived_by_the_killed
    assert ([] if archived_by_the_killed else [run.id]) == finished
    assert exact(before) == exact(after)
    assert STUB == run_keys(client, workspace, run.id)
    assert client.zscore(keys.archive_due(), run.id) is None
    folders = list((workspace.settings.data_dir / "archive" / keys.prefix / workspace.name / "runs").iterdir())
    assert [run.id] == [f.name for f in folders]
    assert "Completed" == Run(experiment, run.id).get_status()
