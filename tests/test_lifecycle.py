"""Runs and experiments deleted, archived and restored on request, and by their retention.

Against the session's real Redis and real collectors: from Python (``run.delete()``,
``exp.archive()``, ``exp.set_retention()``), over REST (with the server's token, and
refused without it or from another site) and from the CLI.  A delete takes the record,
the archive and the files, leaves only a tombstone that drops a straggling batch, and
takes nothing else; a retention deletes and archives what it names and nothing else.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run
from runstream.archive.lifecycle import TOMBSTONE_DAYS, NotEndedError
from runstream.consumer.cli import main
from runstream.consumer.server import ServerSettings, create_app
from runstream.errors import RunstreamError
from runstream.workspace import Workspace
from tests.conftest import CollectorThread, wait_until
from tests.test_archive import STUB, exact, run_keys

TOKEN = "lifecycle-token"  # noqa: S105  # the test server's token

Client = TestClient[Any, Any]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


def ended_run(experiment: Experiment, tmp_path: Path, points: int = 20, *, child: bool = False) -> Run:
    """A Completed run with a metric, a tag, a file (and a child), in its record."""
    run = experiment.start_logging()
    for step in range(points):
        run.log("loss", 1.0 / (1 + step))
    run.tag("kind", "test")
    notes = tmp_path / f"notes-{run.id}.txt"
    notes.write_bytes(b"notes")
    run.upload_file("notes.txt", notes)
    if child:
        kid = run.child_run()
        kid.log("kid", 1.0)
        kid.complete()
    run.complete()
    return run


def record_keys(parts: set[str]) -> set[str]:
    """A record's key parts, a series' sealed list and its tail taken as one (a restored series is all sealed)."""
    return {f"series:{part[2:]}" if part.startswith(("m:", "t:")) else part for part in parts}


def is_archived(client: redis.Redis, workspace: Workspace, run_id: str) -> bool:
    return client.hget(workspace.keys.meta(run_id), "archive") is not None


def files_of(workspace: Workspace, run_id: str) -> Path:
    return workspace.settings.data_dir / "artifacts" / workspace.name / run_id


def archive_folder(workspace: Workspace, run_id: str) -> Path:
    return workspace.settings.data_dir / "archive" / workspace.keys.prefix / workspace.name / "runs" / run_id


class TestDelete:
    @pytest.fixture(autouse=True)
    def collector(self, experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> CollectorThread:
        return start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)

    def test_takes_the_record_the_files_and_the_children(
        self, experiment: Experiment, tmp_path: Path, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        run, other = ended_run(experiment, tmp_path, child=True), ended_run(experiment, tmp_path)
        kid = run.get_children()[0]
        other_before = other.get_metrics()

        deleted = run.delete()

        assert [kid.id, run.id] == deleted
        for gone in (run.id, kid.id):
            assert {"meta"} == run_keys(client, workspace, gone)  # the tombstone
            assert b"deleted" in client.hkeys(workspace.keys.meta(gone))
            assert 0 < client.ttl(workspace.keys.meta(gone)) <= TOMBSTONE_DAYS * 86_400
            assert not files_of(workspace, gone).exists()
        assert [other.id] == [r.id for r in experiment.get_runs()]
        assert exact(other_before) == exact(other.get_metrics())
        assert files_of(workspace, other.id).is_dir()
        with pytest.raises(RunstreamError, match="was deleted"):  # not a wait for a record that cannot come
            Run(experiment, run.id).get_details()

    def test_an_archived_run_takes_its_archive(
        self, experiment: Experiment, tmp_path: Path, client: redis.Redis
    ) -> None:
        run = ended_run(experiment, tmp_path)
        wait_until(lambda: client.xlen(experiment.workspace.keys.live(run.id)) == 1)
        assert run.archive()
        assert archive_folder(experiment.workspace, run.id).is_dir()

        run.delete()

        assert not archive_folder(experiment.workspace, run.id).exists()
        assert {"meta"} == run_keys(client, experiment.workspace, run.id)

    def test_a_straggling_batch_is_dropped(
        self, experiment: Experiment, collector: CollectorThread, tmp_path: Path, client: redis.Redis
    ) -> None:
        run = ended_run(experiment, tmp_path)
        run.delete()
        dropped_before = collector.stats.deduped
        late = Run(experiment, run.id)
        late.log("late", 1.0)
        late.flush()

        wait_until(lambda: collector.stats.deduped > dropped_before, 30, "the late batch read and dropped")

        assert {"meta"} == run_keys(client, experiment.workspace, run.id)
        assert run.id not in [r.id for r in experiment.get_runs()]

    def test_a_running_run_is_refused(self, experiment: Experiment, client: redis.Redis) -> None:
        run = experiment.start_logging()
        run.log("loss", 1.0)

        with pytest.raises(NotEndedError, match="cancel it"):
            run.delete()
        keys_after = run_keys(client, experiment.workspace, run.id)
        run.complete()

        assert {"meta", "seqs", "metrics", "t:loss"} <= keys_after
        assert 1.0 == run.get_metrics()["loss"]

    def test_an_experiment_goes_with_its_runs(self, experiment: Experiment, tmp_path: Path) -> None:
        runs = [ended_run(experiment, tmp_path) for _ in range(3)]
        other = Experiment(experiment.workspace, "kept")
        kept = ended_run(other, tmp_path)

        deleted = experiment.delete()

        assert sorted(r.id for r in runs) == sorted(deleted)
        assert [] == list(experiment.get_runs())
        assert [kept.id] == [r.id for r in other.get_runs()]


class TestArchiveAndRestore:
    def test_restored_reads_the_same_and_holds_its_keys(
        self,
        experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        tmp_path: Path,
        client: redis.Redis,
    ) -> None:
        start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
        run = ended_run(experiment, tmp_path, points=500)
        before, keys_before = run.get_metrics(), run_keys(client, experiment.workspace, run.id)

        archived, again = run.archive(), run.archive()
        stub = run_keys(client, experiment.workspace, run.id)
        restored = run.restore()

        assert (True, False) == (archived, again)
        assert STUB == stub
        assert restored
        assert record_keys(keys_before) == record_keys(run_keys(client, experiment.workspace, run.id))
        assert exact(before) == exact(run.get_metrics())
        assert not run.restore()  # not archived any more


class TestRetention:
    """The collector archives and deletes each experiment's runs as its retention says, and nothing else."""

    def test_each_experiment_as_it_says(
        self,
        experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        tmp_path: Path,
        client: redis.Redis,
    ) -> None:
        workspace = experiment.workspace
        deleting, kept, archiving = (Experiment(workspace, name) for name in ("deleting", "kept", "archiving"))
        deleting.set_retention(delete_after=0)
        kept.set_retention(archive_after=None)
        start_collector(workspace, live_kept_after_end=0.2, archive_after=0.0, delete_after=None)
        doomed, keeper, archived = (ended_run(e, tmp_path) for e in (deleting, kept, archiving))
        keeper_keys = run_keys(client, workspace, keeper.id)

        wait_until(lambda: run_keys(client, workspace, doomed.id) == {"meta"}, 30, "the run deleted")
        wait_until(lambda: client.hget(workspace.keys.meta(archived.id), "archive") is not None, 30, "archived")
        wait_until(lambda: client.zcard(workspace.keys.archive_due()) == 0, 30, "every run settled")

        assert [] == list(deleting.get_runs())
        assert keeper_keys == run_keys(client, workspace, keeper.id)  # kept whole in Redis
        assert client.hget(workspace.keys.meta(keeper.id), "archive") is None
        assert STUB == run_keys(client, workspace, archived.id)
        assert [1.0 / (1 + step) for step in range(20)] == archived.get_metrics()["loss"]
        assert 0 == client.zcard(workspace.keys.delete_due())

    def test_a_delete_set_later_reaches_runs_archived_before(
        self,
        experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        tmp_path: Path,
        client: redis.Redis,
    ) -> None:
        workspace = experiment.workspace
        start_collector(workspace, live_kept_after_end=0.2, archive_after=0.0)
        old, other = ended_run(experiment, tmp_path), ended_run(Experiment(workspace, "other"), tmp_path)
        for run_id in (old.id, other.id):
            wait_until(functools.partial(is_archived, client, workspace, run_id), 30, "the run archived")

        experiment.set_retention(delete_after=0)

        wait_until(lambda: run_keys(client, workspace, old.id) == {"meta"}, 30, "the old run deleted")
        assert not archive_folder(workspace, old.id).exists()
        assert STUB == run_keys(client, workspace, other.id)
        assert archive_folder(workspace, other.id).is_dir()

    def test_figures_are_checked_at_the_door(self, experiment: Experiment) -> None:
        for bad in (-1, "soon", float("nan"), True):
            with pytest.raises(ValueError, match="archive_after"):
                experiment.set_retention(archive_after=bad)


class TestRestApi:
    @pytest.fixture
    async def secured(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
    ) -> Client:
        start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
        settings = ServerSettings(workspace=experiment.workspace.settings, tokens=frozenset({TOKEN}))
        return await aiohttp_client(create_app(settings))

    async def test_delete_needs_the_token(
        self, experiment: Experiment, secured: Client, tmp_path: Path, client: redis.Redis
    ) -> None:
        run = await asyncio.to_thread(ended_run, experiment, tmp_path)
        path = f"/api/v1/runs/{run.id}"
        bearer = {"Authorization": f"Bearer {TOKEN}"}

        anonymous = await secured.delete(path)
        wrong = await secured.delete(path, headers={"Authorization": "Bearer nope"})
        cookie_from_elsewhere = await secured.delete(
            path, cookies={"runstream_token": TOKEN}, headers={"Origin": "http://elsewhere.example"}
        )
        still_there = run_keys(client, experiment.workspace, run.id)
        done = await secured.delete(path, headers=bearer)
        body = await done.json()
        again = await secured.delete(path, headers=bearer)

        assert (401, 401, 403) == (anonymous.status, wrong.status, cookie_from_elsewhere.status)
        assert {"meta", "tags"} <= still_there
        assert 200 == done.status
        assert {"deleted": [run.id]} == body
        assert 404 == again.status
        assert {"meta"} == run_keys(client, experiment.workspace, run.id)

    async def test_archive_restore_and_refusals(
        self, experiment: Experiment, secured: Client, tmp_path: Path, client: redis.Redis
    ) -> None:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        run = await asyncio.to_thread(ended_run, experiment, tmp_path)
        running = experiment.start_logging()
        await asyncio.to_thread(running.get_status)

        in_redis = await (await secured.get(f"/api/v1/runs/{run.id}/storage", headers=bearer)).json()
        archived = await secured.post(f"/api/v1/runs/{run.id}/archive", headers=bearer)
        archived_body = await archived.json()
        stub = run_keys(client, experiment.workspace, run.id)
        in_archive = await (await secured.get(f"/api/v1/runs/{run.id}/storage", headers=bearer)).json()
        restored = await secured.post(f"/api/v1/runs/{run.id}/restore", headers=bearer)
        refused = await secured.delete(f"/api/v1/runs/{running.id}", headers=bearer)
        unknown = await secured.delete(f"/api/v1/experiments/{experiment.name}-none", headers=bearer)
        bad = await secured.delete("/api/v1/experiments/..%2Fx", headers=bearer)
        await asyncio.to_thread(running.complete)
        whole = await secured.delete(f"/api/v1/experiments/{experiment.name}", headers=bearer)

        assert (200, True) == (archived.status, archived_body["archived"])
        assert STUB == stub
        assert {"id": run.id, "archived": False, "archived_at": None} == in_redis
        assert (True, float) == (in_archive["archived"], type(in_archive["archived_at"]))
        assert (200, True) == (restored.status, (await restored.json())["restored"])
        assert 409 == refused.status
        assert (404, 400) == (unknown.status, bad.status)
        assert 200 == whole.status
        assert sorted([run.id, running.id]) == sorted((await whole.json())["deleted"])

    async def test_the_routes_are_documented(self, secured: Client) -> None:
        document = await (
            await secured.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        ).json()

        assert "delete" in document["paths"]["/api/v1/runs/{run_id}"]
        assert "delete" in document["paths"]["/api/v1/experiments/{experiment}"]
        assert "post" in document["paths"]["/api/v1/runs/{run_id}/restore"]
        assert "get" in document["paths"]["/api/v1/runs/{run_id}/storage"]


class TestCli:
    def test_delete_archive_restore(
        self,
        experiment: Experiment,
        start_collector: Callable[..., CollectorThread],
        tmp_path: Path,
        client: redis.Redis,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        workspace = experiment.workspace
        start_collector(workspace, live_kept_after_end=0.2, archive_after=None)
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", workspace.settings.redis_url)
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", workspace.name)
        monkeypatch.setenv("RUNSTREAM_DATA_DIR", str(workspace.settings.data_dir))
        run, other = ended_run(experiment, tmp_path), ended_run(experiment, tmp_path)
        cli = CliRunner()

        archived = cli.invoke(main, ["archive", run.id])
        stub = run_keys(client, workspace, run.id)
        restored = cli.invoke(main, ["restore", run.id])
        declined = cli.invoke(main, ["delete", run.id], input="n\n")
        kept = run_keys(client, workspace, run.id)
        deleted = cli.invoke(main, ["delete", run.id, "--yes"])
        neither = cli.invoke(main, ["delete", "--yes"])
        unknown = cli.invoke(main, ["delete", f"{experiment.name}_1_00000000", "--yes"])

        assert (0, "archived 1 run\n") == (archived.exit_code, archived.output)
        assert STUB == stub
        assert (0, "restored 1 run\n") == (restored.exit_code, restored.output)
        assert 1 == declined.exit_code
        assert {"meta", "tags"} <= kept
        assert (0, f"deleted 1 run: {run.id}\n") == (deleted.exit_code, deleted.output)
        assert 2 == neither.exit_code
        assert 4 == unknown.exit_code
        assert [other.id] == [r.id for r in experiment.get_runs()]
