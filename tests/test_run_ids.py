"""Run ids are names, never paths: refused at every door, and the artifact store stays in its folder.

A run id names a folder of the artifact store and a hash tag in Redis.  Each door (the
SDK, the collector's decoder, the server's routes) refuses one that is not a plain
identifier, and the store resolves every path, links included, and refuses what lands
outside the run's own folder.  Every test checks the filesystem itself: nothing outside
the data folder is read or written.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import redis
from aiohttp.test_utils import TestClient
from yarl import URL

from runstream import Experiment, Run
from runstream.artifacts import LocalArtifactStore
from runstream.codec import Batch, encode_batch
from runstream.events import RunStarted, TagsSet
from runstream.keys import check_run_id
from tests.conftest import CollectorThread, wait_until

Client = TestClient[Any, Any]
SECRET = b"SECRET-4b1d"

#: Run ids a hostile or careless caller might pass, each refused at every door.
BAD_RUN_IDS = [
    "../../../../outside",
    "/etc",
    "..",
    ".",
    "a/b",
    "a\\b",
    "../other/run",
    "run{x}",
    "run id",
    "",
    "\x00",
    "ré",
    "x" * 300,
]


def tree(folder: Path, but: Path | None = None) -> dict[str, bytes]:
    """Every file below ``folder`` (links not followed, ``but`` left out) with its contents."""
    found = {}
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if Path(dirpath, d) != but]
        for name in files:
            path = Path(dirpath, name)
            found[str(path.relative_to(folder))] = b"<link>" if path.is_symlink() else path.read_bytes()
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the data folder holding a secret: nothing may read or add to it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "shadow").write_bytes(SECRET)
    return folder


def store_of(experiment: Experiment) -> LocalArtifactStore:
    store = experiment.workspace.artifacts
    assert isinstance(store, LocalArtifactStore)
    return store


class TestCheckRunId:
    """Run ids are letters, digits, '_', '.' and '-', starting with a letter or digit."""

    @pytest.mark.parametrize("run_id", BAD_RUN_IDS)
    def test_bad_ids_are_refused(self, run_id: str) -> None:
        with pytest.raises(ValueError, match="run id"):
            check_run_id(run_id)

    def test_ids_the_sdk_makes_pass(self, experiment: Experiment) -> None:
        run = experiment.start_logging()

        assert run.id == check_run_id(run.id)
        assert "tests_1700000000_0a1b2c3d" == check_run_id("tests_1700000000_0a1b2c3d")
        run.complete()

    def test_a_non_str_is_a_type_error(self) -> None:
        with pytest.raises(TypeError, match="run id must be a str"):
            check_run_id(b"abc")


class TestSdkDoor:
    """``Run(exp, id)`` and a submitted script's RUNSTREAM_RUN_ID refuse a bad id before touching anything."""

    @pytest.mark.parametrize("run_id", ["../../../outside", "/etc", "..", "a/../../outside"])
    def test_attach_refuses_and_writes_nothing(self, experiment: Experiment, outside: Path, run_id: str) -> None:
        data_dir = experiment.workspace.settings.data_dir
        before = tree(outside.parent, but=data_dir)

        with pytest.raises(ValueError, match="run id"):
            Run(experiment, run_id).upload_file("shadow", io.BytesIO(b"overwritten"))

        assert before == tree(outside.parent, but=data_dir)
        assert SECRET == (outside / "shadow").read_bytes()

    def test_get_context_refuses(self, experiment: Experiment, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RUNSTREAM_RUN_ID", "../../outside")
        monkeypatch.setenv("RUNSTREAM_EXPERIMENT", experiment.name)
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", experiment.workspace.settings.redis_url)

        with pytest.raises(ValueError, match="run id"):
            Run.get_context()


class TestIngestDoor:
    """A forged entry whose run id is a path is dead-lettered with the reason; the collector goes on."""

    def test_forged_run_ids_are_dead_lettered(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread]
    ) -> None:
        keys = experiment.workspace.keys
        forged = ["/etc", "../other/run", "..", "a}b{"]
        client = redis.Redis.from_url(experiment.workspace.settings.redis_url)
        try:
            for run_id in forged:
                fields = encode_batch(Batch(run_id, "forger", 1, [RunStarted("tests", "x", None, "Running", 1.0)]))
                client.xadd(keys.ingest(0), dict(fields))  # type: ignore[arg-type]  # redis-py's field types
            start_collector(experiment.workspace)
            run = experiment.start_logging()
            run.tag("after", "forgery")
            run.complete()

            wait_until(lambda: client.xlen(keys.deadletter()) >= len(forged), what="the forged entries dead-lettered")
            letters = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(keys.deadletter()))
            reasons = sorted(f[b"reason"].decode() for _, f in letters)
            made = [run_id for run_id in forged if client.exists(keys.meta(run_id))]
        finally:
            client.close()

        assert len(forged) == len(reasons)
        assert all(r.startswith("run id ") and "is invalid" in r for r in reasons), reasons
        assert [] == made
        assert {"after": "forgery"} == run.get_tags()

    def test_forged_parent_and_experiment_are_dead_lettered(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread]
    ) -> None:
        keys = experiment.workspace.keys
        events = [
            RunStarted("tests", "x", "../../etc", "Running", 1.0),
            RunStarted("../../etc", "x", None, "Running", 1.0),
        ]
        client = redis.Redis.from_url(experiment.workspace.settings.redis_url)
        try:
            for seq, event in enumerate(events, 1):
                fields = encode_batch(Batch("tests_1_0a1b2c3d", "forger", seq, [event, TagsSet({"a": "b"}, 1.0)]))
                client.xadd(keys.ingest_for("tests_1_0a1b2c3d"), dict(fields))  # type: ignore[arg-type]  # redis-py's field types
            start_collector(experiment.workspace)

            wait_until(lambda: client.xlen(keys.deadletter()) >= len(events), what="the forged entries dead-lettered")
            letters = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(keys.deadletter()))
            reasons = sorted(f[b"reason"].decode() for _, f in letters)
            tags = client.hgetall(keys.tags("tests_1_0a1b2c3d"))
        finally:
            client.close()

        assert 2 == len(reasons)
        assert "'experiment': experiment name '../../etc' is invalid" in reasons[0]
        assert "'parent_id': run id '../../etc' is invalid" in reasons[1]
        assert {} == tags


def forge_record(experiment: Experiment, run_id: str) -> None:
    """A record under a bad run id, as if written before ids were checked (so only the route can refuse)."""
    client = redis.Redis.from_url(experiment.workspace.settings.redis_url)
    try:
        client.hset(experiment.workspace.keys.meta(run_id), mapping={"experiment": "tests", "status": "Running"})
    finally:
        client.close()


class TestServerDoor:
    """Routes answer 400 to an encoded run id that is a path, and nothing outside the data folder is touched."""

    #: (the id as it stands in the URL, the id aiohttp decodes it to)
    ENCODED: ClassVar = [
        ("%2Fetc", "/etc"),
        ("..%2F..%2F..%2F..%2Foutside", "../../../../outside"),
        ("%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Foutside", "../../../../outside"),
        ("..%5Coutside", "..\\outside"),
        ("run%20id%3A1", "run id:1"),
    ]

    @pytest.mark.parametrize(("encoded", "decoded"), ENCODED)
    async def test_reads_and_writes_answer_400(
        self, api: Client, experiment: Experiment, outside: Path, encoded: str, decoded: str
    ) -> None:
        forge_record(experiment, decoded)
        data_dir = experiment.workspace.settings.data_dir
        before = tree(outside.parent, but=data_dir)
        base = f"/api/v1/runs/{encoded}"

        statuses = {}
        for method, path in [
            ("GET", ""),
            ("GET", "/files"),
            ("GET", "/files/shadow"),
            ("GET", "/metrics"),
            ("GET", "/output"),
            ("GET", "/events"),
            ("PUT", "/files/planted"),
            ("POST", "/cancel"),
        ]:
            async with api.request(method, URL(base + path, encoded=True), data=b"planted") as response:
                body = await response.read()
                statuses[method, path] = (response.status, SECRET in body)

        assert {k: (400, False) for k in statuses} == statuses
        assert before == tree(outside.parent, but=data_dir)

    async def test_other_workspace_is_not_reachable(self, api: Client, experiment: Experiment, tmp_path: Path) -> None:
        artifacts = experiment.workspace.settings.data_dir / "artifacts"
        other_file = artifacts / "other" / "other_1_0a1b2c3d" / "model.bin"
        other_file.parent.mkdir(parents=True)
        other_file.write_bytes(SECRET)
        forge_record(experiment, "../other/other_1_0a1b2c3d")

        response = await api.get(URL("/api/v1/runs/..%2Fother%2Fother_1_0a1b2c3d/files/model.bin", encoded=True))

        assert 400 == response.status
        assert SECRET not in await response.read()

    async def test_bad_experiment_filter_answers_400(self, api: Client) -> None:
        response = await api.get("/api/v1/runs", params={"experiment": "../x"})

        assert 400 == response.status
        assert "experiment name" in (await response.json())["error"]["message"]


class TestStoreConfinement:
    """The artifact store follows links and refuses any path that leaves the run's folder."""

    async def test_link_to_outside_is_neither_listed_nor_served(
        self, api: Client, experiment: Experiment, outside: Path
    ) -> None:
        run = experiment.start_logging()
        run.upload_file("ok.txt", io.BytesIO(b"fine"))
        await asyncio.to_thread(run.complete)
        run_dir = store_of(experiment).root / run.id
        (run_dir / "leak").symlink_to(outside / "shadow")
        (run_dir / "leakdir").symlink_to(outside, target_is_directory=True)
        before = tree(outside)

        names = store_of(experiment).names(run.id)
        reads = []
        for name in ("leak", "leakdir/shadow"):
            async with api.get(f"/api/v1/runs/{run.id}/files/{name}") as response:
                reads.append((response.status, SECRET in await response.read()))
        put = await api.put(f"/api/v1/runs/{run.id}/files/leakdir/planted", data=b"planted")

        assert ["ok.txt"] == names
        assert [(400, False), (400, False)] == reads
        assert 400 == put.status
        assert before == tree(outside)

    def test_run_folder_that_is_a_link_holds_nothing(self, experiment: Experiment, outside: Path) -> None:
        store = store_of(experiment)
        store.root.mkdir(parents=True, exist_ok=True)
        (store.root / "tests_1_0a1b2c3d").symlink_to(outside, target_is_directory=True)

        with pytest.raises(ValueError, match="outside the run's folder"):
            store.open("tests_1_0a1b2c3d", "shadow")
        with pytest.raises(ValueError, match="outside the run's folder"):
            store.put("tests_1_0a1b2c3d", "planted", io.BytesIO(b"planted"))
        assert [] == store.names("tests_1_0a1b2c3d")
        assert ["shadow"] == sorted(tree(outside))
