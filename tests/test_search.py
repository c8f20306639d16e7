"""Search across runs, live and archived alike: the filter syntax, its answers, and every door to it.

Against the session's real Redis and collectors: a small sweep of runs with metrics,
parameters and tags, some archived, some still running; filters and sort keys from
Python, REST and the CLI give the runs a user expects, the same before and after the
archive, and a malformed filter is refused with where it went wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest
import redis
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run
from runstream.consumer.cli import main
from runstream.consumer.search_filter import Clause, FilterError, SortKey, parse_filter, parse_order_by
from runstream.consumer.server import ServerSettings, create_app
from tests.conftest import CollectorThread, wait_until

#: The sweep: (learning rate, model, final loss, fails).
SWEEP = [(0.1, "cnn", 0.30, False), (0.01, "cnn", 0.05, False), (0.001, "mlp", 0.08, False), (0.01, "mlp", 0.5, True)]


class TestSyntax:
    @pytest.mark.parametrize(
        ("text", "count"),
        [
            ("metrics.loss < 0.1", 1),
            ("min(metrics.loss) <= 0.05 and max(metrics.`val/acc`) > 0.9", 2),
            ("params.lr = 0.01 AND tags.model = 'cnn' and attributes.status = \"Completed\"", 3),
            ("tags.model != 'cnn'", 1),
            ("tags.`team name` IS NOT NULL and tags.x is null", 2),
            ("attributes.name LIKE 'sweep-%'", 1),
            ("attribute.start_time > 1.5e9", 1),
            ("", 0),
        ],
    )
    def test_reads(self, text: str, count: int) -> None:
        clauses = parse_filter(text)

        assert count == len(clauses)
        assert all(isinstance(c, Clause) for c in clauses)

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("loss < 0.1", "metrics., params., tags. or attributes. expected"),
            ("metrics.loss <", "a value expected"),
            ("metrics.loss < 0.1 or tags.x = 'y'", "'and' expected"),
            ("attributes.colour = 'red'", "no attribute 'colour'"),
            ("min(tags.model) = 'x'", "applies to metrics only"),
            ("metrics.loss ~ 3", "cannot read"),
            ("metrics.loss = cnn", "a number or a 'quoted' value"),
            ("tags.x IS 'y'", "NULL after IS"),
        ],
    )
    def test_refuses_with_where(self, text: str, says: str) -> None:
        with pytest.raises(FilterError, match=says):
            parse_filter(text)

    def test_sort_keys(self) -> None:
        keys = parse_order_by(["metrics.loss DESC", "attributes.created"])

        assert [("loss", True), ("created", False)] == [(k.field.key, k.descending) for k in keys]
        assert all(isinstance(k, SortKey) for k in keys)
        with pytest.raises(FilterError, match="ASC or DESC"):
            parse_order_by("metrics.loss sideways")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def sweep(experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> dict[str, Run]:
    """Four ended runs of a sweep (one Failed) and one still running, by name."""
    start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
    runs: dict[str, Run] = {}
    for n, (lr, model, final, fails) in enumerate(SWEEP):
        run = experiment.start_logging(display_name=f"sweep-{n}")
        run.add_properties({"lr": str(lr)})
        run.tag("model", model)
        for step in range(50):
            run.log("loss", final + (1 - final) * math.exp(-step / 5))
        run.log("acc", 1 - final)
        if fails:
            run.fail(error_details="diverged")
        else:
            run.complete()
        runs[f"sweep-{n}"] = run
    running = experiment.start_logging(display_name="running")
    running.tag("model", "cnn")
    running.log("loss", 0.01)
    running.flush()
    wait_until(lambda: running.get_status() == "Running")
    runs["running"] = running
    return runs


def names(runs: Iterable[Run], sweep: dict[str, Run]) -> list[str]:
    by_id = {run.id: name for name, run in sweep.items()}
    return [by_id[run.id] for run in runs]


class TestAnswers:
    CASES: list[tuple[str, list[str] | None, list[str]]] = [  # noqa: RUF012  # read-only table
        ("metrics.loss < 0.1", ["metrics.loss ASC"], ["running", "sweep-1", "sweep-2"]),
        ("params.lr = 0.01", ["attributes.name"], ["sweep-1", "sweep-3"]),
        ("tags.model = 'cnn' and attributes.status = 'Completed'", ["attributes.name DESC"], ["sweep-1", "sweep-0"]),
        ("tags.model != 'cnn'", ["attributes.name"], ["sweep-2", "sweep-3"]),
        ("attributes.status = 'Failed'", None, ["sweep-3"]),
        ("min(metrics.loss) < 0.06 and max(metrics.loss) >= 1", None, ["sweep-1"]),
        ("metrics.acc IS NULL", None, ["running"]),
        ("attributes.name LIKE 'sweep-%' and params.lr < 0.01", None, ["sweep-2"]),
    ]

    @pytest.mark.parametrize(("text", "order_by", "expected"), CASES, ids=[c[0] for c in CASES])
    def test_filter(
        self, experiment: Experiment, sweep: dict[str, Run], text: str, order_by: list[str] | None, expected: list[str]
    ) -> None:
        found = names(experiment.get_runs(filter=text, order_by=order_by), sweep)

        assert (expected if order_by else sorted(expected)) == (found if order_by else sorted(found))

    def test_the_same_once_archived(self, experiment: Experiment, sweep: dict[str, Run], client: redis.Redis) -> None:
        texts = [text for text, _, _ in self.CASES]
        before = [sorted(names(experiment.get_runs(filter=t), sweep)) for t in texts]
        archived = experiment.archive()

        after = [sorted(names(experiment.get_runs(filter=t), sweep)) for t in texts]

        assert 4 == len(archived)
        assert before == after
        assert all(client.hget(experiment.workspace.keys.meta(r), "archive") for r in archived)

    def test_sorted_with_the_missing_last_and_paged(self, experiment: Experiment, sweep: dict[str, Run]) -> None:
        by_acc = names(experiment.get_runs(order_by="metrics.acc DESC"), sweep)
        first_two = names(experiment.get_runs(order_by="metrics.acc DESC", limit=2), sweep)

        assert ["sweep-1", "sweep-2", "sweep-0", "sweep-3", "running"] == by_acc
        assert by_acc[:2] == first_two

    def test_ended_runs_are_summed_up_once(
        self, experiment: Experiment, sweep: dict[str, Run], client: redis.Redis
    ) -> None:
        experiment.get_runs(filter="metrics.loss < 1")
        kept = {key.decode() for key in cast("list[bytes]", client.hkeys(experiment.workspace.keys.summaries()))}

        assert {run.id for name, run in sweep.items() if name != "running"} == kept

    def test_a_batch_applied_after_the_end_is_found(
        self, experiment: Experiment, sweep: dict[str, Run], client: redis.Redis
    ) -> None:
        ended = sweep["sweep-0"]
        experiment.get_runs(filter="metrics.loss < 1")  # its summary made and kept
        kept_before = client.hexists(experiment.workspace.keys.summaries(), ended.id)
        late = Run(experiment, ended.id)  # a straggling producer of the run
        late.log("late", 7.0)
        late.flush()
        wait_until(lambda: "late" in Run(experiment, ended.id).get_metrics(), 30, "the late point applied")

        found = names(experiment.get_runs(filter="metrics.late = 7"), sweep)

        assert kept_before
        assert ["sweep-0"] == found

    def test_a_running_run_is_found_as_it_is_now(self, experiment: Experiment, sweep: dict[str, Run]) -> None:
        running = sweep["running"]
        cnn = names(experiment.get_runs(filter="metrics.loss < 0.1 and tags.model = 'cnn'"), sweep)
        running.log("loss", 0.5)
        running.tag("model", "transformer")
        running.flush()
        wait_until(lambda: [0.01, 0.5] == running.get_metrics()["loss"], 30, "the second point applied")
        wait_until(lambda: "transformer" == running.get_tags()["model"], 30, "the tag applied")
        changed = names(experiment.get_runs(filter="metrics.loss >= 0.5 and tags.model = 'transformer'"), sweep)
        running.complete()
        completed = "attributes.status = 'Completed' and tags.model = 'transformer'"
        ended = names(experiment.get_runs(filter=completed), sweep)

        assert "running" in cnn
        assert ["running"] == changed
        assert "running" in ended

    def test_frames(self, experiment: Experiment, sweep: dict[str, Run]) -> None:
        frame = experiment.get_runs_frame(filter="tags.model = 'cnn'", order_by="metrics.loss")
        points = sweep["sweep-1"].get_metrics_frame("loss")

        assert ["running", "sweep-1", "sweep-0"] == list(frame["name"])
        assert {"run_id", "status", "params.lr", "tags.model", "metrics.loss", "metrics.acc"} <= set(frame.columns)
        assert "0.01" == frame.loc[frame["name"] == "sweep-1", "params.lr"].item()
        assert pd.api.types.is_datetime64_any_dtype(frame["created"])
        assert (50, ["metric", "step", "value", "time"]) == (len(points), list(points.columns))
        assert list(range(50)) == list(points["step"])
        assert sweep["sweep-1"].get_metrics()["loss"] == list(points["value"])


class TestDoors:
    async def test_rest(self, experiment: Experiment, sweep: dict[str, Run], aiohttp_client: AiohttpClient) -> None:
        api: TestClient[Any, Any] = await aiohttp_client(
            create_app(ServerSettings(workspace=experiment.workspace.settings))
        )
        query = {
            "experiment": experiment.name,
            "filter": "metrics.loss < 0.1",
            "order_by": "metrics.loss",
            "limit": "2",
        }

        found = await api.get("/api/v1/runs", params=query)
        body = await found.json()
        tagged = await (await api.get("/api/v1/runs", params={"tag": "model", "status": "Failed"})).json()
        bad = await api.get("/api/v1/runs", params={"filter": "loss < 1"})

        assert 200 == found.status
        assert 3 == body["total"]
        assert [sweep["running"].id, sweep["sweep-1"].id] == [r["id"] for r in body["runs"]]
        assert 0.05 + 0.95 * math.exp(-49 / 5) == body["runs"][1]["metrics"]["loss"]
        assert {"last", "min", "max"} == set(body["runs"][1]["metric_stats"]["loss"])
        assert [sweep["sweep-3"].id] == [r["id"] for r in tagged["runs"]]
        assert 400 == bad.status
        assert "metrics., params., tags. or attributes. expected" in (await bad.json())["error"]["message"]

    def test_cli(self, experiment: Experiment, sweep: dict[str, Run], monkeypatch: pytest.MonkeyPatch) -> None:
        settings = experiment.workspace.settings
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", experiment.workspace.name)
        cli = CliRunner()

        found = cli.invoke(
            main, ["runs", experiment.name, "--filter", "params.lr = 0.01", "--order-by", "metrics.loss"]
        )
        bad = cli.invoke(main, ["runs", "--filter", "metrics.loss <"])

        assert 0 == found.exit_code, found.output
        lines = found.output.splitlines()
        assert ["RUN", "STATUS"] == lines[0].split()[:2]
        assert [sweep["sweep-1"].id, sweep["sweep-3"].id] == [line.split()[0] for line in lines[1:]]
        assert (2, True) == (bad.exit_code, "a value expected" in bad.output)


class TestExport:
    def test_a_run_and_an_experiment(
        self, experiment: Experiment, sweep: dict[str, Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        run = sweep["sweep-1"]
        points = run.export(tmp_path / "points.parquet")
        runs = experiment.export(tmp_path / "runs.csv", filter="tags.model = 'cnn'")
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", experiment.workspace.settings.redis_url)
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", experiment.workspace.name)
        by_cli = CliRunner().invoke(main, ["export", run.id, "-o", str(tmp_path / "cli.csv")])

        read_back = pd.read_parquet(points)
        assert run.get_metrics()["loss"] == list(read_back.loc[read_back["metric"] == "loss", "value"])
        assert [run.get_metrics()["acc"]] == list(read_back.loc[read_back["metric"] == "acc", "value"])
        assert {"running", "sweep-0", "sweep-1"} == set(pd.read_csv(runs)["name"])
        assert (0, f"wrote {tmp_path / 'cli.csv'}\n") == (by_cli.exit_code, by_cli.output)
        assert 51 == len(pd.read_csv(tmp_path / "cli.csv"))
        with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
            run.export(tmp_path / "points.xlsx")
