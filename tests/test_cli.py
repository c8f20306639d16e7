"""The ``runstream`` command: runs, show, tail, wait, cancel, with exit codes a shell relies on."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from runstream import Experiment
from runstream.consumer.cli import main
from runstream.consumer.subscribe import Resynced, Update
from runstream.consumer.updates import describe, to_json
from runstream.events import MetricsLogged
from runstream.keys import Keys
from tests.conftest import CollectorThread


@pytest.fixture
def cli(
    experiment: Experiment, start_collector: Callable[..., CollectorThread], monkeypatch: pytest.MonkeyPatch
) -> Experiment:
    """The experiment's workspace in the environment the CLI reads, and a collector running."""
    settings = experiment.workspace.settings
    monkeypatch.setenv("RUNSTREAM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RUNSTREAM_WORKSPACE", settings.workspace)
    monkeypatch.setenv("RUNSTREAM_DATA_DIR", str(settings.data_dir))
    start_collector(experiment.workspace)
    return experiment


class TestRunsAndShow:
    """``runs`` lists runs newest first; ``show`` summarises one."""

    def test_runs_table(self, cli: Experiment) -> None:
        with cli.start_logging() as run:
            run.tag("lr", "0.1")

        result = CliRunner().invoke(main, ["runs", "tests"])

        assert 0 == result.exit_code, result.output
        assert ["RUN", "STATUS"] == result.output.splitlines()[0].split()[:2]
        assert run.id in result.output
        assert "Completed" in result.output
        assert "lr=0.1" in result.output

    def test_show(self, cli: Experiment) -> None:
        with cli.start_logging() as run:
            for v in (3.0, 1.0, 2.0):
                run.log("loss", v)
            run.tag("model", "cnn")

        result = CliRunner().invoke(main, ["show", run.id])

        assert 0 == result.exit_code, result.output
        assert "status   Completed" in result.output
        assert "model=cnn" in result.output
        assert "loss: last 2.0  min 1.0  max 3.0  (3 points)" in result.output

    def test_run_logged_a_moment_ago_is_not_unknown(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run still in the ingest stream is waited for while a collector is alive, not called unknown."""
        settings = experiment.workspace.settings
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", settings.workspace)
        with experiment.start_logging() as run:
            run.log("loss", 1.0)
        # The collector has reported (it is alive) but reaches the run's shard only later.
        keys = Keys(settings.workspace, settings.key_prefix, settings.shards)
        with redis.Redis.from_url(settings.redis_url) as client:
            client.hset(keys.collectors(), "late", json.dumps({"updated_at": time.time()}))
        threading.Timer(0.5, start_collector, [experiment.workspace], {"reader": "late"}).start()

        result = CliRunner().invoke(main, ["show", run.id])

        assert 0 == result.exit_code, result.output
        assert "status   Completed" in result.output

    def test_unknown_run(self, cli: Experiment) -> None:
        result = CliRunner().invoke(main, ["show", "nope_1_00000000"])

        assert 4 == result.exit_code


class TestWait:
    """``wait`` exits 0 Completed, 1 Failed, 2 Canceled, 3 on timeout."""

    @pytest.mark.parametrize(("end", "code"), [("complete", 0), ("fail", 1), ("cancel", 2)])
    def test_exit_codes(self, cli: Experiment, end: str, code: int) -> None:
        run = cli.start_logging()
        getattr(run, end)()

        result = CliRunner().invoke(main, ["wait", run.id])

        assert code == result.exit_code, result.output

    def test_timeout(self, cli: Experiment) -> None:
        run = cli.start_logging()
        assert "Running" == run.get_status()  # in the record before the CLI looks

        result = CliRunner().invoke(main, ["wait", run.id, "--timeout", "0.3"])
        run.complete()

        assert 3 == result.exit_code


class TestTailAndCancel:
    """``tail --from-start --json`` prints every update until the run ends; ``cancel`` ends it."""

    def test_tail_json(self, cli: Experiment) -> None:
        with cli.start_logging() as run:
            run.log("loss", 0.5)
            run.tag("k", "v")

        result = CliRunner().invoke(main, ["tail", run.id, "--from-start", "--json"])

        lines = [json.loads(line) for line in result.output.splitlines()]
        assert 0 == result.exit_code, result.output
        assert ["run_started", "metric", "tag", "status"] == [line["type"] for line in lines]
        assert [0.5] == lines[1]["values"]
        assert "Completed" == lines[-1]["status"]

    def test_cancel(self, cli: Experiment) -> None:
        run = cli.start_logging()
        assert "Running" == run.get_status()  # in the record before the CLI looks

        result = CliRunner().invoke(main, ["cancel", run.id])

        assert 0 == result.exit_code, result.output
        assert "Canceled" == run.get_status()

    def test_tail_text(self, cli: Experiment) -> None:
        with cli.start_logging() as run:
            for i in range(3):
                run.log("loss", i * 0.5)
            run.tag("k", "v")
            run.fail("nan loss")

        result = CliRunner().invoke(main, ["tail", run.id, "--from-start"])

        lines = result.output.splitlines()
        assert 0 == result.exit_code, result.output
        assert lines[0].startswith("run_started ")
        assert "loss steps 0..2: 3 points, last 1.0" == lines[1]
        assert "tag tags={'k': 'v'}" == lines[2]
        assert "status Failed: nan loss" == lines[3]


class TestTailReadable:
    """``tail`` of an ended run prints its history and returns; a fast run reads as a summary."""

    def test_an_ended_run_prints_its_history_and_returns(self, cli: Experiment) -> None:
        with cli.start_logging() as run:
            for i in range(5):
                run.log("loss", 1.0 / (1 + i))
                run.log("epoch", i)
            run.log("note", "done")

        done: list[str] = []
        tail = threading.Thread(target=lambda: done.append(CliRunner().invoke(main, ["tail", run.id]).output))
        tail.start()
        tail.join(30)

        assert not tail.is_alive(), "tail of an ended run did not return"
        assert [
            "epoch steps 0..4: 5 points, last 4",
            "loss steps 0..4: 5 points, last 0.2",
            "note steps 0..0: 1 points, last 'done'",
            "status Completed",
        ] == done[0].splitlines()
        only_loss = CliRunner().invoke(main, ["tail", run.id, "--metric", "loss", "--json"])
        assert ["loss", None] == [json.loads(line).get("name") for line in only_loss.output.splitlines()]

    def test_a_fast_run_as_a_summary_of_the_metrics_asked_for(self, cli: Experiment) -> None:
        run = cli.start_logging()
        assert "Running" == run.get_status()  # in the record before the CLI looks

        def train() -> None:
            for step in range(20):
                for i in range(500):
                    run.log("loss", 1.0 / (1 + step * 500 + i))
                    run.log("acc", 0.5)
                run.flush()
                time.sleep(0.03)
            run.complete()

        trainer = threading.Thread(target=train)
        trainer.start()
        result = CliRunner().invoke(main, ["tail", run.id, "--from-start", "--every", "0.1", "--metric", "loss"])
        trainer.join()

        lines = result.output.splitlines()
        summaries = [line for line in lines if " loss step " in line]
        assert 0 == result.exit_code, result.output
        assert not any("acc" in line for line in lines)
        assert 2 <= len(summaries) < 100  # a line a tenth of a second, not one per update
        assert 10_000 == sum(_points_since(line) for line in summaries)
        assert summaries[-1].split(": ")[0].endswith("loss step 9999")
        assert "status Completed" == lines[-1]


def _points_since(summary: str) -> int:
    """The points a summary line counts since the one before (``... (+1,234, 5,678/s)``)."""
    found = re.search(r"\(\+([\d,]+), ", summary)
    assert found is not None, summary
    return int(found[1].replace(",", ""))


class TestJsonUpdates:
    """Updates become JSON that any client can parse: no bare NaN or infinities."""

    def test_non_finite_values(self) -> None:
        update = Update("1-0", MetricsLogged("x", range(3), [math.nan, math.inf, -math.inf], 1.0))

        assert {
            "id": "1-0",
            "type": "metric",
            "name": "x",
            "steps": [0, 1, 2],
            "values": ["NaN", "Infinity", "-Infinity"],
            "timestamp": 1.0,
        } == to_json(update)
        assert "x steps 0..2: 3 points, last -inf" == describe(update)
        assert {"type": "resync", "after": "1-0", "reason": "trimmed"} == to_json(Resynced("1-0", "trimmed"))
        assert "(resync: trimmed)" == describe(Resynced("1-0", "trimmed"))
