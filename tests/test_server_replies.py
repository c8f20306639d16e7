"""Replies a client can act on: a cancel that cannot happen says why (409), an unknown run is 404 and a
malformed id 400, an upload onto a folder is the caller's mistake (400), and counts out of range in a
query are 400, never a 5xx.

Each test drives the real ``create_app`` (a real Redis, a real collector) over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from runstream import Experiment, Run
from runstream.consumer.api import MAX_POINTS_CAP, OUTPUT_LINES_CAP

Client = TestClient[Any, Any]


async def started(experiment: Experiment) -> Run:
    """A new run whose record exists (so the API knows it)."""
    run = experiment.start_logging()
    await asyncio.to_thread(run.get_status)
    return run


async def ended(experiment: Experiment, status: str) -> Run:
    """A run that ended with ``status`` (its record shows it)."""
    run = await started(experiment)
    finish: dict[str, Callable[[], None]] = {"Completed": run.complete, "Failed": run.fail, "Canceled": run.cancel}
    await asyncio.to_thread(finish[status])
    return run


class TestCancel:
    """Cancel answers 202 for a run that has not ended, 409 naming the status for one that has, 404 for
    an unknown run and 400 for a malformed id."""

    @pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled"])
    async def test_an_ended_run_is_409_and_keeps_its_status(
        self, api: Client, experiment: Experiment, status: str
    ) -> None:
        run = await ended(experiment, status)

        response = await api.post(f"/api/v1/runs/{run.id}/cancel")
        error = (await response.json())["error"]

        assert (409, 409) == (response.status, error["status"])
        assert status in error["message"]
        assert status == await asyncio.to_thread(run.get_status)

    @pytest.mark.parametrize(
        ("run_id", "expected"), [("tests_1_0000abcd", 404), ("nope", 404), ("%2Fetc", 400), ("%2e%2e", 400)]
    )
    async def test_unknown_or_malformed(self, api: Client, run_id: str, expected: int) -> None:
        response = await api.post(URL(f"/api/v1/runs/{run_id}/cancel", encoded=True))
        body = await response.json()

        assert (expected, expected) == (response.status, body["error"]["status"])


class TestUploadTarget:
    """An upload onto a folder of the run's files, or below one of its files, is 400 and changes nothing."""

    @pytest.mark.parametrize("target", ["outputs", "outputs/", "outputs/notes.txt/inner.txt"])
    async def test_not_a_file_name(self, api: Client, experiment: Experiment, tmp_path: Path, target: str) -> None:
        run = await started(experiment)
        (tmp_path / "notes.txt").write_text("kept")
        run.upload_file("outputs/notes.txt", tmp_path / "notes.txt")
        await asyncio.to_thread(run.flush)
        run_dir = experiment.workspace.settings.data_dir / "artifacts" / experiment.workspace.name / run.id

        response = await api.put(f"/api/v1/runs/{run.id}/files/{target}", data=b"overwritten")
        body = await response.json()
        await asyncio.to_thread(run.complete)
        files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())

        assert (400, 400) == (response.status, body["error"]["status"])
        assert ["outputs/notes.txt"] == files
        assert "kept" == (run_dir / "outputs" / "notes.txt").read_text()


class TestCounts:
    """``limit`` (output lines) and ``max_points`` (a metric's points) are integers from 1 to their cap:
    anything else is 400."""

    @pytest.mark.parametrize("limit", ["-5", "0", "abc", "1.5", str(OUTPUT_LINES_CAP + 1), "99999999999999999999"])
    async def test_output_limit(self, api: Client, experiment: Experiment, limit: str) -> None:
        run = await started(experiment)

        response = await api.get(f"/api/v1/runs/{run.id}/output", params={"limit": limit})
        body = await response.json()
        await asyncio.to_thread(run.complete)

        assert (400, 400) == (response.status, body["error"]["status"])
        assert "limit" in body["error"]["message"]

    @pytest.mark.parametrize("max_points", [str(MAX_POINTS_CAP + 1), "1000000000", "-1", "0"])
    async def test_max_points_out_of_range(self, api: Client, experiment: Experiment, max_points: str) -> None:
        run = await started(experiment)
        run.log("loss", 1.0)
        await asyncio.to_thread(run.complete)

        response = await api.get(f"/api/v1/runs/{run.id}/metrics/loss", params={"max_points": max_points})
        body = await response.json()

        assert (400, 400) == (response.status, body["error"]["status"])
        assert str(MAX_POINTS_CAP) in body["error"]["message"]

    async def test_counts_in_range_answer(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        run.log("loss", 1.0)
        await asyncio.to_thread(run.complete)

        output = await api.get(f"/api/v1/runs/{run.id}/output", params={"limit": str(OUTPUT_LINES_CAP)})
        series = await api.get(f"/api/v1/runs/{run.id}/metrics/loss", params={"max_points": str(MAX_POINTS_CAP)})

        assert (200, 200) == (output.status, series.status)
