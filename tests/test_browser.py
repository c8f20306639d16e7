"""The web pages in headless Chromium (Debian's, driven by playwright; no downloaded browser).

A real server (``create_app`` on a free loopback port, served by a thread with its own
event loop), a real collector, and a producer logging in a background thread: the
browser opens the pages while the run logs and reads what a person would see.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit

import pytest
import redis
from aiohttp import web
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from runstream import Experiment, Run, Workspace
from runstream.consumer.server import ServerSettings, create_app
from runstream.events import OutputLogged
from tests.conftest import CollectorThread

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: A user string that would run script if a page inserted it as HTML.
XSS: Final = "<img src=x onerror=alert(1)>"

pytestmark = [
    pytest.mark.slow,
    # Skipped only outside CI: the test command installs chromium, so in CI a missing one fails.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]

#: The x values a metric's chart draws (read from its card's Plotly div), null while there is no chart.
CHART_X: Final = """name => {
    const card = [...document.querySelectorAll('#charts .card')].find(c => c.dataset.metric === name);
    const plot = card && card.querySelector('.js-plotly-plot');
    return plot && plot.data ? plot.data[0].x : null;
}"""
#: Every Content-Security-Policy violation of a page, as a console error (which ``errors`` records).
REPORT_CSP_VIOLATIONS: Final = """document.addEventListener('securitypolicyviolation', event => console.error(
    `CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || 'inline'}`
    + ` at ${event.sourceFile}:${event.lineNumber}: ${event.sample}`));"""
#: How many points a metric's chart draws, -1 while there is no chart.
POINTS: Final = f"name => {{ const x = ({CHART_X})(name); return x ? x.length : -1; }}"


class ServerThread:
    """``create_app(settings)`` on a free loopback port, in a thread with its own event loop."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.url = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001  # raised in the test's thread by __enter__
            self.error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(create_app(self.settings), handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        assert self.url, "the server did not start within 10 s"
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Producer:
    """Logs ``loss`` and a ``Y over X`` row every ``interval`` seconds in a thread; completes the run when stopped."""

    def __init__(self, run: Run, interval: float = 0.02) -> None:
        self.run = run
        self.interval = interval
        self.steps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="producer", daemon=True)

    def _main(self) -> None:
        while not self._stop.is_set():
            self.run.log("loss", 1 / (self.steps + 1))
            self.run.log_row("Y over X", x=self.steps, y=self.steps**0.5)
            self.steps += 1
            self._stop.wait(self.interval)
        self.run.complete()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop logging, complete the run, and return the number of steps logged."""
        self._stop.set()
        self._thread.join(30)
        return self.steps


def png(width: int = 48, height: int = 32) -> bytes:
    """A small RGB gradient as a PNG file."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (x * 5 % 256, y * 8 % 256, 160)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def emit_output(run: Run, *lines: str) -> None:
    """Lines of captured output, as a run that captures its script's stdout sends them."""
    run._emit(OutputLogged("stdout", list(lines), time.time()))


@pytest.fixture
def server(workspace: Workspace, start_collector: Callable[..., CollectorThread]) -> Iterator[str]:
    """The base URL of a server (and a collector) for the test's workspace."""
    start_collector(workspace)
    with ServerThread(ServerSettings(workspace=workspace.settings)) as thread:
        yield thread.url


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, started by playwright."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of the alert / confirm dialogs a page opened (each is dismissed)."""
    return []


@pytest.fixture
def errors() -> list[str]:
    """Script errors and console errors of the page (failed requests among them)."""
    return []


@pytest.fixture
def page(browser: Browser, dialogs: list[str], errors: list[str]) -> Iterator[Page]:
    """A browser tab that records its dialogs and errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.add_init_script(REPORT_CSP_VIOLATIONS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        page.close()


def wait_for(page: Page, expression: str, timeout: float = 20.0) -> None:
    """Re-evaluate ``expression`` in the page until it is true.

    Not ``page.wait_for_function``: Playwright builds its predicate with ``new Function``,
    which the pages' Content-Security-Policy refuses (no ``'unsafe-eval'``); ``evaluate``
    goes through the DevTools protocol, which the policy does not govern.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {expression}")
        page.wait_for_timeout(20)  # polling interval of a state check, not synchronisation by time


def start_run(experiment: Experiment, image: Path, display_name: str) -> Run:
    """A run with something of every kind logged, user strings that look like HTML among them."""
    run = experiment.start_logging(display_name=display_name)
    run.tag("model", "cnn")
    run.tag(XSS, XSS)
    run.add_properties({"lr": "0.01", XSS: XSS})
    run.log(XSS, 0.5)
    run.log(XSS, 0.25)
    run.log("alpha", 0.03)
    run.log("phase", "warmup")
    run.log_list("accuracy", [0.6, 0.7, 0.87])
    run.log_table("Sine Wave", {"angle": [0.0, 1.0, 2.0], "sine": [0.0, 0.84, 0.91]})
    run.log_table("scores", {"epoch": [1, 2], "train": [0.5, 0.4], XSS: ["a", "b"]})
    run.log_image("ROC", path=image)
    run.upload_file(f"outputs/{XSS}.txt", image)
    emit_output(run, "epoch 0", XSS)
    return run


def metric_title(page: Page, name: str) -> str | None:
    """The heading text of a metric's card."""
    title: str | None = page.evaluate(
        """name => {
            const card = [...document.querySelectorAll('[data-metric]')].find(c => c.dataset.metric === name);
            return card ? card.querySelector('h3, th').textContent : null;
        }""",
        name,
    )
    return title


class TestRunPage:
    """The run page grows its charts and flips its status live, and shows user strings as text."""

    def test_live_run(
        self, server: str, experiment: Experiment, page: Page, dialogs: list[str], errors: list[str], tmp_path: Path
    ) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(png())
        run = start_run(experiment, image, "live run")
        producer = Producer(run).start()
        try:
            page.goto(f"{server}/runs/{run.id}")
            page.wait_for_selector("body[data-ready=true]")
            page.evaluate("window.notReloaded = true")
            wait_for(page, f"({POINTS})('loss') > 0")
            first = page.evaluate(POINTS, "loss")
            wait_for(page, f"({POINTS})('loss') > {first + 20}")
            grown = page.evaluate(POINTS, "loss")
            running = page.get_attribute("#status", "data-status")
            log_more(run, image)
            wait_for(page, LOGGED_MORE)
        finally:
            steps = producer.stop()
        page.wait_for_selector("#status[data-status=Completed]")
        wait_for(page, f"({POINTS})('loss') === {steps} && ({POINTS})('Y over X') === {steps}")
        page.screenshot(path=tmp_path / "run.png", full_page=True)

        assert "Running" == running
        assert first < grown
        assert page.evaluate("window.notReloaded === true")
        assert list(range(steps)) == page.evaluate(CHART_X, "loss")
        assert list(range(steps)) == page.evaluate(CHART_X, "Y over X")
        assert [0, 1] == page.evaluate(CHART_X, "alpha")
        assert [0, 1] == page.evaluate(CHART_X, "late")
        assert "train" == page.text_content("#scalars tr[data-metric=phase] td")
        assert "Completed" == page.text_content("#status")
        assert XSS == metric_title(page, XSS)
        assert ["model: cnn", f"{XSS}: {XSS}", "live: yes"] == page.locator("#tags .chip").all_text_contents()
        assert XSS in page.locator("#properties th").all_text_contents()
        assert f"outputs/{XSS}.txt" in page.locator("#files a").all_text_contents()
        assert ["epoch", "train", XSS] == page.locator("#tables th").all_text_contents()
        assert ["1", "2", "3"] == page.locator("#tables td:first-child").all_text_contents()
        assert ["roc.png", "roc_1.png"] == page.locator("#images figcaption").all_text_contents()
        assert ["epoch 0", XSS, "live line"] == page.locator("#output .line").all_text_contents()
        assert 0 == page.locator("img[src=x]").count()
        assert [] == dialogs
        assert [] == errors, "\n".join(errors)


def log_more(run: Run, image: Path) -> None:
    """What the page must pick up live: a scalar that becomes a series, a new metric, a text value, a tag, a
    table row, an image and an output line."""
    run.log("alpha", 0.05)
    run.log("late", 1.0)
    run.log("late", 2.0)
    run.log("phase", "train")
    run.tag("live", "yes")
    run.log_table("scores", {"epoch": [3], "train": [0.3], XSS: ["c"]})
    run.log_image("ROC", path=image)
    emit_output(run, "live line")


#: What ``log_more`` logged, as the page shows it.
LOGGED_MORE: Final = f"""() => {{
    const points = {POINTS};
    const text = selector => (document.querySelector(selector) || {{}}).textContent;
    return points('alpha') === 2 && points('late') === 2
        && text('#scalars tr[data-metric=phase] td') === 'train'
        && text('#tags').includes('live: yes')
        && document.querySelectorAll('#tables tbody tr').length === 3
        && document.querySelectorAll('#images figure').length === 2
        && text('#output').includes('live line');
}}"""


class TestPages:
    """The experiments list, an experiment's runs and the compare view, from link to link."""

    def test_experiment_to_compare(
        self, server: str, experiment: Experiment, page: Page, dialogs: list[str], errors: list[str], tmp_path: Path
    ) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(png())
        runs = [start_run(experiment, image, f"run {i}") for i in range(2)]
        for i, run in enumerate(runs):
            for step in range(30):
                run.log("loss", (i + 1) / (step + 1))
            run.complete()

        page.goto(server)
        page.get_by_role("link", name=experiment.name).click()
        page.wait_for_selector("body[data-ready=true]")
        rows = page.locator("#runs tbody tr")
        shown = sorted(rows.locator("td:nth-child(2) a").all_text_contents())
        tags = rows.first.locator(".chip").all_text_contents()
        page.fill("#filters input[name=tag]", "model=rnn")
        page.click("#filters button[type=submit]")
        page.locator("#empty").wait_for(state="visible")
        filtered = rows.count()
        page.fill("#filters input[name=tag]", "model=cnn")
        page.click("#filters button[type=submit]")
        page.locator("#empty").wait_for(state="hidden")
        for box in page.locator("#runs tbody input[type=checkbox]").all():
            box.check()
        page.screenshot(path=tmp_path / "experiment.png", full_page=True)
        page.locator("#compare").click()
        page.wait_for_selector("body[data-ready=true]")
        page.screenshot(path=tmp_path / "compare.png", full_page=True)
        traces = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('#charts .card')].map(
                card => [card.dataset.metric, card.querySelector('.js-plotly-plot').data.length]))"""
        )

        assert ["run 0", "run 1"] == shown
        assert f"{XSS}: {XSS}" in tags
        assert 0 == filtered
        assert {"loss": 2, XSS: 2, "accuracy": 2, "Sine Wave": 2} == traces
        assert "/compare" == page.evaluate("location.pathname")
        assert [] == dialogs
        assert [] == errors, "\n".join(errors)


class TestTokens:
    """With tokens configured, a page opened with ``?token=`` loads and follows the run; a request without gets 401."""

    def test_page_with_token(
        self,
        workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        experiment: Experiment,
        page: Page,
        errors: list[str],
        tmp_path: Path,
    ) -> None:
        start_collector(workspace)
        image = tmp_path / "roc.png"
        image.write_bytes(png())
        run = start_run(experiment, image, "guarded")
        settings = ServerSettings(workspace=workspace.settings, tokens=frozenset({"s3cret"}))

        with ServerThread(settings) as server:
            refused = page.request.get(f"{server.url}/runs/{run.id}").status
            page.goto(f"{server.url}/runs/{run.id}?token=s3cret")
            page.wait_for_selector("#live[data-state=live]")  # the event stream is open
            run.complete()
            page.wait_for_selector("#status[data-status=Completed]")
            page.locator("#images img").scroll_into_view_if_needed()
            wait_for(page, "document.querySelector('#images img').complete")
            image_width = page.evaluate("document.querySelector('#images img').naturalWidth")

        assert 401 == refused
        assert 48 == image_width
        assert [] == errors, "\n".join(errors)


#: A script that reads the API with whatever the browser holds (the viewer's cookie), and says so in the title.
READ_API: Final = "fetch('/api/v1/experiments').then(r => r.text()).then(t => { document.title = 'READ ' + t; })"
ACTIVE_FILES: Final = {
    "report.html": f"<!doctype html><title>report</title><script>{READ_API}</script>",
    "diagram.svg": f'<svg xmlns="http://www.w3.org/2000/svg"><script>{READ_API}</script></svg>',
}


class TestUntrustedFiles:
    """A run's HTML or SVG file, opened by a viewer who holds the token cookie, downloads: it never runs in
    the app's origin, so it cannot read the API as the viewer."""

    @pytest.mark.parametrize("name", sorted(ACTIVE_FILES))
    def test_active_file_downloads(
        self,
        workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        experiment: Experiment,
        page: Page,
        tmp_path: Path,
        name: str,
    ) -> None:
        start_collector(workspace)
        (tmp_path / name).write_text(ACTIVE_FILES[name])
        run = experiment.start_logging()
        run.upload_file(f"outputs/{name}", tmp_path / name)
        run.complete()
        settings = ServerSettings(workspace=workspace.settings, tokens=frozenset({"s3cret"}))
        api_reads: list[str] = []
        page.on("request", lambda request: api_reads.append(request.url) if "/experiments" in request.url else None)

        with ServerThread(settings) as server:
            page.goto(f"{server.url}/runs/{run.id}?token=s3cret")  # sets the cookie
            page.wait_for_selector("body[data-ready=true]")
            with page.expect_download() as download:
                page.evaluate(
                    "url => { location.href = url; }", f"{server.url}/api/v1/runs/{run.id}/files/outputs/{name}"
                )
            saved = Path(download.value.path()).read_text()
            title = page.title()

        assert name == download.value.suggested_filename
        assert ACTIVE_FILES[name] == saved
        assert not title.startswith("READ")
        assert [] == api_reads


class TestPagePolicy:
    """The pages work under their Content-Security-Policy: a chart zooms, hovers and downloads as a PNG,
    with no violation reported."""

    def test_chart_downloads_as_png(
        self, server: str, experiment: Experiment, page: Page, errors: list[str], tmp_path: Path
    ) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(png())
        run = start_run(experiment, image, "policy")
        run.complete()
        page.goto(f"{server}/runs/{run.id}")
        page.wait_for_selector("body[data-ready=true]")
        wait_for(page, f"({POINTS})('accuracy') > 0")
        card = page.locator("#charts .card").first
        card.locator(".plot-container").hover()
        card.locator('.modebar-btn[data-title="Zoom in"]').click()
        with page.expect_download() as download:
            card.locator('.modebar-btn[data-title="Download plot as a PNG"]').click()
        saved = Path(download.value.path()).read_bytes()

        assert saved.startswith(b"\x89PNG")
        assert [] == errors, "\n".join(errors)


class TestStorageActions:
    """An ended run's page archives it, restores it and deletes it; the experiment's page archives its
    ended runs and deletes it: through the token-guarded REST API."""

    def test_archive_restore_delete(
        self,
        workspace: Workspace,
        start_collector: Callable[..., CollectorThread],
        experiment: Experiment,
        page: Page,
        errors: list[str],
        tmp_path: Path,
    ) -> None:
        start_collector(workspace, archive_after=None)
        run = experiment.start_logging(display_name="kept, then not")
        for step in range(50):
            run.log("loss", 1 / (1 + step))
        run.complete()
        other = experiment.start_logging(display_name="archived with its experiment")
        other.log("loss", 0.5)
        other.complete()
        meta = workspace.keys.meta(run.id)
        settings = ServerSettings(workspace=workspace.settings, tokens=frozenset({"s3cret"}))

        with ServerThread(settings) as server, redis.Redis.from_url(workspace.settings.redis_url) as client:
            refused = page.request.delete(f"{server.url}/api/v1/runs/{run.id}").status
            page.goto(f"{server.url}/runs/{run.id}?token=s3cret")
            page.click("[data-action=archive]")
            page.wait_for_selector("[data-storage=archive]")
            archived = client.hexists(meta, "archive")
            page.reload()  # drawn from the archive now
            wait_for(page, f"({POINTS})('loss') === 50")
            page.screenshot(path=tmp_path / "archived-run.png", full_page=True)
            page.click("[data-action=restore]")
            page.wait_for_selector("[data-storage=redis]")
            restored = not client.hexists(meta, "archive")
            page.click("[data-action=delete-ask]")
            page.click("[data-action=delete-cancel]")
            asked_and_kept = Run(experiment, run.id).get_status()
            page.click("[data-action=delete-ask]")
            page.click("[data-action=delete]")
            page.wait_for_url(f"{server.url}/experiments/**")
            gone = page.request.get(f"{server.url}/api/v1/runs/{run.id}?token=s3cret").status
            page.click("[data-action=archive]")
            page.wait_for_selector("[data-said]:has-text('1 runs archived')")
            other_archived = client.hexists(workspace.keys.meta(other.id), "archive")
            page.click("[data-action=delete-ask]")
            page.click("[data-action=delete]")
            page.wait_for_url(lambda url: urlsplit(url).path == "/")  # the experiments' list
            experiments = page.request.get(f"{server.url}/api/v1/experiments?token=s3cret").json()

        assert 401 == refused
        assert archived
        assert restored
        assert "Completed" == asked_and_kept
        assert 404 == gone
        assert other_archived
        assert experiment.name not in json.dumps(experiments)
        assert [] == errors, "\n".join(errors)
