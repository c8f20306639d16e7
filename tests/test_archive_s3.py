"""Ended runs archived into an S3-compatible store, and read back as if nothing had moved.

``tests/test_archive.py`` archives into a local folder; an object store reached over
HTTP is where a deployment's archive lives, and where what only S3 does can go wrong:
the store built from the ``AWS_*`` variables alone, plain http to a private endpoint,
a bucket that answers nothing for a while.  moto's standalone server, started on
loopback by these tests (a process of its own, never moto's in-process mocks, so the
bytes cross a real socket), is that store; Redis and the collector are real too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import redis
from structlog.testing import capture_logs
from structlog.typing import EventDict

from runstream import Experiment, Run
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.workspace import Workspace
from tests.conftest import CollectorThread, wait_until
from tests.s3_server import S3Server
from tests.test_archive import STUB, every_read, exact, log_everything, run_keys

#: Where in the bucket the archive is kept (a URL's path: objects are named below it).
PREFIX: Final = "some/prefix"
#: What a run's file set is made of.
FILE_SET: Final = {"manifest.json", "series.parquet", "output.parquet", "record.msgpack.z"}


@pytest.fixture
def s3_experiment(experiment: Experiment, bucket: str) -> Experiment:
    """The test's experiment, in a workspace whose archive is the bucket (``archive_url``)."""
    settings = dataclasses.replace(experiment.workspace.settings, archive_url=f"s3://{bucket}/{PREFIX}")
    return Experiment(Workspace.from_settings(settings), experiment.name)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "roc.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return path


@dataclasses.dataclass(frozen=True)
class ArchivedRun:
    """A run archived into the bucket, with what was read of it while it was in Redis."""

    run: Run
    before: dict[str, Any]
    keys_before: set[str]


def _archived(client: redis.Redis, workspace: Workspace, run_id: str) -> bool:
    return client.hget(workspace.keys.meta(run_id), "archive") is not None


async def _reads(workspace: Workspace, run_id: str) -> dict[str, Any]:
    async with connect(workspace.settings.redis_url) as redis_client:
        return await every_read(RecordReader(redis_client, workspace.keys), run_id)


def _logged(experiment: Experiment, image: Path) -> Run:
    """A run with every shape, completed, and its end applied to the record."""
    run = experiment.start_logging(display_name="everything")
    log_everything(run, image)
    run.complete()
    wait_until(lambda: run.get_status() == "Completed", 30, "the run completed")
    return run


@pytest.fixture
def archived_run(
    s3_experiment: Experiment,
    start_collector: Callable[..., CollectorThread],
    image: Path,
    client: redis.Redis,
) -> ArchivedRun:
    """A run with every shape, read while in Redis, then archived into the bucket by the collector."""
    workspace = s3_experiment.workspace
    start_collector(workspace, live_kept_after_end=0.2, archive_after=5.0)
    run = _logged(s3_experiment, image)
    # Read once trimmed (what the archive takes: the live stream's end), from Redis: it is not
    # archived before 5 s after its end, and the trim comes within about a second of it.
    wait_until(lambda: client.xlen(workspace.keys.live(run.id)) == 1, 30, "the ended run's live stream trimmed")
    before = asyncio.run(_reads(workspace, run.id))
    keys_before = run_keys(client, workspace, run.id)
    assert not _archived(client, workspace, run.id)
    wait_until(lambda: _archived(client, workspace, run.id), 30, "the run archived")
    return ArchivedRun(run, before, keys_before)


def _same_reads(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for what in before:
        assert exact(before[what]) == exact(after[what]), what


class TestArchivedInS3:
    def test_reads_the_same(self, s3_experiment: Experiment, archived_run: ArchivedRun) -> None:
        after = asyncio.run(_reads(s3_experiment.workspace, archived_run.run.id))

        _same_reads(archived_run.before, after)
        assert [1.0 / (1 + s) for s in range(300)] == after["metrics"]["loss"]
        assert "cnn" == after["tags"]["model"]

    def test_the_record_moved_into_the_bucket(
        self, s3_experiment: Experiment, archived_run: ArchivedRun, s3: S3Server, bucket: str, client: redis.Redis
    ) -> None:
        workspace, run_id = s3_experiment.workspace, archived_run.run.id
        folder = f"{PREFIX}/rs/{workspace.name}/runs/{run_id}/"
        names = s3.object_names(bucket)

        assert {"t:loss", "out", "tags", "metrics", "files", "children"} <= archived_run.keys_before
        assert STUB == run_keys(client, workspace, run_id)
        assert FILE_SET == {name.removeprefix(folder) for name in names if name.startswith(folder)}
        assert all(name.startswith(f"{PREFIX}/rs/{workspace.name}/runs/") for name in names), names
        assert f"s3://{bucket}/{PREFIX}".encode() == client.hget(workspace.keys.meta(run_id), "archive")
        assert [] == [p for p in (workspace.settings.data_dir / "archive").rglob("*") if p.is_file()]

    def test_a_fresh_process_finds_it_from_the_stub(
        self, s3_experiment: Experiment, archived_run: ArchivedRun, tmp_path: Path
    ) -> None:
        """A process with no archive setting and an empty data folder (a notebook elsewhere)
        reads the run: the stub's URL and the ``AWS_*`` variables are all it needs."""
        workspace, out = s3_experiment.workspace, tmp_path / "metrics.pickle"
        env = {name: value for name, value in os.environ.items() if not name.startswith("RUNSTREAM_")}
        config = [workspace.settings.redis_url, workspace.name, str(tmp_path / "elsewhere"), archived_run.run.id]

        done = subprocess.run(
            [sys.executable, "-c", _READ_METRICS, *config, str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert 0 == done.returncode, done.stderr
        metrics = pickle.loads(out.read_bytes())  # noqa: S301  # written by the child process just above
        assert exact(archived_run.before["metrics"]) == exact(metrics)


_READ_METRICS: Final = textwrap.dedent(
    """
    import pickle, sys
    from pathlib import Path
    from runstream import Experiment, Run, Settings, Workspace
    redis_url, name, data_dir, run_id, out = sys.argv[1:]
    workspace = Workspace.from_settings(Settings(redis_url=redis_url, workspace=name, data_dir=Path(data_dir)))
    assert workspace.settings.archive_url is None
    Path(out).write_bytes(pickle.dumps(Run(Experiment(workspace, "tests"), run_id).get_metrics()))
    """
)


def _alive(collector: CollectorThread) -> bool:
    """The collector's thread still runs (its name is the collector's reader's)."""
    name = f"collector-{collector.settings.reader}"
    return collector.error is None and any(t.name == name and t.is_alive() for t in threading.enumerate())


class TestServerAway:
    def test_the_run_waits_in_redis_and_is_archived_once_it_is_back(
        self,
        s3: S3Server,
        bucket: str,
        s3_experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        image: Path,
        client: redis.Redis,
    ) -> None:
        workspace = s3_experiment.workspace
        keys = workspace.keys
        with capture_logs() as logs:
            collector = start_collector(workspace, live_kept_after_end=0.2, archive_after=0.0)
            s3.stop()
            run = _logged(s3_experiment, image)
            wait_until(lambda: client.zscore(keys.archive_due(), run.id) is not None, 30, "the run due")
            before = asyncio.run(_reads(workspace, run.id))
            keys_before = run_keys(client, workspace, run.id)

            def failed() -> list[EventDict]:
                return [e for e in logs if e["event"] == "retention_failed" and e.get("run_id") == run.id]

            wait_until(lambda: bool(failed()), 30, "an archive attempt failing")
            reported = collector.stats.updated_at
            wait_until(lambda: collector.stats.updated_at > reported, 30, "the collector reporting after it")
            still = asyncio.run(_reads(workspace, run.id))
            alive_while_away = _alive(collector)
            keys_while_away = run_keys(client, workspace, run.id)
            due_while_away = client.zscore(keys.archive_due(), run.id)
            archived_while_away = _archived(client, workspace, run.id)

            s3.start()
            s3.create_bucket(bucket)
            wait_until(lambda: _archived(client, workspace, run.id), 30, "the run archived once the store is back")
            after = asyncio.run(_reads(workspace, run.id))
            alive_after = _alive(collector)
            collector.stop()  # before the logs' capture ends: it changes structlog's processors under the thread

        failure = failed()[0]
        assert "error" == failure["log_level"]
        assert f"{s3.endpoint}/{bucket}/{PREFIX}/rs/{workspace.name}/runs/{run.id}/" in failure["error"], failure
        assert alive_while_away
        assert not archived_while_away
        assert due_while_away is not None
        assert keys_before == keys_while_away
        assert {"t:loss", "out", "tags", "metrics"} <= keys_while_away
        _same_reads(before, still)
        _same_reads(before, after)
        assert alive_after
        assert STUB == run_keys(client, workspace, run.id)
        folder = f"{PREFIX}/rs/{workspace.name}/runs/{run.id}/"
        assert FILE_SET == {n.removeprefix(folder) for n in s3.object_names(bucket) if n.startswith(folder)}
