"""The notebook widget: ``RunDetails`` follows a run through its widget models (no browser, no kernel).

Against the session's real Redis and a real collector: what the widget shows is read
from its models (the HTML widgets' values, the plotly traces), as a front end would.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from runstream import Experiment, Run
from runstream.consumer.widgets import RunDetails
from runstream.errors import RunstreamError
from runstream.events import OutputLogged
from tests.conftest import CollectorThread, make_workspace, wait_until

BOUND = 15.0


@pytest.fixture
def collected(experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> Experiment:
    """The experiment, with a collector running for its workspace."""
    start_collector(experiment.workspace)
    return experiment


@pytest.fixture
def widgets() -> Iterator[Callable[..., RunDetails]]:
    """Make widgets (``widgets(run, **options)``); each is closed after the test."""
    made: list[RunDetails] = []

    def make(run: Run, **options: Any) -> RunDetails:
        details = RunDetails(run, **options)
        made.append(details)
        return details

    yield make
    for details in made:
        details.close()


def emit_output(run: Run, *lines: str) -> None:
    """Captured output lines, as the supervisor of a submitted run sends them."""
    run._emit(OutputLogged("stdout", list(lines), time.time()))


def trace(details: RunDetails, name: str) -> tuple[list[Any], list[Any]]:
    """The x and y of a metric's chart (empty if it has none)."""
    chart = details.charts.get(name)
    if chart is None:
        return [], []
    return list(chart.data[0].x), list(chart.data[0].y)


def drawn(details: RunDetails, name: str) -> Callable[[], bool]:
    """Whether the metric's chart has points yet."""
    return lambda: bool(trace(details, name)[1])


def html_values(widget: Any) -> list[str]:
    """The value of every HTML widget in the tree under ``widget``."""
    found = [widget.value] if type(widget).__name__ == "HTML" else []
    for child in getattr(widget, "children", ()):
        found.extend(html_values(child))
    return found


def read(details: RunDetails) -> RunDetails:
    """The widget, once it has read the (running) run's record and follows its live stream."""
    wait_until(lambda: "Running" in details.status.value, timeout=BOUND, what="the widget's first read")
    return details


def ended(details: RunDetails) -> None:
    wait_until(lambda: not details.following, timeout=BOUND, what="the widget to stop following")


class TestLiveRun:
    """A widget made during a run shows what came before and after it, and stops by itself when the run ends."""

    def test_follows_the_run_to_its_end(self, collected: Experiment, widgets: Callable[..., RunDetails]) -> None:
        run = collected.start_logging(display_name="trial")
        run.log("loss", 1.0)
        run.log("loss", 0.5)
        emit_output(run, "line 0")
        run.get_status()  # read-your-writes: the first points are in the record

        details = widgets(run)
        wait_until(lambda: [1.0, 0.5] == trace(details, "loss")[1], timeout=BOUND, what="the recorded points")
        run.log("loss", 0.25)
        run.log("loss", 0.125)
        run.log_row("Y over X", x=1, y=0.4)
        run.log_row("Y over X", x=2, y=0.5)
        run.tag("model", "cnn")
        run.add_properties({"not": "shown"})
        emit_output(run, "line 1", "line 2")
        emit_output(run, "line 3")
        wait_until(lambda: 4 == len(trace(details, "loss")[1]), timeout=BOUND, what="the live points")
        running = details.status.value
        run.complete()
        ended(details)

        assert "Running" in running
        assert "Completed" in details.status.value
        assert "duration" in details.status.value
        assert ([0, 1, 2, 3], [1.0, 0.5, 0.25, 0.125]) == trace(details, "loss")
        assert ([1, 2], [0.4, 0.5]) == trace(details, "Y over X")
        assert "<code>model=cnn</code>" in details.tags.value
        assert "line 0\nline 1\nline 2\nline 3</pre>" in unescape(details.output.value)

    def test_no_gap_or_double_where_the_read_meets_the_stream(
        self, collected: Experiment, widgets: Callable[..., RunDetails]
    ) -> None:
        """Widgets made while points stream in show each point once, in order."""
        run = collected.start_logging()
        points, every = 6000, 600
        reached = [threading.Event() for _ in range(points // every)]

        def log() -> None:
            for i in range(points):
                run.log("x", i)
                if i % 20 == 19:
                    run.flush()
                if i % every == 0:
                    reached[i // every].set()
            run.complete()

        logger = threading.Thread(target=log)
        logger.start()
        made = []
        for milestone in reached:
            milestone.wait(BOUND)
            made.append(widgets(run))
        logger.join(BOUND)
        for details in made:
            ended(details)

        assert [list(range(points))] * len(made) == [trace(details, "x")[1] for details in made]

    def test_a_scalar_logged_again_becomes_a_chart(
        self, collected: Experiment, widgets: Callable[..., RunDetails]
    ) -> None:
        run = collected.start_logging()
        run.log("lr", 0.1)
        run.get_status()
        details = widgets(run)
        wait_until(lambda: "lr" in details.values.value, timeout=BOUND, what="the scalar as text")
        run.log("lr", 0.05)
        run.complete()
        ended(details)

        assert ([0, 1], [0.1, 0.05]) == trace(details, "lr")
        assert "lr" not in details.values.value

    def test_a_chart_turns_to_text_when_text_comes(
        self, collected: Experiment, widgets: Callable[..., RunDetails]
    ) -> None:
        run = collected.start_logging()
        run.log("phase", 1)
        run.log("phase", 2)
        run.get_status()
        details = widgets(run)
        wait_until(drawn(details, "phase"), timeout=BOUND, what="the chart")
        run.log("phase", "done")
        run.complete()
        ended(details)

        assert {} == details.charts
        assert "done</td><td><small>last of 3" in details.values.value


class TestEndedRun:
    """A widget made for a run that has ended shows its final state and stops at once."""

    def test_shapes(self, collected: Experiment, widgets: Callable[..., RunDetails], tmp_path: Path) -> None:
        image = tmp_path / "roc.png"
        image.write_bytes(b"\x89PNG")
        run = collected.start_logging()
        run.log_image("ROC", path=image)
        run.log("mixed", 1.0)
        run.log("mixed", 2.0)
        run.log("mixed", "diverged")
        run.log_list("accuracy", [0.6, 0.7, 0.87])
        run.log_table("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]})
        run.log_table("wide", {"a": [1], "b": [2], "c": ["three"]})
        run.log("gaps", 1.0)
        run.log("gaps", math.nan)
        run.log("gaps", 3)
        run.log("note", "ünïcode ✓")
        run.log("flag", True)
        run.log("flag", False)
        run.log_table("one column", {"y": [3, 4]})
        run.complete()

        details = widgets(run)
        ended(details)

        assert ([0, 1, 2], [0.6, 0.7, 0.87]) == trace(details, "accuracy")
        assert ([0, 1], [0.0, 0.84]) == trace(details, "Sine Wave")
        assert ([0, 1, 2], [1.0, None, 3]) == trace(details, "gaps")
        assert ([0, 1], [1, 0]) == trace(details, "flag")
        assert ([0, 1], [3, 4]) == trace(details, "one column")
        assert {"accuracy", "Sine Wave", "gaps", "flag", "one column"} == set(details.charts)
        assert "a=1, b=2, c=three" in details.values.value
        assert "ünïcode ✓" in details.values.value
        assert "roc.png" in details.values.value
        assert "diverged</td><td><small>last of 3" in details.values.value

    @pytest.mark.parametrize("made", ["before", "after"])
    def test_failed_run_shows_its_error(
        self, collected: Experiment, widgets: Callable[..., RunDetails], made: str
    ) -> None:
        run = collected.start_logging()
        run.get_status()
        details = read(widgets(run)) if made == "before" else None
        run.fail("diverged: <loss> is NaN")
        details = details or widgets(run)
        ended(details)

        assert "Failed" in details.status.value
        assert "diverged: &lt;loss&gt; is NaN" in details.status.value

    @pytest.mark.parametrize("made", ["before", "after"])
    def test_output_tail(self, collected: Experiment, widgets: Callable[..., RunDetails], made: str) -> None:
        run = collected.start_logging()
        run.get_status()
        details = read(widgets(run, output_lines=3)) if made == "before" else None
        emit_output(run, "one", "two")
        emit_output(run, "three", "four", "five")
        run.complete()
        details = details or widgets(run, output_lines=3)
        ended(details)

        assert "<pre>three\nfour\nfive</pre>" in details.output.value


class TestLongSeries:
    """A chart draws at most ``max_points`` points, keeping the first, the last and the extremes."""

    @pytest.mark.parametrize("made", ["before", "after"])
    def test_thinned(self, collected: Experiment, widgets: Callable[..., RunDetails], made: str) -> None:
        values = [math.sin(i / 50) for i in range(1000)]
        values[500] = 9.0
        run = collected.start_logging()
        run.get_status()
        details = read(widgets(run, max_points=100)) if made == "before" else None
        for i, value in enumerate(values):
            run.log("wave", value)
            if i % 100 == 99:
                run.flush()
        run.complete()
        details = details or widgets(run, max_points=100)
        ended(details)

        xs, ys = trace(details, "wave")
        assert len(ys) <= 100
        assert (0, 999) == (xs[0], xs[-1])
        assert xs == sorted(xs)
        assert {9.0, min(values)} <= set(ys)
        assert [values[x] for x in xs] == ys


class TestClose:
    """``close()`` stops following a live run at once and lets go of its Redis connection."""

    def test_close_a_live_run(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], redis_url: str
    ) -> None:
        collector = start_collector(experiment.workspace)
        run = experiment.start_logging()
        with redis.Redis.from_url(redis_url) as client:
            # The session's Redis serves every test: only connections opened from here on are the widget's.
            before = {c["id"] for c in client.client_list()}
            details = RunDetails(run)
            read(details)
            collector.stop()  # its own waits for new entries (XREAD on the ingest shards) would be counted below

            started = time.monotonic()
            details.close()
            took = time.monotonic() - started
            reading = [c for c in client.client_list() if c["cmd"] == "xread" and c["id"] not in before]
        run.complete()

        assert not details.following
        assert took < 2.0
        assert [] == reading
        assert "closed" in details.status.value

    def test_close_a_busy_run(self, collected: Experiment) -> None:
        """Closing while updates stream in: a cancellation that lands as a Redis reply does is not lost."""
        run = collected.start_logging()
        stop = threading.Event()

        def log() -> None:
            step = 0
            while not stop.is_set():
                run.log("x", step)
                step += 1
                time.sleep(0.001)

        logger = threading.Thread(target=log)
        logger.start()
        took = []
        try:
            for _ in range(8):
                details = RunDetails(run)
                wait_until(drawn(details, "x"), timeout=BOUND, what="the first read")
                started = time.monotonic()
                details.close()
                took.append((time.monotonic() - started, details.following))
        finally:
            stop.set()
            logger.join(BOUND)
        run.complete()

        assert [] == [(seconds, following) for seconds, following in took if seconds > 2.0 or following]

    def test_context_manager(self, collected: Experiment) -> None:
        run = collected.start_logging()
        with RunDetails(run) as details:
            pass
        run.complete()

        assert not details.following


class TestEscaping:
    """Names and values a run logs are shown as text, never as HTML."""

    def test_hostile_names(self, collected: Experiment, widgets: Callable[..., RunDetails]) -> None:
        name = "<img src=x onerror=alert(1)>"
        run = collected.start_logging(display_name=name)
        run.log(name, "<b>bold</b>")
        run.log(f"{name} loss", 1.0)
        run.log(f"{name} loss", 2.0)
        run.tag(name, name)
        emit_output(run, name)
        run.complete()

        details = widgets(run)
        ended(details)

        shown = html_values(details.widget)
        assert [] == [value for value in shown if "<img" in value or "<b>bold" in value]
        assert "&lt;img src=x onerror=alert(1)&gt;" in details.values.value
        assert "&lt;b&gt;bold&lt;/b&gt;" in details.values.value
        assert [1.0, 2.0] == trace(details, f"{name} loss")[1]
        assert any("<b>&lt;img src=x onerror=alert(1)&gt; loss</b>" in value for value in shown)


class TestUnreachable:
    """A widget that cannot reach Redis says why, logs it, and stops: nothing dies silently in its thread."""

    def test_says_why(self, tmp_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        workspace = make_workspace(f"redis://127.0.0.1:{port}", tmp_path / ".runstream")

        with capture_logs() as logs:
            details = RunDetails(Run(Experiment(workspace, "lost"), "lost_1_0123abcd"))
            ended(details)

        assert "stopped following the run: ConnectionError" in details.status.value
        # The widget's own lines, and every error (capture_logs also takes what another
        # thread of the test process logs meanwhile: an earlier test's collector's stats).
        said = [(log["event"], log["log_level"]) for log in logs]
        assert [("widget_stopped", "error")] == [s for s in said if s[0].startswith("widget_") or s[1] == "error"]


class TestShow:
    """``show()`` displays the widget and returns it; an offline run has nothing to show."""

    def test_show_returns_the_widget(
        self, collected: Experiment, widgets: Callable[..., RunDetails], capsys: pytest.CaptureFixture[str]
    ) -> None:
        run = collected.start_logging()
        run.complete()
        details = widgets(run)

        shown = details.show()

        assert details.widget is shown
        assert "VBox" in capsys.readouterr().out

    def test_offline_run(self) -> None:
        with pytest.raises(RunstreamError, match="offline"):
            RunDetails(Run.get_context())
