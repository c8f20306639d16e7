"""Uploads stream to disk: the server's memory stays bounded whatever the size, uploads at once are
bounded (503 past the bound), a body over ``max_upload`` is 413 and one that stalls 408, and none of
these leaves anything in the run's folder.

The memory test runs ``runstream serve`` in a process of its own and reads its peak resident memory;
the others drive the real ``create_app`` in the test's loop with raw HTTP over loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run
from runstream.consumer.server import ServerSettings, create_app
from tests.conftest import CollectorThread, wait_until
from tests.server_process import ServeProcess, read_status

Client = TestClient[Any, Any]
MIB = 1024 * 1024
#: The big upload of the memory test, and how much the server's peak memory may grow for it.
BIG = 300 * MIB
GROWTH_BOUND = BIG // 8


async def started(experiment: Experiment) -> Run:
    """A new run whose record exists (so the API knows it)."""
    run = experiment.start_logging()
    await asyncio.to_thread(run.get_status)
    return run


def run_folder(experiment: Experiment, run: Run) -> Path:
    return experiment.workspace.settings.data_dir / "artifacts" / experiment.workspace.name / run.id


def left_in(folder: Path) -> list[str]:
    """Every file in ``folder`` (temporary uploads included), relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def put(base_port: int, path: str, size: int, chunk: bytes) -> tuple[int, dict[str, Any], str]:
    """PUT ``size`` bytes (``chunk`` repeated) with a Content-Length, streamed; status, JSON reply, sha256 sent."""
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(size // len(chunk)):
            digest.update(chunk)
            yield chunk

    connection = http.client.HTTPConnection("127.0.0.1", base_port, timeout=120)
    try:
        connection.request("PUT", path, body=body(), headers={"Content-Length": str(size)})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), digest.hexdigest()
    finally:
        connection.close()


class TestUploadMemory:
    """A 300 MB upload through ``runstream serve`` grows the server's peak memory by far less than its size."""

    def test_peak_memory_stays_bounded(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], tmp_path: Path
    ) -> None:
        start_collector(experiment.workspace)
        run = experiment.start_logging()
        run.get_status()
        chunk = os.urandom(MIB)
        files = f"/api/v1/runs/{run.id}/files"

        with ServeProcess(experiment.workspace, tmp_path / "server.log") as server:
            warm = put(server.port, f"{files}/warm.bin", 16 * MIB, chunk)  # code paths and buffers in place
            before = server.peak_rss()
            status, stored, sent = put(server.port, f"{files}/big.bin", BIG, chunk)
            growth = server.peak_rss() - before
        big = run_folder(experiment, run) / "big.bin"
        size, digest = big.stat().st_size, hashlib.sha256(big.read_bytes()).hexdigest()
        shutil.rmtree(run_folder(experiment, run))  # 300 MB: not left for pytest's kept folders
        run.complete()

        assert 201 == warm[0]
        assert (201, BIG, sent) == (status, stored["size"], stored["sha256"])
        assert (BIG, sent) == (size, digest)
        assert growth < GROWTH_BOUND, f"peak RSS grew {growth / MIB:.0f} MiB for a {BIG // MIB} MiB upload"


@pytest.fixture
def small_server(
    experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
) -> Callable[..., Any]:
    """A test server for the experiment's workspace with upload settings of the test's choosing."""
    start_collector(experiment.workspace)

    async def make(**settings: Any) -> Client:
        return await aiohttp_client(create_app(ServerSettings(workspace=experiment.workspace.settings, **settings)))

    return make


def put_head(client: Client, run: Run, name: str, length: int | None) -> bytes:
    """The request line and headers of a PUT of ``name`` (chunked when ``length`` is None)."""
    framing = b"Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}".encode()
    path = f"/api/v1/runs/{run.id}/files/{name}".encode()
    return (
        b"PUT "
        + path
        + b" HTTP/1.1\r\nHost: "
        + f"{client.host}:{client.port}".encode()
        + b"\r\n"
        + framing
        + b"\r\n\r\n"
    )


class TestUploadBounds:
    """Past ``max_uploads`` an upload gets 503 with Retry-After; over ``max_upload`` bytes 413; stalled past
    ``upload_stall`` 408; nothing of a refused upload stays in the run's folder."""

    async def test_uploads_past_the_bound_get_503(
        self, small_server: Callable[..., Any], experiment: Experiment
    ) -> None:
        client: Client = await small_server(max_uploads=2)
        run = await started(experiment)
        folder = run_folder(experiment, run)
        size, first = 4 * MIB, b"x" * (256 * 1024)
        streams = [await asyncio.open_connection(client.host, client.port) for _ in range(2)]
        for i, (_, writer) in enumerate(streams):
            writer.write(put_head(client, run, f"held{i}.bin", size) + first)
            await writer.drain()
        await asyncio.to_thread(wait_until, lambda: 2 == len(left_in(folder)), 30, "two uploads in progress")

        third = await client.put(f"/api/v1/runs/{run.id}/files/third.bin", data=b"y" * 1000)
        error = (await third.json())["error"]
        replies = []
        for reader, writer in streams:
            writer.write(b"x" * (size - len(first)))
            await writer.drain()
            replies.append((await read_status(reader))[0])
            writer.close()
            await writer.wait_closed()
        await asyncio.to_thread(run.complete)

        assert (503, "1") == (third.status, third.headers["Retry-After"])
        assert "retry later" in error["message"]
        assert [201, 201] == replies
        assert ["held0.bin", "held1.bin"] == left_in(folder)

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    async def test_over_max_upload_is_413(
        self, small_server: Callable[..., Any], experiment: Experiment, chunked: bool
    ) -> None:
        client: Client = await small_server(max_upload=100_000)
        run = await started(experiment)
        reader, writer = await asyncio.open_connection(client.host, client.port)

        writer.write(put_head(client, run, "big.bin", None if chunked else 10 * MIB))
        if chunked:  # no length announced: refused once the count passes the bound
            writer.write(b"".join(b"%x\r\n" % 50_000 + b"z" * 50_000 + b"\r\n" for _ in range(3)))
        await writer.drain()
        status, _ = await read_status(reader)
        writer.close()
        await asyncio.to_thread(run.complete)

        assert 413 == status
        assert [] == left_in(run_folder(experiment, run))

    async def test_a_stalled_upload_is_408(self, small_server: Callable[..., Any], experiment: Experiment) -> None:
        client: Client = await small_server(upload_stall=0.5)
        run = await started(experiment)
        reader, writer = await asyncio.open_connection(client.host, client.port)

        writer.write(put_head(client, run, "stalled.bin", 1000) + b"only some")  # then nothing
        await writer.drain()
        status, _ = await read_status(reader)
        writer.close()
        await asyncio.to_thread(run.complete)

        assert 408 == status
        assert [] == left_in(run_folder(experiment, run))
