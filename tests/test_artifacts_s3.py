"""Run files kept in an S3-compatible store (``artifacts_url``): stored, listed, served and deleted there.

moto's S3 server on loopback (:mod:`tests.s3_server`) is the store; Redis, the collector
and the server are real.  What a user notices: ``upload_file`` and ``log_image`` put the
files in the bucket (none on the local disk), ``download_file`` and the server's file
routes give back the same bytes, an upload over REST lands in the bucket whole or not at
all, a name that tries to leave the run is refused, and deleting the run removes its
objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run
from runstream.consumer.server import ServerSettings, create_app
from runstream.errors import ConfigError
from runstream.object_artifacts import ObjectArtifactStore
from runstream.workspace import Workspace
from tests.conftest import CollectorThread, make_workspace, wait_until
from tests.s3_server import S3Server

PREFIX: Final = "team/files"
Client = TestClient[Any, Any]


@pytest.fixture
def s3_files(experiment: Experiment, bucket: str) -> Experiment:
    """The test's experiment, in a workspace whose run files live in the bucket."""
    settings = dataclasses.replace(experiment.workspace.settings, artifacts_url=f"s3://{bucket}/{PREFIX}")
    return Experiment(Workspace.from_settings(settings), experiment.name)


def objects_of(s3: S3Server, bucket: str, run: Run) -> set[str]:
    """The run's files as the bucket names them, relative to the run's prefix."""
    prefix = _key(run, "")
    return {name.removeprefix(prefix) for name in s3.object_names(bucket) if name.startswith(prefix)}


class TestFromPython:
    def test_stored_listed_and_read_back_from_the_bucket(
        self, s3_files: Experiment, s3: S3Server, bucket: str, tmp_path: Path
    ) -> None:
        run = s3_files.start_logging()
        weights = tmp_path / "weights.bin"
        weights.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # over a read chunk and a multipart part

        run.upload_file("outputs/weights.bin", weights)
        run.log_image("roc", path=_png(tmp_path))
        copy = run.download_file("outputs/weights.bin", tmp_path / "copy.bin")

        assert isinstance(s3_files.workspace.artifacts, ObjectArtifactStore)
        stored = objects_of(s3, bucket, run)
        assert "outputs/weights.bin" in stored
        assert "roc.png" in stored
        assert sorted(objects_of(s3, bucket, run)) == run.get_file_names()
        assert weights.read_bytes() == copy.read_bytes()
        assert not (s3_files.workspace.settings.data_dir / "artifacts").exists()  # nothing on the local disk
        run.complete()

    def test_a_missing_file_and_a_name_outside_the_run(self, s3_files: Experiment, tmp_path: Path) -> None:
        run = s3_files.start_logging()

        with pytest.raises(FileNotFoundError, match=r"no file 'absent\.txt'"):
            run.download_file("absent.txt", tmp_path / "absent.txt")
        with pytest.raises(ValueError, match="name"):
            run.upload_file("../other_run/x.txt", _png(tmp_path))
        run.complete()

    def test_deleting_the_run_removes_its_objects(
        self,
        s3_files: Experiment,
        s3: S3Server,
        bucket: str,
        tmp_path: Path,
        start_collector: Callable[..., CollectorThread],
    ) -> None:
        start_collector(s3_files.workspace, archive_after=None)
        kept, deleted = s3_files.start_logging(), s3_files.start_logging()
        for run in (kept, deleted):
            run.upload_file("notes.txt", _text(tmp_path, run.id))
            run.complete()
        wait_until(lambda: deleted.get_status() == "Completed", 30, "the run ended")

        deleted.delete()

        assert set() == objects_of(s3, bucket, deleted)
        assert {"notes.txt"} == objects_of(s3, bucket, kept)

    def test_a_url_that_is_no_store_is_refused_at_the_door(self, redis_url: str, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="artifacts_url"):
            make_workspace(redis_url, tmp_path, artifacts_url="ftp://files.example/x")


class TestServed:
    @pytest.fixture
    async def client(
        self, s3_files: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
    ) -> Client:
        start_collector(s3_files.workspace)
        return await aiohttp_client(create_app(ServerSettings(workspace=s3_files.workspace.settings)))

    async def test_a_download_streams_from_the_bucket(
        self, client: Client, s3_files: Experiment, tmp_path: Path
    ) -> None:
        run = await _started(s3_files)
        body = os.urandom(2 * 1024 * 1024 + 5)
        (tmp_path / "model.pt").write_bytes(body)
        run.upload_file("model.pt", tmp_path / "model.pt")

        reply = await client.get(f"/api/v1/runs/{run.id}/files/model.pt")
        missing = await client.get(f"/api/v1/runs/{run.id}/files/absent.pt")

        assert 200 == reply.status
        assert body == await reply.read()
        assert str(len(body)) == reply.headers["Content-Length"]
        assert "attachment" in reply.headers["Content-Disposition"]
        assert "nosniff" == reply.headers["X-Content-Type-Options"]
        assert 404 == missing.status

    async def test_an_upload_lands_in_the_bucket_whole(
        self, client: Client, s3_files: Experiment, s3: S3Server, bucket: str
    ) -> None:
        run = await _started(s3_files)
        body = os.urandom(1024 * 1024 + 3)

        reply = await client.put(f"/api/v1/runs/{run.id}/files/data/train.csv", data=io.BytesIO(body))
        answer = await reply.json()
        refused = await client.put(f"/api/v1/runs/{run.id}/files/..%2F..%2Fescape.txt", data=b"x")

        assert 201 == reply.status, answer
        assert hashlib.sha256(body).hexdigest() == answer["sha256"]
        assert {"data/train.csv"} == objects_of(s3, bucket, run)
        assert body == s3.client().get_object(Bucket=bucket, Key=_key(run, "data/train.csv"))["Body"].read()
        assert 400 == refused.status
        assert not list((s3_files.workspace.settings.data_dir / "uploads").iterdir())  # its spool emptied


async def _started(experiment: Experiment) -> Run:
    run = experiment.start_logging()
    await asyncio.to_thread(run.get_status)
    return run


def _key(run: Run, name: str) -> str:
    assert run.experiment is not None
    return f"{PREFIX}/{run.experiment.workspace.name}/{run.id}/{name}"


def _png(folder: Path) -> Path:
    path = folder / "roc.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return path


def _text(folder: Path, text: str) -> Path:
    path = folder / f"{text}.txt"
    path.write_text(text)
    return path
