"""The aiohttp server on the real ``create_app``, against real Redis and a real collector.

Runs are logged through the SDK; each test reads them back through ``/api/v1``: the
OpenAPI document against the routes, every REST resource, errors as JSON, path
traversal, bearer tokens, and the SSE endpoint with ``Last-Event-ID`` resumption.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from yarl import URL

from runstream import Experiment, Run
from runstream.codec import Batch, encode_batch
from runstream.connection import connect
from runstream.consumer.api import ROUTES
from runstream.consumer.server import ServerSettings, create_app
from runstream.consumer.subscribe import Update, subscribe
from runstream.consumer.updates import to_json
from runstream.events import OutputLogged
from tests.conftest import CollectorThread

Client = TestClient[Any, Any]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
THIS_FILE_SIZE = len(Path(__file__).read_bytes())
TOKEN = "tok-3f9a"  # noqa: S105  # a test token


async def started(experiment: Experiment) -> Run:
    """A new run whose record exists (so the API knows it)."""
    run = experiment.start_logging()
    await asyncio.to_thread(run.get_status)
    return run


async def json_of(response: ClientResponse, status: int = 200) -> Any:
    """The response's JSON, after checking its status."""
    body = await response.read()
    assert status == response.status, body[:500]
    return json.loads(body)


@dataclass(frozen=True)
class SseMessage:
    """One server-sent event as a client sees it."""

    id: str | None
    event: str
    data: str


async def read_sse(response: ClientResponse) -> AsyncIterator[SseMessage]:
    """The messages of an SSE response, until the stream ends (comments skipped)."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in fields:
                yield SseMessage(fields.get("id"), fields.get("event", "message"), fields["data"])
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


async def collect_sse(response: ClientResponse) -> list[SseMessage]:
    """Every message up to and including ``event: end``."""
    messages = []
    async for message in read_sse(response):
        messages.append(message)
        if message.event == "end":
            break
    return messages


async def python_updates(experiment: Experiment, run_id: str) -> list[dict[str, Any]]:
    """What the Python subscription sees of the run, from the beginning to its final status, as JSON."""
    settings = experiment.workspace.settings
    async with connect(settings.redis_url) as client:
        return [
            to_json(item)
            async for item in subscribe(client, experiment.workspace.keys, run_id, start="beginning")
            if isinstance(item, Update)
        ]


def add_output(experiment: Experiment, run_id: str, lines: list[str]) -> None:
    """Output lines on the run's ingest stream, as the output capture sends them."""
    batch = Batch(run_id, "output-capture", 1, [OutputLogged("stdout", lines, 1.0)])
    client = redis.Redis.from_url(experiment.workspace.settings.redis_url)
    try:
        client.xadd(experiment.workspace.keys.ingest_for(run_id), dict(encode_batch(batch)))  # type: ignore[arg-type]  # redis-py's field types
    finally:
        client.close()


async def until(condition: Callable[[], Awaitable[bool]], bound: float = 30.0, what: str = "condition") -> None:
    """Re-check an API read until it holds (each check is a round trip, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {bound} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling interval of a state check, not synchronisation by time


def openapi_path(path: str) -> str:
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)


class TestOpenApi:
    """The served OpenAPI document lists every route, and every path in it answers."""

    async def test_every_route_is_documented(self, api: Client) -> None:
        expected = {(r.method.lower(), openapi_path(r.path)) for r in ROUTES} | {
            ("get", "/api/v1/runs/{run_id}/events"),
            ("get", "/api/v1/openapi.json"),
            ("get", "/api/v1/health"),
            ("get", "/api/v1/health/live"),
            ("get", "/api/v1/health/ready"),
        }

        document = await json_of(await api.get("/api/v1/openapi.json"))
        actual = {(method, path) for path, item in document["paths"].items() for method in item}

        assert expected == actual
        assert "3.1.0" == document["openapi"]

    async def test_every_documented_path_answers(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        run.log("loss", 0.5)
        run.upload_file("notes.txt", Path(__file__))
        await asyncio.to_thread(run.flush)
        await until(lambda: self._has_metric(api, run.id), what="the metric in the record")
        document = await json_of(await api.get("/api/v1/openapi.json"))

        answers: dict[tuple[str, str], int] = {}
        order = sorted(((m, p) for p, item in document["paths"].items() for m in item), key=self._when_asked)
        for method, path in order:
            name = "notes.txt" if "/files/" in path else "loss"
            url = path.replace("{run_id}", run.id).replace("{name}", name).replace("{experiment}", experiment.name)
            if path.endswith("/events"):
                url += "?from=0-0"
            data = b"uploaded" if method == "put" else None
            async with api.request(method.upper(), url, data=data) as response:
                if path.endswith("/events"):
                    await asyncio.wait_for(collect_sse(response), 30)
                answers[method, path] = response.status

        assert {k: v for k, v in answers.items() if v not in (200, 201, 202)} == {}
        assert len(document["paths"]) >= 10

    @staticmethod
    def _when_asked(route: tuple[str, str]) -> tuple[int, str]:
        """Reads first; then the cancel, the (now finite) stream, and what needs an ended run:
        archive, restore, and the deletes last."""
        method, path = route
        later = ["/cancel", "/events", "/runs/{run_id}/archive", "/restore", "/experiments/{experiment}/archive"]
        if method == "delete":
            return (len(later) + 1 + path.startswith("/api/v1/experiments"), path)
        return (next((n + 1 for n, end in enumerate(later) if path.endswith(end)), 0), path)

    @staticmethod
    async def _has_metric(api: Client, run_id: str) -> bool:
        return "loss" in (await json_of(await api.get(f"/api/v1/runs/{run_id}/metrics")))["metrics"]


class TestRunsApi:
    """Experiments, runs with their filters, and a run's details come back as the SDK logged them."""

    async def test_experiments_and_filters(self, api: Client, experiment: Experiment) -> None:
        other = Experiment(experiment.workspace, "other")
        done = await started(experiment)
        done.tag("lr", "0.1")
        await asyncio.to_thread(done.complete)
        running = await started(experiment)
        running.tag("lr", "0.2")
        running.tag("baseline")
        await asyncio.to_thread(running.flush)
        elsewhere = await started(other)
        await asyncio.to_thread(running.get_tags)  # read-your-writes: the tags are in the record

        experiments = await json_of(await api.get("/api/v1/experiments"))
        every = await json_of(await api.get("/api/v1/runs"))
        in_tests = await json_of(await api.get("/api/v1/runs", params={"experiment": "tests"}))
        completed = await json_of(await api.get("/api/v1/runs", params={"status": "Completed"}))
        tagged = await json_of(await api.get("/api/v1/runs", params={"tag": "lr=0.2"}))
        has_tag = await json_of(await api.get("/api/v1/runs", params={"tag": "lr"}))
        bare_tag = await json_of(await api.get("/api/v1/runs", params={"tag": "baseline"}))
        nobody = await json_of(await api.get("/api/v1/runs", params={"experiment": "nothing"}))

        assert [{"name": "other", "runs": 1}, {"name": "tests", "runs": 2}] == experiments["experiments"]
        assert {done.id, running.id, elsewhere.id} == {r["id"] for r in every["runs"]}
        assert [running.id, done.id] == [r["id"] for r in in_tests["runs"]]  # newest first
        assert [done.id] == [r["id"] for r in completed["runs"]]
        assert [running.id] == [r["id"] for r in tagged["runs"]]
        assert {done.id, running.id} == {r["id"] for r in has_tag["runs"]}
        assert [running.id] == [r["id"] for r in bare_tag["runs"]]
        assert [] == nobody["runs"]
        await asyncio.to_thread(running.complete)
        await asyncio.to_thread(elsewhere.complete)

    async def test_details(self, api: Client, experiment: Experiment, tmp_path: Path) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(PNG)
        run = await started(experiment)
        child = run.child_run("child")
        run.add_properties({"seed": 7})
        run.tag("team", "vision")
        for v in (1.0, 0.5, 0.25):
            run.log("loss", v)
        run.log_list("accuracy", [0.1, 0.2])
        run.log_row("curve", x=1, y=0.4)
        run.log_row("curve", x=2, y=0.3)
        run.log_table("tbl", {"a": [1, 2, 3], "b": ["x", "y", "z"]})
        run.log_image("roc", path=image)
        run.upload_file("outputs/notes.txt", Path(__file__))
        await asyncio.to_thread(child.complete)
        await asyncio.to_thread(run.complete)

        details = await json_of(await api.get(f"/api/v1/runs/{run.id}"))
        live_id = await self._newest_live_id(experiment, run.id)

        assert (run.id, "tests", "Completed", None) == (
            details["id"],
            details["experiment"],
            details["status"],
            details["parent_id"],
        )
        assert {"seed": "7"} == details["properties"]
        assert {"team": "vision"} == details["tags"]
        assert [child.id] == details["children"]
        assert {
            "accuracy": {"kind": "list", "count": 2},
            "curve": {"kind": "table", "count": 2},
            "loss": {"kind": "series", "count": 3},
            "roc": {"kind": "image", "count": 1},
            "tbl": {"kind": "table", "count": 3},
        } == details["metrics"]
        assert ["outputs/notes.txt", "roc.png"] == [f["name"] for f in details["files"]]
        assert [THIS_FILE_SIZE, len(PNG)] == [f["size"] for f in details["files"]]
        assert live_id == details["live_id"]
        assert details["started_at"] <= details["ended_at"]

    @staticmethod
    async def _newest_live_id(experiment: Experiment, run_id: str) -> str:
        async with connect(experiment.workspace.settings.redis_url) as client:
            newest = cast(
                "list[tuple[bytes, Any]]", await client.xrevrange(experiment.workspace.keys.live(run_id), count=1)
            )
        return newest[0][0].decode()

    async def test_output_lines(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        add_output(experiment, run.id, [f"line {i}" for i in range(5)])
        await asyncio.to_thread(run.complete)

        everything = await json_of(await api.get(f"/api/v1/runs/{run.id}/output"))
        newest = await json_of(await api.get(f"/api/v1/runs/{run.id}/output", params={"limit": "2"}))

        assert [f"line {i}" for i in range(5)] == [line["line"] for line in everything["lines"]]
        assert {"stdout"} == {line["stream"] for line in everything["lines"]}
        assert ["line 3", "line 4"] == [line["line"] for line in newest["lines"]]

    async def test_cancel(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)

        response = await json_of(await api.post(f"/api/v1/runs/{run.id}/cancel"), status=202)
        details = await json_of(await api.get(f"/api/v1/runs/{run.id}"))

        assert {"id": run.id, "status": "Canceled"} == response
        assert "Canceled" == details["status"]


class TestMetricsApi:
    """A metric comes back whole, downsampled to ``max_points`` keeping its spikes, or in a step range."""

    async def test_downsampled_series_keeps_spike_and_ends(self, api: Client, experiment: Experiment) -> None:
        n, spike = 100_000, 61_234
        run = await started(experiment)
        for i in range(n):
            run.log("loss", 1000.0 if i == spike else math.sin(i / 500) / (1 + i / 10_000))
        await asyncio.to_thread(run.complete, timeout=60)

        whole = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/loss", params={"max_points": "100000"}))
        small = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/loss", params={"max_points": "500"}))
        default = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/loss"))
        tiny = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/loss", params={"max_points": "3"}))
        ranged = await json_of(
            await api.get(
                f"/api/v1/runs/{run.id}/metrics/loss", params={"start": "100", "end": "199", "max_points": "1000"}
            )
        )

        assert (n, False, list(range(n))) == (whole["count"], whole["downsampled"], whole["steps"])
        assert (n, True) == (small["count"], small["downsampled"])
        assert len(small["steps"]) <= 500
        assert len(default["steps"]) <= 2000
        assert len(tiny["steps"]) <= 3
        assert small["steps"] == sorted(small["steps"])
        assert (0, n - 1) == (small["steps"][0], small["steps"][-1])
        assert (whole["values"][0], whole["values"][-1]) == (small["values"][0], small["values"][-1])
        assert 1000.0 == max(small["values"])
        assert spike in small["steps"]
        assert [whole["values"][s] for s in small["steps"]] == small["values"]
        assert (list(range(100, 200)), whole["values"][100:200]) == (ranged["steps"], ranged["values"])

    async def test_explicit_steps_and_mixed_number_types(self, api: Client, experiment: Experiment) -> None:
        """Steps with small gaps, huge jumps and going back, and ints mixed with floats, come back as logged."""
        steps = [0, 10, 15, 2**40, 2**40 + 1, 7]
        values: list[float | int] = [1, 2.5, 3, 4.0, -5, 0.25]
        run = await started(experiment)
        for step, value in zip(steps, values, strict=True):
            run.log("odd", value, step=step)
            await asyncio.to_thread(run.flush)  # one batch each: a chunk per point, of each step mode
        await asyncio.to_thread(run.complete)

        series = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/odd"))

        assert (steps, [float(v) for v in values]) == (series["steps"], series["values"])

    async def test_steps_going_back_are_downsampled_by_position(self, api: Client, experiment: Experiment) -> None:
        n = 5000
        run = await started(experiment)
        for i in range(n):
            run.log("back", float(i % 7), step=n - i)  # steps count down
        await asyncio.to_thread(run.complete)

        small = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/back", params={"max_points": "100"}))

        assert (n, True) == (small["count"], small["downsampled"])
        assert len(small["steps"]) <= 100
        assert (n, 1) == (small["steps"][0], small["steps"][-1])  # first and last as logged
        assert small["steps"] == sorted(small["steps"], reverse=True)  # logging order kept
        assert {0.0, 6.0} <= set(small["values"])

    async def test_non_finite_values_travel_as_strings(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        for v in (1.5, math.nan, math.inf, -math.inf):
            run.log("weird", v)
        await asyncio.to_thread(run.complete)

        series = await json_of(await api.get(f"/api/v1/runs/{run.id}/metrics/weird"))
        listed = await json_of(await api.get("/api/v1/runs"))

        assert [1.5, "NaN", "Infinity", "-Infinity"] == series["values"]
        assert {"weird": "-Infinity"} == listed["runs"][0]["metrics"]

    async def test_scalar_kinds_tables_and_images(self, api: Client, experiment: Experiment, tmp_path: Path) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(PNG)
        run = await started(experiment)
        for i in range(3):
            run.log("epochs", i)
        run.log("done", True)
        run.log("phase", "warmup")
        run.log("phase", "train")
        run.log_row("curve", x=1, y=0.4)
        run.log_row("curve", x=2, y=0.3)
        run.log_table("tbl", {"a": [1, 2], "b": ["x", "y"]})
        run.log_image("roc", path=image)
        run.log_image("roc", path=image)
        await asyncio.to_thread(run.complete)

        def get(name: str) -> Awaitable[ClientResponse]:
            return api.get(f"/api/v1/runs/{run.id}/metrics/{name}")

        epochs, done, phase = [await json_of(await get(n)) for n in ("epochs", "done", "phase")]
        curve, tbl, roc = [await json_of(await get(n)) for n in ("curve", "tbl", "roc")]

        assert ([0, 1, 2], [0, 1, 2]) == (epochs["steps"], epochs["values"])
        assert [True] == done["values"]
        assert ["warmup", "train"] == phase["values"]
        assert {"x": [1, 2], "y": [0.4, 0.3]} == curve["columns"]
        assert ("table", {"a": [1, 2], "b": ["x", "y"]}) == (tbl["kind"], tbl["columns"])
        assert ("image", ["roc.png", "roc_1.png"]) == (roc["kind"], roc["files"])


class TestFilesApi:
    """Files list, download with their content type, and upload from remote producers."""

    async def test_list_and_download(self, api: Client, experiment: Experiment, tmp_path: Path) -> None:
        (tmp_path / "plot.png").write_bytes(PNG)
        (tmp_path / "notes.txt").write_text("hello\n")
        (tmp_path / "data.json").write_text('{"a": 1}')
        run = await started(experiment)
        for name in ("plot.png", "notes.txt", "data.json"):
            run.upload_file(f"out/{name}", tmp_path / name)
        await asyncio.to_thread(run.complete)

        listed = await json_of(await api.get(f"/api/v1/runs/{run.id}/files"))
        got = {}
        for name in ("plot.png", "notes.txt", "data.json"):
            response = await api.get(f"/api/v1/runs/{run.id}/files/out/{name}")
            got[name] = (response.status, response.content_type, await response.read())

        assert ["out/data.json", "out/notes.txt", "out/plot.png"] == [f["name"] for f in listed["files"]]
        assert {
            "plot.png": (200, "image/png", PNG),
            "notes.txt": (200, "text/plain", b"hello\n"),
            "data.json": (200, "application/json", b'{"a": 1}'),
        } == got

    async def test_upload_then_download(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        body = bytes(range(256)) * 100

        stored = await json_of(await api.put(f"/api/v1/runs/{run.id}/files/remote/blob.bin", data=body), status=201)
        response = await api.get(f"/api/v1/runs/{run.id}/files/remote/blob.bin")

        assert ("remote/blob.bin", len(body)) == (stored["name"], stored["size"])
        assert (200, "application/octet-stream", body) == (
            response.status,
            response.content_type,
            await response.read(),
        )
        assert ["remote/blob.bin"] == await asyncio.to_thread(run.get_file_names)
        await asyncio.to_thread(run.complete)

    async def test_an_upload_over_the_limit_is_refused_and_stores_nothing(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
    ) -> None:
        start_collector(experiment.workspace)
        settings = ServerSettings(workspace=experiment.workspace.settings, max_upload=10_000)
        small = await aiohttp_client(create_app(settings))
        run = await started(experiment)

        refused = await small.put(f"/api/v1/runs/{run.id}/files/big.bin", data=b"x" * 20_000)
        error = await refused.json()
        kept = await small.put(f"/api/v1/runs/{run.id}/files/fits.bin", data=b"x" * 5_000)
        big = await small.get(f"/api/v1/runs/{run.id}/files/big.bin")
        fits = await small.get(f"/api/v1/runs/{run.id}/files/fits.bin")
        await asyncio.to_thread(run.complete)

        assert (413, 413) == (refused.status, error["error"]["status"])
        assert (201, 200, 5_000) == (kept.status, fits.status, len(await fits.read()))
        assert 404 == big.status


class TestAssets:
    """Every asset comes from the server; the 4.6 MB charting library goes compressed and is cached."""

    async def test_plotly_is_gzipped_and_cacheable(self, api: Client) -> None:
        plain = await api.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
        packed = await api.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip, deflate"})
        body, inflated = await plain.read(), await packed.read()  # the client inflates the gzipped body
        again = await api.get("/static/vendor/plotly.min.js", headers={"If-None-Match": packed.headers["ETag"]})

        assert (200, 200, 304) == (plain.status, packed.status, again.status)
        assert "gzip" == packed.headers["Content-Encoding"]
        assert int(packed.headers["Content-Length"]) < len(body) / 2
        assert len(body) > 1_000_000
        assert "max-age" in packed.headers["Cache-Control"]
        assert inflated == body


class TestErrors:
    """Errors are JSON with a status a client can act on; nothing outside a run's folder is served."""

    async def test_not_found_and_bad_request(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        run.log("loss", 1.0)
        await asyncio.to_thread(run.complete)
        base = f"/api/v1/runs/{run.id}"

        cases = {
            "/api/v1/runs/nope": 404,
            "/api/v1/runs/nope/metrics": 404,
            "/api/v1/runs/nope/metrics/loss": 404,
            "/api/v1/runs/nope/files": 404,
            "/api/v1/runs/nope/files/x.txt": 404,
            "/api/v1/runs/nope/output": 404,
            "/api/v1/runs/nope/events": 404,
            f"{base}/metrics/nothing": 404,
            f"{base}/files/nothing.txt": 404,
            f"{base}/metrics/loss?max_points=many": 400,
            f"{base}/metrics/loss?max_points=0": 400,
            f"{base}/metrics/loss?max_points=-5": 400,
            f"{base}/metrics/loss?start=x": 400,
            f"{base}/output?limit=x": 400,
            "/api/v1/nothing": 404,
            f"{base}/events?from=yesterday": 400,
            f"{base}/events?from=1-2-3": 400,
        }
        actual = {}
        for path in cases:
            response = await api.get(path)
            body = await response.json()
            actual[path] = (response.status, body["error"]["status"], bool(body["error"]["message"]))

        assert {p: (s, s, True) for p, s in cases.items()} == actual
        assert 404 == (await api.post("/api/v1/runs/nope/cancel")).status
        assert 404 == (await api.put("/api/v1/runs/nope/files/x.txt", data=b"x")).status

    @pytest.mark.parametrize(
        "name",
        [
            "../secret.txt",
            "%2e%2e/secret.txt",
            "%2E%2E%2Fsecret.txt",
            "..%2Fsecret.txt",
            "a/../../secret.txt",
            "%2e%2e/%2e%2e/secret.txt",
            "%2e%2e/%2e%2e/%2e%2e/secret.txt",
            "/etc/passwd",
            "%2Fetc%2Fpasswd",
            "ok.txt%00",
            "ok%00.txt",
            "..\\secret.txt",
            ".%2Fok.txt",
        ],
    )
    async def test_path_traversal_is_refused(self, api: Client, experiment: Experiment, name: str) -> None:
        run = await started(experiment)
        run.upload_file("ok.txt", Path(__file__))
        await asyncio.to_thread(run.complete)
        artifacts = experiment.workspace.settings.data_dir / "artifacts"
        run_dir = artifacts / experiment.workspace.name / run.id
        secrets = [run_dir.parent / "secret.txt", artifacts / "secret.txt", artifacts.parent / "secret.txt"]
        for secret in secrets:
            secret.write_text("SECRET")

        responses = []
        for target in (f"/api/v1/runs/{run.id}/files/{name}", f"/api/v1/runs/%2e%2e/files/{name}"):
            async with api.get(URL(target, encoded=True)) as response:
                responses.append((response.status, await response.read()))

        assert [] == [(s, b) for s, b in responses if s not in (400, 404) or b"SECRET" in b]
        put = await api.put(URL(f"/api/v1/runs/{run.id}/files/{name}", encoded=True), data=b"overwritten")
        assert put.status in (400, 404)
        assert ["SECRET"] * 3 == [s.read_text() for s in secrets]

    async def test_secret_beside_run_folders_is_not_served(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        await asyncio.to_thread(run.complete)
        artifacts = experiment.workspace.settings.data_dir / "artifacts"
        (artifacts / experiment.workspace.name).mkdir(parents=True, exist_ok=True)
        (artifacts / experiment.workspace.name / "secret.txt").write_text("SECRET")
        (artifacts / "secret.txt").write_text("SECRET")

        statuses = []
        for run_part in ("%2e%2e", "..", "%2E%2E", ".", "%2e"):
            for name in ("secret.txt", f"{experiment.workspace.name}/secret.txt"):
                async with api.get(URL(f"/api/v1/runs/{run_part}/files/{name}", encoded=True)) as response:
                    statuses.append((run_part, name, response.status, b"SECRET" in await response.read()))

        assert [] == [s for s in statuses if s[2] not in (400, 404) or s[3]]


class TestAuth:
    """With tokens configured, every API and page request needs one: header, query, or the cookie it set."""

    @pytest.fixture
    async def secured(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
    ) -> tuple[Client, Run]:
        start_collector(experiment.workspace)
        settings = ServerSettings(workspace=experiment.workspace.settings, tokens=frozenset({TOKEN, "other-token"}))
        client = await aiohttp_client(create_app(settings))
        run = await started(experiment)
        run.log("loss", 0.5)
        run.upload_file("notes.txt", Path(__file__))
        await asyncio.to_thread(run.complete)
        return client, run

    @staticmethod
    def requests(run_id: str) -> list[tuple[str, str]]:
        api = [
            (
                r.method,
                openapi_path(r.path)
                .replace("{run_id}", run_id)
                .replace("{name}", name)
                .replace("{experiment}", "tests"),
            )
            for r in ROUTES
            for name in ["loss" if "/metrics/" in r.path else "notes.txt"]
        ]
        pages = [
            ("GET", "/"),
            ("GET", "/experiments/tests"),
            ("GET", f"/runs/{run_id}"),
            ("GET", "/compare"),
            ("GET", "/static/vendor/plotly.min.js"),
            ("GET", "/static/common.js"),
        ]
        return [
            *api,
            ("GET", f"/api/v1/runs/{run_id}/events?from=0-0"),
            ("GET", "/api/v1/openapi.json"),
            ("GET", "/api/v1/health"),
            *pages,
        ]

    async def test_without_token_401(self, secured: tuple[Client, Run]) -> None:
        client, run = secured

        statuses = {}
        for method, path in self.requests(run.id):
            response = await client.request(method, path, data=b"x" if method == "PUT" else None)
            statuses[method, path] = response.status
            if path.startswith("/api/"):
                assert 401 == (await response.json())["error"]["status"]

        assert {k: 401 for k in statuses} == statuses

    async def test_wrong_token_401(self, secured: tuple[Client, Run]) -> None:
        client, run = secured

        header = await client.get(f"/api/v1/runs/{run.id}", headers={"Authorization": "Bearer nope"})
        query = await client.get(f"/api/v1/runs/{run.id}", params={"token": "nope"})
        page = await client.get("/", params={"token": TOKEN[:-1]})
        basic = await client.get("/api/v1/runs", headers={"Authorization": f"Basic {TOKEN}"})

        assert [401, 401, 401, 401] == [header.status, query.status, page.status, basic.status]
        assert "Bearer" == header.headers["WWW-Authenticate"]
        assert 0 == len(client.session.cookie_jar)

    async def test_bearer_header_passes(self, secured: tuple[Client, Run]) -> None:
        client, run = secured
        headers = {"Authorization": f"Bearer {TOKEN}"}

        statuses = {}
        for method, path in self.requests(run.id):
            if method in ("POST", "DELETE"):  # they end, move or remove the run: checked on their own
                continue
            async with client.request(method, path, headers=headers, data=b"x" if method == "PUT" else None) as r:
                if path.endswith("from=0-0"):
                    await collect_sse(r)
                statuses[method, path] = r.status

        assert {} == {k: v for k, v in statuses.items() if v not in (200, 201)}

    async def test_query_token_sets_cookie(self, secured: tuple[Client, Run]) -> None:
        client, run = secured

        first = await client.get(f"/runs/{run.id}", params={"token": TOKEN})
        statuses = {}
        for method, path in self.requests(run.id):
            if method in ("POST", "PUT", "DELETE"):  # writes: a cookie alone needs its Origin (test_server_security)
                continue
            async with client.request(method, path) as r:  # the cookie only
                if path.endswith("from=0-0"):
                    await collect_sse(r)
                statuses[path] = r.status

        assert 200 == first.status
        assert "runstream_token" in first.cookies
        assert {} == {k: v for k, v in statuses.items() if v != 200}
        client.session.cookie_jar.clear()
        assert 401 == (await client.get(f"/api/v1/runs/{run.id}")).status

    async def test_cancel_with_token(self, experiment: Experiment, secured: tuple[Client, Run]) -> None:
        client, _ = secured
        run = await started(experiment)

        anonymous = await client.post(f"/api/v1/runs/{run.id}/cancel")
        authorised = await client.post(f"/api/v1/runs/{run.id}/cancel", headers={"Authorization": f"Bearer {TOKEN}"})

        assert (401, 202) == (anonymous.status, authorised.status)
        assert "Canceled" == await asyncio.to_thread(run.get_status)


class TestEvents:
    """The SSE endpoint sends every update in order with ``id:`` = stream id, ends after the final status,
    and resumes from ``Last-Event-ID`` with no gap and no repeat.

    An entry carrying several updates gives its earlier messages ids ``<stream id>/<k>``, so a
    resume from inside an entry is exact too."""

    async def test_every_update_in_order_then_end(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        response = await api.get(f"/api/v1/runs/{run.id}/events", params={"from": "0-0"})
        reading = asyncio.create_task(collect_sse(response))
        for i in range(30):
            run.log("loss", float(i))
            if i % 3 == 0:
                await asyncio.to_thread(run.flush)
        run.tag("phase", "done")
        await asyncio.to_thread(run.complete)

        messages = await asyncio.wait_for(reading, 30)
        expected = await python_updates(experiment, run.id)
        updates = messages[:-1]

        assert "text/event-stream" == response.content_type
        assert [(u["id"], u) for u in expected] == [(str(m.id).split("/")[0], json.loads(m.data)) for m in updates]
        assert {u["id"] for u in expected} == {m.id for m in updates if m.id is not None and "/" not in m.id}
        assert [float(i) for i in range(30)] == [
            v for m in updates if (d := json.loads(m.data))["type"] == "metric" for v in d["values"]
        ]
        assert ("status", "Completed") == (json.loads(updates[-1].data)["type"], json.loads(updates[-1].data)["status"])
        assert "end" == messages[-1].event

    async def test_last_event_id_resumes_without_gap_or_repeat(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        for i in range(10):
            run.log("loss", float(i))
            await asyncio.to_thread(run.flush)
        async with api.get(f"/api/v1/runs/{run.id}/events", params={"from": "0-0"}) as response:
            first = asyncio.create_task(collect_sse(response))
            await asyncio.to_thread(run.complete)
            everything = await asyncio.wait_for(first, 30)
        third = everything[2]
        assert third.id is not None

        async with api.get(f"/api/v1/runs/{run.id}/events", headers={"Last-Event-ID": third.id}) as response:
            resumed = await asyncio.wait_for(collect_sse(response), 30)

        assert [(m.id, m.data) for m in everything[3:-1]] == [(m.id, m.data) for m in resumed[:-1]]
        assert "end" == resumed[-1].event

    async def test_live_client_joined_mid_run_resumes(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        run.log("loss", 0.0)
        await asyncio.to_thread(run.flush)
        async with api.get(f"/api/v1/runs/{run.id}/events", params={"from": "0-0"}) as response:
            reading = asyncio.create_task(collect_sse(response))
            for i in range(1, 20):
                run.log("loss", float(i))
                await asyncio.to_thread(run.flush)
            async with api.get(f"/api/v1/runs/{run.id}/events", params={"from": "0-0"}) as late:
                late_reading = asyncio.create_task(collect_sse(late))
                await asyncio.to_thread(run.complete)
                messages, late_messages = await asyncio.wait_for(asyncio.gather(reading, late_reading), 30)

        assert [(m.id, m.data) for m in messages] == [(m.id, m.data) for m in late_messages]

    async def test_health_counts_clients(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        async with api.get(f"/api/v1/runs/{run.id}/events") as response:
            await until(lambda: self._clients(api, 1), what="the SSE client in /health")
            await asyncio.to_thread(run.complete)
            messages = await asyncio.wait_for(collect_sse(response), 30)

        health = await json_of(await api.get("/api/v1/health"))

        assert [] == [r for r in health["reasons"] if "persists nothing" not in r]  # the test Redis persists nothing
        assert 0 == health["sse"]["dropped"]
        assert ["status", "end"] == [json.loads(m.data).get("type", "end") for m in messages][-2:]

    @staticmethod
    async def _clients(api: Client, n: int) -> bool:
        health = await json_of(await api.get("/api/v1/health"))
        return n == int(health["sse"]["clients"])

    async def test_resume_inside_an_entry_of_several_updates(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        run.log("loss", 1.0)
        run.tag("phase", "one")
        run.log_list("acc", [0.5])
        await asyncio.to_thread(run.flush)  # one batch: one live entry, three updates
        await asyncio.to_thread(run.complete)
        async with api.get(f"/api/v1/runs/{run.id}/events", params={"from": "0-0"}) as response:
            everything = await asyncio.wait_for(collect_sse(response), 30)
        shared = min(i for i, m in enumerate(everything) if "/" in str(m.id))  # the first of a shared entry

        async with api.get(
            f"/api/v1/runs/{run.id}/events", headers={"Last-Event-ID": str(everything[shared].id)}
        ) as response:
            resumed = await asyncio.wait_for(collect_sse(response), 30)

        assert [m.data for m in everything[shared + 1 : -1]] == [m.data for m in resumed[:-1]]


class TestPrometheus:
    """``/metrics`` exposes requests, SSE runs and clients, and drops in Prometheus text format."""

    async def test_counters(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        await api.get(f"/api/v1/runs/{run.id}")
        await api.get("/api/v1/runs/nope_1_00000000")

        response = await api.get("/metrics")
        text = await response.text()

        assert 200 == response.status
        assert 'runstream_http_requests_total{method="GET",status="200"}' in text
        assert 'runstream_http_requests_total{method="GET",status="404"} 1' in text
        assert "runstream_sse_clients 0" in text
        assert "runstream_sse_dropped_total 0" in text
        run.complete()
