"""The notebook widget (the ``notebook`` extra): a run's status, tags, live charts and output in Jupyter.

``RunDetails(run).show()`` shows the run as its record holds it and keeps it current:
a background thread runs an asyncio loop of its own, follows the run's live stream
(:func:`runstream.consumer.subscribe.subscribe`, no polling) and applies each update
to the widget models, until the run ends or :meth:`RunDetails.close` is called.

How the record read and the stream meet without gaps or doubles: the status, tags,
metric counts, output tail and the newest live-stream id are read in one MULTI (the
collector changes a run's record and its live stream in one script, so this is one
consistent moment); metric data read afterwards is cut at those counts (series only
grow); the stream is followed from that id.  A :class:`Resynced` subscriber (the
stream was trimmed past it) reads everything again.  Live updates carry at most the
newest 1024 points of a metric per batch, as for every subscriber.

Threads: the widget models are made in the caller's thread, then changed only by the
background thread, which owns :class:`RunState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator
from html import escape
from typing import TYPE_CHECKING, Any, Final, cast

import ipywidgets as widgets  # type: ignore[import-untyped]  # ipywidgets ships no annotations
import plotly.graph_objects as go  # type: ignore[import-untyped]  # plotly ships no annotations
from IPython.display import display

from runstream._log import sdk_logger
from runstream.connection import connect
from runstream.consumer._widget_state import Metric, RunState, read_record
from runstream.consumer.reader import RecordReader
from runstream.consumer.subscribe import Resynced, Update, subscribe
from runstream.errors import RunstreamError
from runstream.events import (
    TERMINAL_STATUSES,
)

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["MAX_POINTS", "OUTPUT_LINES", "RunDetails"]

#: Points drawn per chart at most; a longer series is thinned (see :func:`thin`).
MAX_POINTS: Final = 10_000
#: Output lines shown (the newest).
OUTPUT_LINES: Final = 200
#: Seconds between two redraws at least: a busy run's updates are drawn together.
REDRAW_GAP: Final = 0.1
#: Share of a core redrawing may take: the pause after a redraw is at least its time over this.
REDRAW_SHARE: Final = 0.2
#: Seconds between two refreshes of a running run's duration.
CLOCK_TICK: Final = 1.0
#: Seconds ``close`` waits for the background thread, asking it to stop every CANCEL_AGAIN seconds.
CLOSE_TIMEOUT: Final = 5.0
CANCEL_AGAIN: Final = 0.1

_log = sdk_logger("runstream.widgets")  # inside someone else's process, as the SDK is
_COLORS: Final = {"Completed": "#16a34a", "Failed": "#dc2626", "Canceled": "#6b7280"}
_SCROLL: Final = "max-height:20em;overflow:auto;display:flex;flex-direction:column-reverse"  # sticks to the end

# ------------------------------------------------------------------------------- views


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, whole = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {whole:02d} s"


def _status_html(state: RunState, note: str) -> str:
    color = _COLORS.get(state.status, "#2563eb")
    parts = [
        f"<b>{escape(state.name)}</b>",
        f'<span style="color:{color};font-weight:600">{escape(state.status)}</span>',
    ]
    if state.started is not None:
        parts.append(f"duration {_duration((state.ended or time.time()) - state.started)}")
    error = (
        f'<pre style="color:#dc2626;white-space:pre-wrap;margin:0">{escape(state.error)}</pre>' if state.error else ""
    )
    return " · ".join(parts) + error + (f"<div><small>{escape(note)}</small></div>" if note else "")


def _tags_html(tags: dict[str, str]) -> str:
    chips = " ".join(f"<code>{escape(key)}={escape(value)}</code>" for key, value in sorted(tags.items()))
    return f"<small>tags</small> {chips or '<i>none</i>'}"


def _values_html(metrics: dict[str, Metric]) -> str:
    """Metrics shown as text: strings, single values, images, tables of more than two columns."""
    rows = "".join(
        f'<tr><th style="text-align:left">{escape(name)}</th><td>{escape(metric.last)}</td>'
        f"<td><small>{f'last of {metric.count}' if metric.count > 1 else ''}</small></td></tr>"
        for name, metric in sorted(metrics.items())
        if not metric.chart
    )
    return f"<table>{rows}</table>" if rows else ""


def _axes(metric: Metric) -> tuple[str, str]:
    columns = metric.columns or ()
    if metric.kind == "table":
        return (columns[0] if len(columns) == 2 else "row"), columns[-1] if columns else ""
    return ("index" if metric.kind == "list" else "step"), ""


Chart = tuple[widgets.HTML, go.FigureWidget, widgets.VBox]  # title, line, the card holding both


def _chart() -> Chart:
    figure = go.FigureWidget(layout={"height": 260, "width": 440, "margin": {"l": 50, "r": 10, "t": 10, "b": 40}})
    figure.add_scatter(x=[], y=[], mode="lines+markers", marker={"size": 4}, hovertemplate="%{x}: %{y}<extra></extra>")
    title = widgets.HTML()
    return title, figure, widgets.VBox([title, figure])


class RunDetails:
    """A run in a notebook: status, duration, tags, a live chart per numeric metric, the output tail.

    Follows the run from the moment it is made until the run ends (its final status
    shown) or :meth:`close` is called.  Numeric metrics logged repeatedly or as lists
    are lines over their steps (or index); rows and tables of one or two columns are
    the last column over the first (or the row number); each chart draws at most
    ``max_points`` points.  Text, single values, images and wider tables show as text.

    Attributes:
        widget: the root widget (an ``ipywidgets.VBox``), to display or embed.
        status: ``ipywidgets.HTML``: the run's name, status, duration, and error if it failed.
        tags: ``ipywidgets.HTML``: the run's tags.
        values: ``ipywidgets.HTML``: the metrics shown as text, with their newest value.
        output: ``ipywidgets.HTML``: the newest ``output_lines`` lines of the run's output.

    Raises:
        RunstreamError: an offline run (it has no record).
    """

    def __init__(self, run: Run, *, output_lines: int = OUTPUT_LINES, max_points: int = MAX_POINTS) -> None:
        if run.experiment is None:
            raise RunstreamError("an offline run has no record to show")
        workspace = run.experiment.workspace
        self._url, self._keys, self._run_id = workspace.settings.redis_url, workspace.keys, run.id
        self._shape = (max(max_points, 8), output_lines)
        self._state = RunState(run.display_name, *self._shape)  # guarded by: the background thread, once started
        self._note = "reading the run…"
        self.status, self.tags, self.values, self.output = (widgets.HTML() for _ in range(4))
        self._charts: dict[str, Chart] = {}  # changed by the background thread only; read as a copy
        self._box = widgets.Box(layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox([self.status, self.tags, self.values, self._box, self.output])
        self._closing = threading.Event()
        self._lock = threading.Lock()  # guards _loop and _task: set while the background loop can take a call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._clock: asyncio.TimerHandle | None = None
        self._next_draw = 0.0  # monotonic time the next redraw may start
        self._redraw()
        self._thread = threading.Thread(target=self._in_thread, name=f"runstream-widget-{run.id}", daemon=True)
        self._thread.start()

    def show(self) -> widgets.VBox:
        """Display the widget (in Jupyter) and return it."""
        display(self.widget)  # type: ignore[no-untyped-call]  # IPython's display is not annotated
        return self.widget

    @property
    def charts(self) -> dict[str, go.FigureWidget]:
        """The live charts (plotly ``FigureWidget``), by metric name."""
        return {name: chart[1] for name, chart in dict(self._charts).items()}

    @property
    def following(self) -> bool:
        """Whether the widget still follows the run (not once the run ended, or after ``close``)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop following the run (what is shown stays); returns once the background thread has ended."""
        self._closing.set()
        deadline = time.monotonic() + CLOSE_TIMEOUT
        # Asked again until the thread ends: Python 3.11's asyncio.wait_for, which redis-py's
        # commands go through, can lose a cancellation that lands as the awaited call completes.
        while self._thread.is_alive() and threading.current_thread() is not self._thread:
            with self._lock:
                if self._loop is not None and self._task is not None:
                    self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(min(CANCEL_AGAIN, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                break

    def __enter__(self) -> RunDetails:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _in_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            if not self._closing.is_set():
                raise  # not asked for: shown as the thread's error

    async def _main(self) -> None:
        with self._lock:
            if self._closing.is_set():
                return
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        try:
            async with connect(self._url) as client:
                await self._follow(RecordReader(client, self._keys))
        except Exception as exc:  # noqa: BLE001  # shown and logged: a widget must not stop silently
            _log.exception("widget_stopped", run_id=self._run_id)
            self._note = f"stopped following the run: {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._loop = self._task = None
            self._note = "closed" if self._closing.is_set() else self._note
            for handle in (self._pending, self._clock):
                if handle is not None:
                    handle.cancel()
            self._redraw()

    async def _follow(self, reader: RecordReader) -> None:
        """Read the record, then apply the live stream from there until the run ends; again after a resync."""
        while True:
            state = RunState(self._state.name, *self._shape)
            live_id = await read_record(reader, self._run_id, state)
            self._state, self._note = state, ""
            self._redraw()
            if state.status in TERMINAL_STATUSES:
                return
            if self._clock is None:
                self._tick()
            updates = cast(  # subscribe is an async generator: closed as the loop is left
                "AsyncGenerator[Update | Resynced, None]",
                subscribe(reader.client, self._keys, self._run_id, start=live_id),
            )
            async with contextlib.aclosing(updates):
                async for item in updates:
                    if isinstance(item, Resynced):
                        _log.info("widget_resynced", run_id=self._run_id, reason=item.reason)
                        break
                    state.apply(item.event)
                    self._schedule()
                else:
                    return

    def _schedule(self) -> None:
        """Redraw soon: at once when idle (after the updates of one read), else when the last redraw's pause ends."""
        if self._pending is None:
            delay = max(0.0, self._next_draw - time.monotonic())
            self._pending = asyncio.get_running_loop().call_later(delay, self._redraw)

    def _tick(self) -> None:
        """Refresh a running run's duration (reads nothing)."""
        self.status.value = _status_html(self._state, self._note)
        self._clock = asyncio.get_running_loop().call_later(CLOCK_TICK, self._tick)

    def _redraw(self) -> None:
        self._pending, began = None, time.monotonic()
        state = self._state
        self.status.value = _status_html(state, self._note)
        self.tags.value = _tags_html(state.tags)
        self.values.value = _values_html(state.metrics)
        for name in sorted(state.changed):
            self._draw(name, state.metrics[name])
        state.changed.clear()
        lines = escape("\n".join(state.output))
        self.output.value = f'<div style="{_SCROLL}"><pre>{lines}</pre></div>'
        ended = time.monotonic()
        self._next_draw = ended + max(REDRAW_GAP, (ended - began) / REDRAW_SHARE)

    def _draw(self, name: str, metric: Metric) -> None:
        chart = self._charts.get(name)
        if (chart is not None) != metric.chart:  # a chart to add (a scalar logged again) or to drop (text came)
            chart = _chart() if metric.chart else None
            if chart is None:
                del self._charts[name]
            else:
                self._charts[name] = chart
            self._box.children = tuple(card for _, (_, _, card) in sorted(self._charts.items()))
        if chart is None:
            return
        title, figure, _ = chart
        unit, drawn = ("rows" if metric.kind == "table" else "points"), len(metric.ys)
        note = f"{metric.count} {unit}" + (f", {drawn} drawn" if drawn < metric.count else "")
        title.value = f"<b>{escape(name)}</b> <small>{note}</small>"
        x_title, y_title = _axes(metric)
        with figure.batch_update():
            figure.data[0].x, figure.data[0].y = tuple(metric.xs), tuple(metric.ys)
            figure.data[0].mode = "lines" if drawn > 50 else "lines+markers"
            figure.layout.xaxis.title.text = escape(x_title, quote=False)
            figure.layout.yaxis.title.text = escape(y_title, quote=False)
