"""Reading a run's record through the Run API: shapes, read-your-writes, children, runs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from runstream import Experiment, Run
from runstream.codec import Batch, encode_batch
from runstream.connection import connect
from runstream.consumer.reader import RecordNotReadyError
from runstream.consumer.subscribe import Resynced, Update, subscribe
from runstream.consumer.wait import RunFailedError
from runstream.events import MetricsLogged, OutputLogged, StatusChanged
from tests.conftest import CollectorThread, make_workspace


@pytest.fixture
def collected(experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> Experiment:
    """The experiment, with a collector running for its workspace."""
    start_collector(experiment.workspace)
    return experiment


class TestGetMetrics:
    """``get_metrics`` returns exactly the shapes of DESIGN §2's table, right after logging."""

    def test_every_shape(self, collected: Experiment, tmp_path: Path) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(b"\x89PNG")
        run = collected.start_logging()
        run.log("alpha", 0.03)
        for v in (1.0, 0.5, math.inf):
            run.log("loss", v)
        run.log("epochs", 3)
        run.log("name", "ünïcode ✓")
        run.log_list("accuracy", [0.6, 0.7])
        run.log_list("accuracy", [0.87])
        run.log("both", 1.0)
        run.log_list("both", [2.0, 3.0])
        run.log_row("Y over X", x=1, y=0.4)
        run.log_row("Y over X", x=2, y=0.5)
        run.log_table("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]})
        run.log_table("Sine Wave", {"angle": [2], "sine": [0.91]})
        run.log_image("ROC", path=image)
        run.log_image("many", path=image)
        run.log_image("many", path=image)
        run.log("nan", math.nan)

        metrics = run.get_metrics()
        run.complete()

        nan = metrics.pop("nan")
        assert isinstance(nan, float)
        assert math.isnan(nan)
        assert {
            "alpha": 0.03,
            "loss": [1.0, 0.5, math.inf],
            "epochs": 3,
            "name": "ünïcode ✓",
            "accuracy": [0.6, 0.7, 0.87],
            "both": [1.0, 2.0, 3.0],
            "Y over X": {"x": [1, 2], "y": [0.4, 0.5]},
            "Sine Wave": {"angle": [0, 1, 2], "sine": [0.0, 0.84, 0.91]},
            "ROC": "roc.png",
            "many": ["roc_1.png", "roc_2.png"],
        } == metrics
        assert int is type(metrics["epochs"])
        assert {"loss": [1.0, 0.5, math.inf]} == run.get_metrics("loss")
        assert {} == run.get_metrics("absent")

    def test_two_processes_giving_one_name_two_kinds(self, collected: Experiment, tmp_path: Path) -> None:
        """Each process refuses a second kind, but two processes of one run cannot see each
        other: the record keeps the first kind, and reading it does not fail."""
        image = tmp_path / "roc.png"
        image.write_bytes(b"\x89PNG")
        run = collected.start_logging()
        run.log_table("fit", {"x": [1, 2]})
        run.flush()
        other = Run(collected, run.id)  # as another process of the run would
        other.log_image("fit", path=image)
        other.flush()

        metrics = run.get_metrics()
        run.complete()

        assert {"fit": {"x": [1, 2]}} == metrics


class TestRunInfo:
    """Status, tags, properties, details and children read back from the record."""

    def test_details(self, collected: Experiment) -> None:
        run = collected.start_logging(display_name="trial")
        run.tag("a", "1")
        run.add_properties({"k": "v"})
        run.upload_file("outputs/x.txt", __file__)
        child = run.child_run("child")
        child.complete()

        assert "Running" == run.get_status()
        assert {"a": "1"} == run.get_tags()
        assert {"k": "v"} == run.get_properties()
        assert [child.id] == [c.id for c in run.get_children()]
        run.fail("bad luck")
        details = run.get_details()

        assert ("Failed", "bad luck", "trial", ["outputs/x.txt"]) == (
            details["status"],
            details["error"],
            details["displayName"],
            details["files"],
        )
        assert details["startTimeUtc"] <= details["endTimeUtc"]

    def test_runs_newest_first(self, collected: Experiment) -> None:
        first = collected.start_logging()
        first.complete()
        second = collected.start_logging()
        second.complete()

        assert [second.id, first.id] == [r.id for r in collected.get_runs()][:2]

    def test_another_process_view(self, collected: Experiment) -> None:
        run = collected.start_logging()
        run.log("x", 1)
        run.complete()

        assert {"x": 1} == Run(collected, run.id).get_metrics()


class TestNoCollector:
    """Without a collector, a read says why it cannot answer."""

    def test_read_names_the_cause(self, redis_url: str, tmp_path: Path) -> None:
        workspace = make_workspace(redis_url, tmp_path / ".runstream")
        run = Experiment(workspace, "lonely").start_logging()
        run.log("x", 1)

        with pytest.raises(RecordNotReadyError, match="no collector is running"):
            run._read(lambda reader: reader.metrics(run.id), bound=0.3)
        run.complete()


class TestWaitForCompletion:
    """``wait_for_completion`` returns the details at the end, raising on Failed."""

    def test_waits_for_another_run_object(self, collected: Experiment) -> None:
        run = collected.start_logging()
        watcher = Run(collected, run.id)
        run.log("x", 1)
        run.complete()

        details = watcher.wait_for_completion(timeout=30)

        assert ("Completed", run.id) == (details["status"], details["runId"])

    def test_raises_on_failed(self, collected: Experiment) -> None:
        run = collected.start_logging()
        run.fail("diverged")

        with pytest.raises(RunFailedError, match="diverged"):
            Run(collected, run.id).wait_for_completion(timeout=30)

    def test_times_out(self, collected: Experiment) -> None:
        run = collected.start_logging()

        with pytest.raises(TimeoutError):
            Run(collected, run.id).wait_for_completion(timeout=0.5)
        run.complete()


class TestSubscribe:
    """A subscriber sees every update once, in order, and resumes from its last id."""

    async def test_resume_misses_nothing(self, collected: Experiment) -> None:
        workspace = collected.workspace
        run = collected.start_logging()
        for i in range(5):
            run.log("x", i)
            run.flush()
        run.get_status()  # read-your-writes: all five applied
        async with connect(workspace.settings.redis_url) as client:
            first: list[Update] = []
            async for item in subscribe(client, workspace.keys, run.id):
                assert isinstance(item, Update)
                first.append(item)
                if len(first) == 3:
                    break
            for i in range(5, 8):
                run.log("x", i)
            run.complete()
            rest = [i async for i in subscribe(client, workspace.keys, run.id, start=first[-1].id)]

        values = [
            v
            for u in [*first, *rest]
            if isinstance(u, Update) and isinstance(u.event, MetricsLogged)
            for v in u.event.values
        ]
        assert list(range(8)) == values
        assert isinstance(rest[-1], Update)
        assert isinstance(rest[-1].event, StatusChanged)


class TestSubscribersAtAnyTime:
    """Subscribers started before, during and after a run each see every update once, in order."""

    async def test_before_during_after(self, collected: Experiment) -> None:
        workspace = collected.workspace
        run = collected.start_logging()
        run.get_status()  # the record exists

        async def follow() -> list[Update]:
            async with connect(workspace.settings.redis_url) as client:
                return [u async for u in subscribe(client, workspace.keys, run.id) if isinstance(u, Update)]

        before = asyncio.create_task(follow())
        for i in range(300):
            run.log("x", i)
            if i % 50 == 0:
                await run.aflush()
        during = asyncio.create_task(follow())
        for i in range(300, 600):
            run.log("x", i)
        await asyncio.to_thread(run.complete)
        after = await follow()

        seen = [await before, await during, after]
        for updates in seen:
            values = [v for u in updates if isinstance(u.event, MetricsLogged) for v in u.event.values]
            ids = [u.id for u in updates]
            assert list(range(600)) == values
            assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
            assert isinstance(updates[-1].event, StatusChanged)


class TestShowOutput:
    """``wait_for_completion(show_output=True)`` prints the run's output lines in order."""

    def test_lines_in_order(self, collected: Experiment, capsys: pytest.CaptureFixture[str]) -> None:
        run = collected.start_logging()
        producer = Batch(run.id, "output-capture", 1, [OutputLogged("stdout", [f"line {i}" for i in range(5)], 1.0)])
        client = redis.Redis.from_url(collected.workspace.settings.redis_url)
        client.xadd(collected.workspace.keys.ingest_for(run.id), dict(encode_batch(producer)))  # type: ignore[arg-type]  # redis-py's field types
        client.close()
        run.complete()

        Run(collected, run.id).wait_for_completion(show_output=True, timeout=30)

        assert [f"line {i}" for i in range(5)] == capsys.readouterr().out.splitlines()


class TestSyncSubscribe:
    """``run.subscribe()`` is the same stream for code without asyncio."""

    def test_blocking_iterator(self, collected: Experiment) -> None:
        run = collected.start_logging()
        run.log("ω loss", 1.5)
        run.complete()

        events = [u.event for u in Run(collected, run.id).subscribe() if isinstance(u, Update)]

        assert ["run_started", "metric", "status"] == [e.TYPE for e in events]
        assert isinstance(events[1], MetricsLogged)
        assert ("ω loss", [1.5]) == (events[1].name, events[1].values)
        assert {"ω loss": 1.5} == run.get_metrics()

    def test_leaving_early(self, collected: Experiment) -> None:
        run = collected.start_logging()
        run.log("x", 1)
        run.get_status()

        for update in Run(collected, run.id).subscribe(until_final=False):
            assert isinstance(update, Update)
            break
        run.complete()

        assert "Completed" == run.get_status()


class TestFellBehind:
    """A subscriber resuming from a point trimmed off the live stream is told to resync."""

    async def test_resync_notice(self, collected: Experiment) -> None:
        workspace = collected.workspace
        run = collected.start_logging()
        for i in range(3):
            run.log("x", i)
            run.flush()
        run.get_status()
        async with connect(workspace.settings.redis_url) as client:
            first: list[Update] = []
            async for item in subscribe(client, workspace.keys, run.id):
                assert isinstance(item, Update)
                first.append(item)
                break
            await client.xtrim(workspace.keys.live(run.id), maxlen=1, approximate=False)
            run.complete()
            resumed = [i async for i in subscribe(client, workspace.keys, run.id, start=first[0].id)]

        assert isinstance(resumed[0], Resynced)
        assert isinstance(resumed[-1], Update)
        assert isinstance(resumed[-1].event, StatusChanged)
