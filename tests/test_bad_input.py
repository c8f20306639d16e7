"""Bad input to the Run API, end to end: refused at the call, and nothing of it reaches the stream.

DESIGN.md §2: anything that is not a valid name or value is refused with ``TypeError``
or ``ValueError`` naming the metric; bad input never reaches the stream and never
crashes the logger thread.  Each case makes one bad call, then logs one good value
and reads the run's ingest stream back from a real Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from runstream import Experiment, Run
from runstream.events import Event, HeartbeatSent, MetricsLogged
from tests.conftest import read_batches

LONG_NAME = "long_" + "x" * 251  # 256 characters
EMPTY_COLUMN_NAME: dict[str, Any] = {"": 1}


class _NotAFigure:
    """Has a ``savefig``, but not one that can be called."""

    savefig = "not callable"


def _file(folder: Path) -> Path:
    """A real file to upload, so only the name is wrong."""
    path = folder / "payload.bin"
    path.write_bytes(b"payload")
    return path


class BadCall(NamedTuple):
    """One bad call, the builtin error it must raise, and text its message must hold."""

    id: str
    call: Callable[[Run, Path], object]
    error: type[Exception]
    text: str


BAD_CALLS = [
    # run.log: names
    BadCall("log-empty-name", lambda run, _: run.log("", 1.0), ValueError, "''"),
    BadCall("log-int-name", lambda run, _: run.log(42, 1.0), TypeError, "not int (42)"),  # type: ignore[arg-type]
    BadCall("log-none-name", lambda run, _: run.log(None, 1.0), TypeError, "not NoneType"),  # type: ignore[arg-type]
    BadCall("log-list-name", lambda run, _: run.log(["loss"], 1.0), TypeError, "['loss']"),  # type: ignore[arg-type]
    BadCall("log-256-char-name", lambda run, _: run.log(LONG_NAME, 1.0), ValueError, "'long_xxx"),
    BadCall("log-surrogate-name", lambda run, _: run.log("loss\ud800", 1.0), ValueError, repr("loss\ud800")),
    # run.log: values
    BadCall("log-list", lambda run, _: run.log("loss", [0.5]), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-dict", lambda run, _: run.log("loss", {"a": 0.5}), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-none", lambda run, _: run.log("loss", None), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-bytes", lambda run, _: run.log("loss", b"0.5"), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-decimal", lambda run, _: run.log("loss", Decimal("0.5")), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-complex", lambda run, _: run.log("loss", 1j), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-1d-array", lambda run, _: run.log("loss", np.array([0.5, 0.25])), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("log-int-2**64", lambda run, _: run.log("loss", 2**64), ValueError, "'loss'"),
    BadCall("log-int-below-int64", lambda run, _: run.log("loss", -(2**63) - 1), ValueError, "'loss'"),
    BadCall("log-surrogate-str", lambda run, _: run.log("loss", "\udc80"), ValueError, "'loss'"),
    BadCall("log-huge-str", lambda run, _: run.log("loss", "s" * 65_537), ValueError, "'loss'"),
    # run.log: steps
    BadCall("step-negative", lambda run, _: run.log("loss", 0.5, step=-1), ValueError, "'loss'"),
    BadCall("step-2**64", lambda run, _: run.log("loss", 0.5, step=2**64), ValueError, "'loss'"),
    BadCall("step-bool", lambda run, _: run.log("loss", 0.5, step=True), TypeError, "'loss'"),
    BadCall("step-float", lambda run, _: run.log("loss", 0.5, step=1.5), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("step-str", lambda run, _: run.log("loss", 0.5, step="3"), TypeError, "'loss'"),  # type: ignore[arg-type]
    BadCall("step-float-array", lambda run, _: run.log("loss", 0.5, step=np.array(1.5)), TypeError, "'loss'"),  # type: ignore[arg-type]
    # run.log_list
    BadCall("log_list-str", lambda run, _: run.log_list("accuracy", "0.6, 0.7"), TypeError, "'accuracy'"),
    BadCall("log_list-dict", lambda run, _: run.log_list("accuracy", {"a": 0.6}), TypeError, "'accuracy'"),
    BadCall("log_list-scalar", lambda run, _: run.log_list("accuracy", 0.6), TypeError, "'accuracy'"),
    BadCall("log_list-none-item", lambda run, _: run.log_list("accuracy", [0.6, None]), TypeError, "'accuracy'"),
    BadCall("log_list-nested", lambda run, _: run.log_list("accuracy", [[0.6]]), TypeError, "'accuracy'"),
    BadCall("log_list-2d-array", lambda run, _: run.log_list("accuracy", np.ones((2, 2))), TypeError, "'accuracy'"),
    BadCall("log_list-big-int", lambda run, _: run.log_list("accuracy", [1, 2**64]), ValueError, "'accuracy'"),
    BadCall("log_list-empty-name", lambda run, _: run.log_list("", [0.6]), ValueError, "''"),
    # run.log_row
    BadCall("log_row-no-columns", lambda run, _: run.log_row("Y over X"), ValueError, "'Y over X'"),
    BadCall("log_row-list-cell", lambda run, _: run.log_row("Y over X", x=1, y=[0.4]), TypeError, "'Y over X'"),
    BadCall("log_row-none-cell", lambda run, _: run.log_row("Y over X", x=None), TypeError, "'Y over X'"),
    BadCall(
        "log_row-empty-column", lambda run, _: run.log_row("Y over X", **EMPTY_COLUMN_NAME), ValueError, "'Y over X'"
    ),
    BadCall("log_row-long-name", lambda run, _: run.log_row(LONG_NAME, x=1), ValueError, "'long_xxx"),
    # run.log_table
    BadCall(
        "log_table-ragged",
        lambda run, _: run.log_table("Sine Wave", {"angle": [0, 1], "sine": [0.0]}),
        ValueError,
        "'Sine Wave'",
    ),
    BadCall(
        "log_table-list", lambda run, _: run.log_table("Sine Wave", [[0, 1], [0.0, 0.84]]), TypeError, "'Sine Wave'"
    ),
    BadCall("log_table-str", lambda run, _: run.log_table("Sine Wave", "angle,sine"), TypeError, "'Sine Wave'"),
    BadCall("log_table-none", lambda run, _: run.log_table("Sine Wave", None), TypeError, "'Sine Wave'"),
    BadCall("log_table-no-columns", lambda run, _: run.log_table("Sine Wave", {}), ValueError, "'Sine Wave'"),
    BadCall("log_table-scalar-column", lambda run, _: run.log_table("Sine Wave", {"a": 1}), TypeError, "'Sine Wave'"),
    BadCall("log_table-int-column-name", lambda run, _: run.log_table("Sine Wave", {1: [0]}), TypeError, "'Sine Wave'"),
    BadCall("log_table-dict-cell", lambda run, _: run.log_table("Sine Wave", {"a": [{}]}), TypeError, "'Sine Wave'"),
    # run.log_image
    BadCall(
        "log_image-missing-file", lambda run, tmp: run.log_image("ROC", path=tmp / "nope.png"), ValueError, "'ROC'"
    ),
    BadCall("log_image-folder", lambda run, tmp: run.log_image("ROC", path=tmp), ValueError, "'ROC'"),
    BadCall("log_image-neither", lambda run, _: run.log_image("ROC"), ValueError, "'ROC'"),
    BadCall(
        "log_image-both",
        lambda run, tmp: run.log_image("ROC", path=tmp / "roc.png", plot=object()),
        ValueError,
        "'ROC'",
    ),
    BadCall("log_image-plot-without-savefig", lambda run, _: run.log_image("ROC", plot=object()), TypeError, "'ROC'"),
    BadCall(
        "log_image-plot-savefig-not-callable",
        lambda run, _: run.log_image("ROC", plot=_NotAFigure()),
        TypeError,
        "'ROC'",
    ),
    BadCall("log_image-empty-name", lambda run, _: run.log_image("", plot=object()), ValueError, "''"),
    # run.tag, set_tags, add_properties
    BadCall("tag-dict-value", lambda run, _: run.tag("selected", {"a": 1}), TypeError, "'selected'"),  # type: ignore[arg-type]
    BadCall("tag-list-value", lambda run, _: run.tag("selected", ["yes"]), TypeError, "'selected'"),  # type: ignore[arg-type]
    BadCall("tag-empty-name", lambda run, _: run.tag("", "yes"), ValueError, "''"),
    BadCall("tag-int-name", lambda run, _: run.tag(1, "yes"), TypeError, "not int"),  # type: ignore[arg-type]
    BadCall("tag-surrogate-value", lambda run, _: run.tag("selected", "\ud800"), ValueError, "'selected'"),
    BadCall("set_tags-list", lambda run, _: run.set_tags([("a", "1")]), TypeError, "dict"),  # type: ignore[arg-type]
    BadCall("set_tags-bad-value", lambda run, _: run.set_tags({"a": "1", "b": {}}), TypeError, "'b'"),
    BadCall("add_properties-bad-value", lambda run, _: run.add_properties({"k": [1]}), TypeError, "'k'"),
    # run.upload_file
    BadCall("upload-dotdot", lambda run, tmp: run.upload_file("../x", _file(tmp)), ValueError, "'../x'"),
    BadCall(
        "upload-inner-dotdot", lambda run, tmp: run.upload_file("a/../../x", _file(tmp)), ValueError, "'a/../../x'"
    ),
    BadCall("upload-absolute", lambda run, tmp: run.upload_file("/etc/x", _file(tmp)), ValueError, "'/etc/x'"),
    BadCall("upload-backslash", lambda run, tmp: run.upload_file("..\\x", _file(tmp)), ValueError, repr("..\\x")),
    BadCall("upload-empty-name", lambda run, tmp: run.upload_file("", _file(tmp)), ValueError, "''"),
    BadCall(
        "upload-missing-file",
        lambda run, tmp: run.upload_file("outputs/model.pkl", tmp / "missing.pkl"),
        ValueError,
        "'outputs/model.pkl'",
    ),
    BadCall(
        "upload-not-a-stream",
        lambda run, _: run.upload_file("outputs/model.pkl", 42),  # type: ignore[arg-type]
        TypeError,
        "'outputs/model.pkl'",
    ),
]


def describe(event: Event) -> tuple[object, ...]:
    """The event's type and fields, without its time (steps as a list)."""
    values = [getattr(event, f.name) for f in fields(event) if f.name != "timestamp"]
    return (event.TYPE, *[list(v) if isinstance(v, range) else v for v in values])


def events_of(run: Run) -> list[Event]:
    """The run's events on its ingest stream, in order, heartbeats left out."""
    assert run.experiment is not None
    batches = read_batches(run.experiment.workspace, run.id)
    return [e for b in batches for e in b.events if not isinstance(e, HeartbeatSent)]


class TestBadInputNeverReachesTheStream:
    """A bad call raises naming the metric, leaves no trace on the stream, and logging goes on."""

    @pytest.mark.parametrize(("call", "error", "text"), [pytest.param(*c[1:], id=c.id) for c in BAD_CALLS])
    def test_bad_call(
        self,
        experiment: Experiment,
        tmp_path: Path,
        call: Callable[[Run, Path], object],
        error: type[Exception],
        text: str,
    ) -> None:
        run = experiment.start_logging()
        started = ("run_started", "tests", run.id, None, "Running")

        with pytest.raises(error) as refused:
            call(run, tmp_path)
        run.log("good", 1.5)
        run.flush(timeout=10)
        after_flush = [describe(e) for e in events_of(run)]
        files = run.get_file_names()
        run.complete()
        after_complete = [describe(e) for e in events_of(run)]

        assert text in str(refused.value)
        assert [started, ("metric", "good", [0], [1.5])] == after_flush
        assert [] == files
        assert [started, ("metric", "good", [0], [1.5]), ("status", "Completed", None)] == after_complete


class TestRefusedPointsLeaveNoGap:
    """A refused point takes no step: the series goes on as if the bad call never happened."""

    def test_default_steps_skip_nothing(self, experiment: Experiment) -> None:
        run = experiment.start_logging()

        run.log("loss", 0.5)
        with pytest.raises(TypeError, match="'loss'"):
            run.log("loss", [0.25])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'loss'"):
            run.log("loss", 0.25, step=-1)
        with pytest.raises(ValueError, match="'loss'"):
            run.log("loss", 2**64, step=7)
        run.log("loss", 0.125)
        run.complete()
        points = [
            (step, value)
            for e in events_of(run)
            if isinstance(e, MetricsLogged)
            for step, value in zip(e.steps, e.values, strict=True)
        ]

        assert [(0, 0.5), (1, 0.125)] == points

    def test_good_calls_around_bad_ones_all_arrive_in_order(self, experiment: Experiment, tmp_path: Path) -> None:
        run = experiment.start_logging()

        for i, bad in enumerate(BAD_CALLS):
            run.log("progress", i)
            with pytest.raises(bad.error):
                bad.call(run, tmp_path)
        run.complete()
        points = [v for e in events_of(run) if isinstance(e, MetricsLogged) and e.name == "progress" for v in e.values]
        kinds = {type(e).__name__ for e in events_of(run)}

        assert list(range(len(BAD_CALLS))) == points
        assert {"RunStarted", "MetricsLogged", "StatusChanged"} == kinds


KINDS_OF_CALLS: dict[str, Callable[[Run, Path], object]] = {
    "log": lambda run, _: run.log("m", 1.0),
    "log_list": lambda run, _: run.log_list("m", [1.0, 2.0]),
    "log_row": lambda run, _: run.log_row("m", x=1, y=2),
    "log_table": lambda run, _: run.log_table("m", {"x": [1]}),
    "log_image": lambda run, folder: run.log_image("m", path=_file(folder)),
}
KIND_OF = {"log": "series", "log_list": "series", "log_row": "table", "log_table": "table", "log_image": "image"}


class TestOneNameOneKind:
    """A metric keeps the kind it was first logged as: a series, a table or an image of one
    name could not be read back as any of them, so the second kind is refused at the call."""

    @pytest.mark.parametrize(
        ("first", "second"), [(a, b) for a in KIND_OF for b in KIND_OF if KIND_OF[a] != KIND_OF[b]]
    )
    def test_another_kind_is_refused(self, experiment: Experiment, tmp_path: Path, first: str, second: str) -> None:
        run = experiment.start_logging()
        KINDS_OF_CALLS[first](run, tmp_path)

        with pytest.raises(ValueError, match=f"'m' is a {KIND_OF[first]} in this run") as refused:
            KINDS_OF_CALLS[second](run, tmp_path)
        run.complete()
        logged = [e.TYPE for e in events_of(run) if getattr(e, "name", None) == "m"]

        assert KIND_OF[second] in str(refused.value)
        assert 1 == len(logged)

    @pytest.mark.parametrize(
        ("first", "second"), [("log", "log_list"), ("log_row", "log_table"), ("log_image", "log_image")]
    )
    def test_the_same_kind_goes_on(self, experiment: Experiment, tmp_path: Path, first: str, second: str) -> None:
        run = experiment.start_logging()
        KINDS_OF_CALLS[first](run, tmp_path)
        KINDS_OF_CALLS[second](run, tmp_path)
        run.complete()

        assert 2 == len([e for e in events_of(run) if getattr(e, "name", None) == "m"])
