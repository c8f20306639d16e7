"""The server as a hostile page or a careless upload would meet it: run files that cannot act in
the app's origin, the pages' own Content-Security-Policy, cross-site requests refused, the token
cookie ``SameSite=Strict; HttpOnly``, and tokens that are not ASCII.

Each test drives the real ``create_app`` (a real Redis, a real collector) over HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from runstream import Experiment, Run

Client = TestClient[Any, Any]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
#: Files that hold script when a browser renders them as documents.
ACTIVE = {
    "report.html": b"<!doctype html><script>fetch('/api/v1/experiments')</script>",
    "diagram.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "page.xhtml": b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>',
}


async def started(experiment: Experiment) -> Run:
    """A new run whose record exists (so the API knows it)."""
    run = experiment.start_logging()
    await asyncio.to_thread(run.get_status)
    return run


def directives(policy: str) -> dict[str, str]:
    """A Content-Security-Policy header as {directive: its sources}."""
    parts = (part.strip().partition(" ") for part in policy.split(";") if part.strip())
    return {name: sources.strip() for name, _, sources in parts}


class TestRunFiles:
    """A run's files are served as attachments (raster images inline), never sniffed, and sandboxed."""

    @pytest.mark.parametrize("name", sorted(ACTIVE))
    async def test_active_files_are_sandboxed_attachments(self, api: Client, experiment: Experiment, name: str) -> None:
        run = await started(experiment)
        put = await api.put(f"/api/v1/runs/{run.id}/files/outputs/{name}", data=ACTIVE[name])

        response = await api.get(f"/api/v1/runs/{run.id}/files/outputs/{name}")
        body = await response.read()
        policy = directives(response.headers["Content-Security-Policy"])

        assert (201, 200) == (put.status, response.status)
        assert ACTIVE[name] == body
        assert response.headers["Content-Disposition"].startswith("attachment;")
        assert f'filename="{name}"' in response.headers["Content-Disposition"]
        assert "nosniff" == response.headers["X-Content-Type-Options"]
        assert "sandbox" in policy
        assert "'none'" == policy["default-src"]
        await asyncio.to_thread(run.complete)

    @pytest.mark.parametrize(("name", "content_type"), [("roc.png", "image/png"), ("photo.jpg", "image/jpeg")])
    async def test_raster_images_are_inline(
        self, api: Client, experiment: Experiment, tmp_path: Path, name: str, content_type: str
    ) -> None:
        run = await started(experiment)
        (tmp_path / name).write_bytes(PNG)
        run.upload_file(f"images/{name}", tmp_path / name)
        await asyncio.to_thread(run.complete)

        response = await api.get(f"/api/v1/runs/{run.id}/files/images/{name}")

        assert (200, content_type) == (response.status, response.content_type)
        assert response.headers["Content-Disposition"].startswith("inline;")
        assert "nosniff" == response.headers["X-Content-Type-Options"]
        assert "sandbox" in directives(response.headers["Content-Security-Policy"])

    async def test_a_name_with_quotes_and_unicode_stays_one_header_value(
        self, api: Client, experiment: Experiment
    ) -> None:
        run = await started(experiment)
        name = 'out/résumé "final"; x=1.txt'
        await api.put(f"/api/v1/runs/{run.id}/files/{name}", data=b"text")

        response = await api.get(f"/api/v1/runs/{run.id}/files/{name}")
        disposition = response.headers["Content-Disposition"]

        assert 200 == response.status
        assert 'attachment; filename="r_sum_ _final_; x=1.txt"; ' in disposition
        assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B%20x%3D1.txt" in disposition
        await asyncio.to_thread(run.complete)


class TestPagePolicy:
    """The pages and the API answer with a strict Content-Security-Policy of their own."""

    @pytest.mark.parametrize("path", ["/", "/experiments/tests", "/runs/tests_1_00000000", "/compare", "/api/v1/runs"])
    async def test_policy(self, api: Client, path: str) -> None:
        response = await api.get(path)
        policy = directives(response.headers["Content-Security-Policy"])

        assert 200 == response.status
        assert "'self'" == policy["default-src"]
        assert "'self'" == policy["script-src"]
        assert "'unsafe-inline'" not in policy["style-src"]
        assert "'none'" == policy["object-src"]
        assert "'none'" == policy["base-uri"]
        assert "'none'" == policy["frame-ancestors"]
        assert "nosniff" == response.headers["X-Content-Type-Options"]
        assert "DENY" == response.headers["X-Frame-Options"]
