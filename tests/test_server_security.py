"""The server as a hostile page or a careless upload would meet it: run files that cannot act in
the app's origin, the pages' own Content-Security-Policy, cross-site requests refused, the token
cookie ``SameSite=Strict; HttpOnly``, and tokens that are not ASCII.

Each test drives the real ``create_app`` (a real Redis, a real collector) over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from runstream import Experiment, Run
from runstream.consumer.server import ServerSettings, create_app
from tests.conftest import CollectorThread

Client = TestClient[Any, Any]
TOKEN = "tok-5e1c"  # noqa: S105  # a test token
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


def own_origin(client: Client) -> str:
    """The origin the test server is reached at, as a browser on its pages would send it."""
    url = client.make_url("/")
    return f"{url.scheme}://{url.host}:{url.port}"


def other_origin(client: Client) -> str:
    """Another port of the same host: another origin, whose pages a viewer may also open."""
    url = client.make_url("/")
    return f"{url.scheme}://{url.host}:{(url.port or 80) + 1}"


@pytest.fixture
async def secured(
    experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
) -> Client:
    """A client of a server that needs a token, holding the token cookie (it opened a page with ``?token=``)."""
    start_collector(experiment.workspace)
    client = await aiohttp_client(
        create_app(ServerSettings(workspace=experiment.workspace.settings, tokens=frozenset({TOKEN})))
    )
    opened = await client.get("/", params={"token": TOKEN})
    assert 200 == opened.status
    return client


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


class TestCrossSiteRequests:
    """A request that changes state is refused (403) when another origin sends it, or when the token
    cookie is all it carries and it says nothing of its origin; the server's own pages, bearer tokens and
    plain clients (the SDK, curl) pass."""

    async def test_cancel_from_another_port_with_the_cookie_is_refused(
        self, secured: Client, experiment: Experiment
    ) -> None:
        run = await started(experiment)

        forged = await secured.post(f"/api/v1/runs/{run.id}/cancel", headers={"Origin": other_origin(secured)})
        error = await forged.json()
        status_after = await asyncio.to_thread(run.get_status)
        own = await secured.post(f"/api/v1/runs/{run.id}/cancel", headers={"Origin": own_origin(secured)})

        assert (403, 403) == (forged.status, error["error"]["status"])
        assert "another origin" in error["error"]["message"]
        assert "Running" == status_after
        assert 202 == own.status
        assert "Canceled" == await asyncio.to_thread(run.get_status)

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({}, 403),  # the cookie alone, and no word of where the request comes from
            ({"Origin": "null"}, 403),  # a sandboxed document, a file:// page
            ({"Referer": "{other}/runs/x"}, 403),
            ({"Referer": "{own}/runs/x"}, 202),
            ({"Origin": "{other}", "Referer": "{own}/runs/x"}, 403),  # the Origin decides
        ],
        ids=["cookie-only", "null-origin", "other-referer", "own-referer", "other-origin-own-referer"],
    )
    async def test_origin_then_referer_decide(
        self, secured: Client, experiment: Experiment, headers: dict[str, str], expected: int
    ) -> None:
        run = await started(experiment)
        filled = {k: v.format(own=own_origin(secured), other=other_origin(secured)) for k, v in headers.items()}

        response = await secured.post(f"/api/v1/runs/{run.id}/cancel", headers=filled)

        assert expected == response.status
        await asyncio.to_thread(run.complete if expected == 403 else run.get_status)

    async def test_upload_from_another_origin_stores_nothing(self, secured: Client, experiment: Experiment) -> None:
        run = await started(experiment)
        path = f"/api/v1/runs/{run.id}/files/outputs/planted.html"

        forged = await secured.put(path, data=b"<script>1</script>", headers={"Origin": other_origin(secured)})
        fetched = await secured.get(path)
        await asyncio.to_thread(run.complete)

        assert (403, 404) == (forged.status, fetched.status)

    async def test_bearer_token_and_plain_clients_pass(
        self, secured: Client, api: Client, experiment: Experiment
    ) -> None:
        bearer_run, plain_run = await started(experiment), await started(experiment)
        secured.session.cookie_jar.clear()

        bearer = await secured.post(
            f"/api/v1/runs/{bearer_run.id}/cancel",
            headers={"Authorization": f"Bearer {TOKEN}", "Origin": other_origin(secured)},
        )
        plain = await api.post(f"/api/v1/runs/{plain_run.id}/cancel")  # no token needed, no Origin: curl

        assert (202, 202) == (bearer.status, plain.status)

    async def test_an_open_server_refuses_another_origin_too(self, api: Client, experiment: Experiment) -> None:
        run = await started(experiment)

        forged = await api.post(f"/api/v1/runs/{run.id}/cancel", headers={"Origin": other_origin(api)})
        await asyncio.to_thread(run.complete)

        assert 403 == forged.status
        assert "Completed" == await asyncio.to_thread(run.get_status)


class TestTokenCookie:
    """The cookie ``?token=`` sets is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other
    site's page, link or form makes the browser send it)."""

    async def test_cookie_attributes(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
    ) -> None:
        start_collector(experiment.workspace)
        settings = ServerSettings(workspace=experiment.workspace.settings, tokens=frozenset({TOKEN}))
        client = await aiohttp_client(create_app(settings))

        response = await client.get("/", params={"token": TOKEN})
        (cookie,) = response.headers.getall("Set-Cookie")
        attributes = {part.strip().partition("=")[0].lower() for part in cookie.split(";")[1:]}

        assert cookie.startswith(f"runstream_token={TOKEN};")
        assert {"httponly", "samesite", "path"} <= attributes
        assert "SameSite=Strict" in cookie


async def raw_get(client: Client, path: bytes, header: bytes = b"") -> int:
    """The status of a GET sent as raw bytes (a header a client library would refuse to send as is)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" + header + b"\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


class TestTokensThatAreNotAscii:
    """A token that is not ASCII, in the query, the Authorization header or the cookie, is a wrong token
    (401), not a server error; a right one that is not ASCII opens the server."""

    @pytest.mark.parametrize(
        ("path", "header"),
        [
            (b"/api/v1/runs?token=%C3%A9t%C3%A9", b""),
            (b"/api/v1/runs?token=%FF%FE", b""),
            (b"/api/v1/runs", "Authorization: Bearer été\r\n".encode()),
            (b"/api/v1/runs", b"Authorization: Bearer \xff\xfe\r\n"),
            (b"/api/v1/runs", "Cookie: runstream_token=été\r\n".encode()),
            (b"/", "Cookie: runstream_token=\u2603\r\n".encode()),
        ],
        ids=["query", "query-not-utf8", "header", "header-not-utf8", "cookie", "cookie-page"],
    )
    async def test_wrong_token_is_401(self, secured: Client, path: bytes, header: bytes) -> None:
        status = await raw_get(secured, path, header)

        assert 401 == status

    async def test_right_token_that_is_not_ascii(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], aiohttp_client: AiohttpClient
    ) -> None:
        start_collector(experiment.workspace)
        settings = ServerSettings(workspace=experiment.workspace.settings, tokens=frozenset({"clé-secrète"}))
        client = await aiohttp_client(create_app(settings))

        status = await raw_get(client, b"/api/v1/runs?token=cl%C3%A9-secr%C3%A8te")

        assert 200 == status
