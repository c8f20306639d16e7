"""Ended runs move into the archive, and every read of them gives what it gave before.

Against the session's real Redis, real collectors and a real object store (a local
folder here; an S3-compatible server on loopback in ``tests/test_archive_s3.py``): a
run logged with every shape, read through every reader (the Python API, the REST API,
the chart route, the widget's record read), archived by the collector, read again;
the Redis keys it gave back; and a batch that arrives after the archive is applied.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run
from runstream.archive.archiver import Archived, Archiver
from runstream.archive.store import open_store
from runstream.connection import connect
from runstream.consumer._widget_state import RunState, read_record
from runstream.consumer.reader import RecordReader
from runstream.consumer.server import ServerSettings, create_app
from runstream.events import OutputLogged
from runstream.workspace import Workspace
from tests.conftest import CollectorThread, wait_until
from tests.test_server import collect_sse

#: What stays of an archived run in Redis: its stub.
STUB = {"meta", "seqs", "live"}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


def log_everything(run: Run, image: Path) -> None:
    """One of each shape a run can hold, with values whose types must survive."""
    for step in range(300):
        run.log("loss", 1.0 / (1 + step), step=step)
    run.log("epochs", 3)
    run.log("flag", True)
    run.log("note", "text values too")
    run.log("odd", math.inf)
    run.log("odd", math.nan)
    run.log("odd", -0.0)
    run.log("big step", 1.5, step=2**63 + 7)
    run.log_list("accuracy", [0.6, 0.7, 0.8])
    run.log_list("mixed", [1, 2.5, 3])
    run.log_row("Y over X", x=1, y=0.4)
    run.log_row("Y over X", x=2, y=0.5)
    run.log_table("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]})
    run.log_image("ROC", path=image)
    run.tag("model", "cnn")
    run.tag("bare")
    run.add_properties({"lr": "0.1"})
    run.upload_file("notes.txt", _write(image.parent / "notes.txt", b"a file of the run"))
    child = run.child_run("child")
    child.log("child loss", 0.5)
    child.complete()
    # As a submitted script's supervisor sends its output.
    run._emit(OutputLogged("stdout", ["epoch 1", "epoch 2 ✓"], time.time()))
    run._emit(OutputLogged("stderr", ["a warning"], time.time()))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return _write(tmp_path / "roc.png", b"\x89PNG\r\n\x1a\n" + bytes(64))


async def every_read(reader: RecordReader, run_id: str) -> dict[str, Any]:
    """What each reader method gives for the run (the widget's and the REST API's sources)."""
    index = await reader.metric_index(run_id)
    series = {name: await reader.series(run_id, name) for name, info in index.items() if info["kind"] == "series"}
    return {
        "meta": await reader.meta(run_id),
        "status": await reader.status(run_id),
        "tags": await reader.tags(run_id),
        "properties": await reader.properties(run_id),
        "files": await reader.files(run_id),
        "children": await reader.children(run_id),
        "index": index,
        "metrics": await reader.metrics(run_id),
        "one metric": await reader.metrics(run_id, "loss"),
        "last values": {name: await reader.last_value(run_id, name) for name in series},
        "series": series,
        "details": await reader.details(run_id),
        "output": await reader.output(run_id, 100),
        "live id": await reader.live_id(run_id),
    }


async def every_route(api: TestClient[Any, Any], run: Run, experiment: Experiment) -> dict[str, Any]:
    """What the REST API answers for the run (JSON bodies, and the files' bytes)."""
    base = f"/api/v1/runs/{run.id}"
    paths = [
        base,
        f"{base}/metrics",
        f"{base}/metrics/loss?max_points=50",
        f"{base}/metrics/loss?start=10&end=20",
        f"{base}/metrics/note",
        f"{base}/metrics/Y over X",
        f"{base}/metrics/ROC",
        f"{base}/output",
        f"/api/v1/runs?experiment={experiment.name}",
    ]
    answers: dict[str, Any] = {}
    for path in paths:
        response = await api.get(path)
        assert 200 == response.status, path
        answers[path] = await response.json()
    response = await api.get(f"{base}/files/notes.txt")
    answers["file"] = await response.read()
    return answers


def exact(value: Any) -> Any:
    """``value`` with every float as its bit pattern: NaN equals NaN, -0.0 differs from 0.0,
    and an int stays unlike a float."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | collections.deque):
        return [type(value).__name__, *map(exact, value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return exact(dataclasses.asdict(value))
    return (type(value).__name__, value)


def run_keys(client: redis.Redis, workspace: Workspace, run_id: str) -> set[str]:
    """The parts of the run's keys that exist in Redis (``meta``, ``m:loss``, ...)."""
    prefix = f"{workspace.keys.prefix}:{workspace.name}:{{{run_id}}}:"
    return {key.decode().removeprefix(prefix) for key in client.scan_iter(match=f"{prefix}*")}


@pytest.fixture
def archived_run(
    experiment: Experiment,
    start_collector: Callable[..., CollectorThread],
    image: Path,
    client: redis.Redis,
) -> tuple[Run, dict[str, Any], set[str]]:
    """A run with every shape, its reads before the archive, and its Redis keys before; then archived
    (``run.archive()``: the collector's own archiving is in tests/test_lifecycle.py's retention)."""
    start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
    run = experiment.start_logging(display_name="everything")
    log_everything(run, image)
    run.complete()
    keys = experiment.workspace.keys
    wait_until(lambda: client.xlen(keys.live(run.id)) == 1, 30, "the ended run's live stream trimmed")
    before = asyncio.run(_reads(experiment.workspace, run.id))
    keys_before = run_keys(client, experiment.workspace, run.id)
    assert run.archive()
    return run, before, keys_before


async def _reads(workspace: Workspace, run_id: str) -> dict[str, Any]:
    async with connect(workspace.settings.redis_url) as redis_client:
        return await every_read(RecordReader(redis_client, workspace.keys), run_id)


class TestArchived:
    def test_reads_the_same(self, experiment: Experiment, archived_run: tuple[Run, dict[str, Any], set[str]]) -> None:
        run, before, _ = archived_run
        after = asyncio.run(_reads(experiment.workspace, run.id))

        assert before.keys() == after.keys()
        for what in before:
            assert exact(before[what]) == exact(after[what]), what
        assert "cnn" == after["tags"]["model"]
        assert [1.0 / (1 + s) for s in range(300)] == after["metrics"]["loss"]
        assert 3 == after["metrics"]["epochs"]
        assert isinstance(after["metrics"]["epochs"], int)
        assert after["metrics"]["flag"] is True
        assert [1, 2.5, 3] == after["metrics"]["mixed"]
        assert [type(v) for v in after["metrics"]["mixed"]] == [int, float, int]

    def test_gives_back_its_keys(
        self, experiment: Experiment, archived_run: tuple[Run, dict[str, Any], set[str]], client: redis.Redis
    ) -> None:
        run, _, keys_before = archived_run

        assert {"t:loss", "v:Y over X", "out", "tags", "props", "metrics", "counts", "files", "children"} <= keys_before
        assert STUB == run_keys(client, experiment.workspace, run.id)
        assert client.zscore(experiment.workspace.keys.archive_due(), run.id) is None
        folder = experiment.workspace.settings.data_dir / "archive" / "rs" / experiment.workspace.name / "runs"
        assert {"manifest.json", "series.parquet", "output.parquet", "record.msgpack.z"} == {
            p.name for p in (folder / run.id).iterdir()
        }

    def test_the_python_api_reads_the_same(
        self, archived_run: tuple[Run, dict[str, Any], set[str]], experiment: Experiment
    ) -> None:
        run, before, _ = archived_run
        again = Run(experiment, run.id)

        assert exact(before["metrics"]) == exact(again.get_metrics())
        assert before["tags"] == again.get_tags()
        assert "Completed" == again.get_status()
        assert [c.id for c in run.get_children()] == before["children"]
        assert {"child loss": 0.5} == Run(experiment, before["children"][0]).get_metrics()


class TestRestApi:
    async def test_every_route_answers_the_same(
        self,
        experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        image: Path,
        client: redis.Redis,
        aiohttp_client: AiohttpClient,
    ) -> None:
        start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=3600.0)
        api = await aiohttp_client(create_app(ServerSettings(workspace=experiment.workspace.settings)))
        run = experiment.start_logging()
        await asyncio.to_thread(log_everything, run, image)
        await asyncio.to_thread(run.complete)
        keys = experiment.workspace.keys
        await asyncio.to_thread(wait_until, lambda: client.zscore(keys.archive_due(), run.id) is not None)
        before = await every_route(api, run, experiment)

        async with connect(experiment.workspace.settings.redis_url) as redis_client:
            store = open_store(None, experiment.workspace.settings.data_dir)
            archived = await Archiver(redis_client, keys, store, structlog.get_logger()).archive(run.id)
        after = await every_route(api, run, experiment)

        assert isinstance(archived, Archived)
        assert before["/api/v1/runs/{run.id}/output".replace("{run.id}", run.id)]["lines"]
        assert exact(before) == exact(after)
        assert 50 >= len(after[f"/api/v1/runs/{run.id}/metrics/loss?max_points=50"]["values"])
        assert STUB == run_keys(client, experiment.workspace, run.id)


class TestFollowers:
    """What follows a run (the page's event stream, the notebook widget) sees an archived run as
    it saw the ended run in Redis."""

    async def test_the_event_stream_and_the_widget(
        self,
        experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        image: Path,
        client: redis.Redis,
        aiohttp_client: AiohttpClient,
    ) -> None:
        start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
        api = await aiohttp_client(create_app(ServerSettings(workspace=experiment.workspace.settings)))
        run = experiment.start_logging()
        await asyncio.to_thread(log_everything, run, image)
        await asyncio.to_thread(run.complete)
        keys = experiment.workspace.keys
        await asyncio.to_thread(wait_until, lambda: client.xlen(keys.live(run.id)) == 1, 30, "trimmed")
        before = (await followed(api, run.id), await widget_state(experiment.workspace, run.id))
        assert await asyncio.to_thread(run.archive)

        after = (await followed(api, run.id), await widget_state(experiment.workspace, run.id))

        assert exact(before) == exact(after)
        events, (state, _) = after
        assert ["message", "message", "end"] == [event for event, _ in events]
        assert "resync" in events[0][1]  # told to read the record: its history is there
        assert "Completed" in events[1][1]
        assert "Completed" == state["status"]
        assert 300 == state["metrics"]["loss"]["count"]


async def followed(api: TestClient[Any, Any], run_id: str) -> list[tuple[str, str]]:
    """The run's event stream from the start, as the page reads it: each event and its data."""
    async with api.get(f"/api/v1/runs/{run_id}/events", params={"from": "0-0"}) as response:
        return [(m.event, m.data) for m in await asyncio.wait_for(collect_sse(response), 30)]


async def widget_state(workspace: Workspace, run_id: str) -> tuple[dict[str, Any], str]:
    """What the notebook widget makes of the run's record, and the live id it follows from."""
    async with connect(workspace.settings.redis_url) as redis_client:
        state = RunState("run", 2000, 100)
        live_id = await read_record(RecordReader(redis_client, workspace.keys), run_id, state)
    return dataclasses.asdict(state), live_id


class TestLateBatch:
    """A batch for an archived run (a straggling producer) is applied, not lost: the run is
    restored into Redis, and archived again later with it."""

    def test_applied_after_a_restore(
        self,
        experiment: Experiment,
        archived_run: tuple[Run, dict[str, Any], set[str]],
        client: redis.Redis,
    ) -> None:
        run, before, _ = archived_run
        keys = experiment.workspace.keys
        late = Run(experiment, run.id)
        late.log("late", 7.0)
        late.flush()

        wait_until(lambda: "late" in Run(experiment, run.id).get_metrics(), 30, "the late point applied")
        metrics = Run(experiment, run.id).get_metrics()
        restored = client.hget(keys.meta(run.id), "archive") is None
        assert Run(experiment, run.id).archive()
        archived_again = Run(experiment, run.id).get_metrics()

        assert restored
        assert exact({**before["metrics"], "late": 7.0}) == exact(metrics)
        assert exact(metrics) == exact(archived_again)
        assert "Completed" == Run(experiment, run.id).get_status()


class TestArchiverDirectly:
    async def test_a_running_run_is_not_archived(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], redis_url: str, tmp_path: Path
    ) -> None:
        start_collector(experiment.workspace, archive_after=None)
        run = experiment.start_logging()
        run.log("loss", 1.0)
        run.flush()
        await asyncio.to_thread(wait_until, lambda: run.get_status() == "Running")
        async with connect(redis_url) as redis_client:
            archiver = Archiver(
                redis_client, experiment.workspace.keys, open_store(None, tmp_path), structlog.get_logger()
            )
            result = await archiver.archive(run.id)
            missing = await archiver.archive(f"{experiment.name}_1_00000000")
        run.complete()

        assert ("not_final", "missing") == (result, missing)
        assert not any((tmp_path / "archive").iterdir())
