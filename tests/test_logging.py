"""Every Run logging method, end to end: what it puts on the stream decodes to what was logged."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import pytest

from runstream import Experiment, Run
from runstream.codec import Batch
from runstream.events import (
    Event,
    FileUploaded,
    HeartbeatSent,
    ImageLogged,
    ListLogged,
    MetricsLogged,
    PropertiesAdded,
    RowLogged,
    RunStarted,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
)
from tests.conftest import read_batches


def events_of(run: Run) -> list[Event]:
    """The run's events on its stream, in order, heartbeats left out."""
    assert run.experiment is not None
    return [
        e for b in read_batches(run.experiment.workspace, run.id) for e in b.events if not isinstance(e, HeartbeatSent)
    ]


def points_of(events: list[Event], name: str) -> list[tuple[int, Value]]:
    """(step, value) of every scalar point of ``name``, in order."""
    return [
        (s, v)
        for e in events
        if isinstance(e, MetricsLogged) and e.name == name
        for s, v in zip(e.steps, e.values, strict=True)
    ]


def same(a: Value, b: Value) -> bool:
    """Equal, with NaN equal to NaN and the type kept."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


class TestRunLifecycle:
    """A run announces itself, and its final status follows everything it logged."""

    def test_start_then_complete(self, experiment: Experiment) -> None:
        run = experiment.start_logging(display_name="first try")
        run.log("x", 1)
        run.complete()

        events = events_of(run)

        assert isinstance(events[0], RunStarted)
        assert (
            events[0].experiment,
            events[0].display_name,
            events[0].parent_id,
            events[0].status,
        ) == ("tests", "first try", None, "Running")
        assert isinstance(events[-1], StatusChanged)
        assert (events[-1].status, events[-1].error) == ("Completed", None)
        assert run.status == "Completed"

    def test_run_id_is_url_safe_and_names_the_experiment(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.complete()

        assert run.id.startswith("tests_")
        assert run.id.replace("_", "").replace("-", "").replace(".", "").isalnum()

    def test_fail_records_the_error(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.fail(ValueError("diverged at step 7"))

        last = events_of(run)[-1]

        assert isinstance(last, StatusChanged)
        assert (last.status, last.error) == ("Failed", "ValueError: diverged at step 7")

    def test_cancel(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.cancel()

        last = events_of(run)[-1]

        assert isinstance(last, StatusChanged)
        assert last.status == "Canceled"

    def test_context_manager_completes_on_normal_exit(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            run.log("x", 1.5)

        last = events_of(run)[-1]

        assert isinstance(last, StatusChanged)
        assert last.status == "Completed"

    def test_context_manager_fails_with_the_error(self, experiment: Experiment) -> None:
        with pytest.raises(RuntimeError), experiment.start_logging() as run:
            raise RuntimeError("out of memory")

        last = events_of(run)[-1]

        assert isinstance(last, StatusChanged)
        assert (last.status, last.error) == ("Failed", "RuntimeError: out of memory")

    def test_child_run_names_its_parent(self, experiment: Experiment) -> None:
        with experiment.start_logging() as parent:
            child = parent.child_run("alpha=0.1")
            child.log("mse", 0.5)
            child.complete()

        started = events_of(child)[0]

        assert isinstance(started, RunStarted)
        assert (parent.id, "alpha=0.1") == (started.parent_id, started.display_name)
        assert points_of(events_of(child), "mse") == [(0, 0.5)]

    def test_attached_run_logs_to_the_same_run(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        run.log("loss", 1.0)
        again = Run(experiment, run.id)
        again.log("loss", 0.5)
        again.tag("resumed", "yes")
        run.complete()

        events = events_of(run)
        seqs = [b.seq for b in read_batches(experiment.workspace, run.id)]

        assert points_of(events, "loss") == [(0, 1.0), (1, 0.5)]
        assert seqs == sorted(set(seqs)), "one run, one producer: one seq sequence without repeats"


class TestScalars:
    """``log`` keeps values, their types, their order and their steps."""

    def test_values_keep_their_type(self, experiment: Experiment) -> None:
        logged: list[Value] = [3, 0.25, True, "adam", -(2**63), 2**64 - 1, 1e-300, math.nan, math.inf, -math.inf]
        with experiment.start_logging() as run:
            for value in logged:
                run.log("mixed", value)

        got = [v for _, v in points_of(events_of(run), "mixed")]

        assert len(logged) == len(got)
        assert all(same(a, b) for a, b in zip(logged, got, strict=True)), got

    def test_default_steps_count_per_metric(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            for i in range(3):
                run.log("loss", 1.0 / (i + 1))
                run.log("lr", 0.1)
            run.log("loss", 0.1, step=10)
            run.log("loss", 0.05)

        events = events_of(run)

        assert [s for s, _ in points_of(events, "loss")] == [0, 1, 2, 10, 11]
        assert [s for s, _ in points_of(events, "lr")] == [0, 1, 2]

    def test_unicode_names(self, experiment: Experiment) -> None:
        names = ["точность", "损失 {train}", "α/β", "🚀", "x" * 255]
        with experiment.start_logging() as run:
            for i, name in enumerate(names):
                run.log(name, i)

        events = events_of(run)

        assert [[(0, i)] for i in range(len(names))] == [points_of(events, n) for n in names]

    def test_numpy_scalars_become_python_values(self, experiment: Experiment) -> None:
        np = pytest.importorskip("numpy")
        with experiment.start_logging() as run:
            run.log("f32", np.float32(0.5))
            run.log("i64", np.int64(7), step=np.int64(3))
            run.log("flag", np.bool_(True))

        events = events_of(run)

        assert points_of(events, "f32") == [(0, 0.5)]
        assert points_of(events, "i64") == [(3, 7)]
        assert points_of(events, "flag") == [(0, True)]
        assert [float, int, bool] == [type(points_of(events, n)[0][1]) for n in ("f32", "i64", "flag")]

    def test_many_points_arrive_in_order(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            for i in range(50_000):
                run.log("loss", float(i))

        points = points_of(events_of(run), "loss")

        assert [(i, float(i)) for i in range(50_000)] == points


class TestStructuredValues:
    """Lists, rows and tables travel as logged."""

    def test_log_list(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            run.log_list("accuracy", [0.6, 0.7, 0.87])
            run.log_list("accuracy", (1, "two", False))

        lists = [e for e in events_of(run) if isinstance(e, ListLogged)]

        assert [(e.name, e.values) for e in lists] == [("accuracy", [0.6, 0.7, 0.87]), ("accuracy", [1, "two", False])]

    def test_log_row(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            run.log_row("Y over X", x=1, y=0.4)
            run.log_row("Y over X", x=2, y=math.inf)

        rows = [e.row for e in events_of(run) if isinstance(e, RowLogged)]

        assert [{"x": 1, "y": 0.4}, {"x": 2, "y": math.inf}] == rows

    def test_log_table(self, experiment: Experiment) -> None:
        table: dict[str, list[Value]] = {"angle": [0, 1, 2], "sine": [0.0, 0.84, 0.91], "label": ["a", "b", "c"]}
        with experiment.start_logging() as run:
            run.log_table("Sine Wave", table)

        tables = [e for e in events_of(run) if isinstance(e, TableLogged)]

        assert [("Sine Wave", table)] == [(e.name, e.columns) for e in tables]


class TestTagsAndProperties:
    """Tags and properties travel as str maps."""

    def test_tags(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            run.tag("selected", "yes")
            run.tag("flag")
            run.set_tags({"a": "1", "lr": 0.1, "ok": True})

        tags = [e.tags for e in events_of(run) if isinstance(e, TagsSet)]

        assert tags == [{"selected": "yes"}, {"flag": ""}, {"a": "1", "lr": "0.1", "ok": "True"}]

    def test_properties(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            run.add_properties({"k": "v", "ψ": "unicode"})

        props = [e.properties for e in events_of(run) if isinstance(e, PropertiesAdded)]

        assert props == [{"k": "v", "ψ": "unicode"}]


class TestFiles:
    """Files are stored in the artifact store and recorded as events with size and digest."""

    def test_upload_file_from_path_and_stream(self, experiment: Experiment, tmp_path: Path) -> None:
        model = tmp_path / "model.pkl"
        model.write_bytes(b"weights" * 1000)
        with experiment.start_logging() as run:
            run.upload_file(name="outputs/model.pkl", path_or_stream=str(model))
            run.upload_file("notes/readme.txt", io.BytesIO("héllo".encode()))

        files = [e for e in events_of(run) if isinstance(e, FileUploaded)]

        assert [
            ("outputs/model.pkl", 7000, hashlib.sha256(b"weights" * 1000).hexdigest()),
            ("notes/readme.txt", 6, hashlib.sha256("héllo".encode()).hexdigest()),
        ] == [(f.name, f.size, f.sha256) for f in files]
        assert run.get_file_names() == ["notes/readme.txt", "outputs/model.pkl"]

    def test_upload_folder_and_download(self, experiment: Experiment, tmp_path: Path) -> None:
        folder = tmp_path / "outputs"
        (folder / "sub").mkdir(parents=True)
        (folder / "a.txt").write_text("a")
        (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
        with experiment.start_logging() as run:
            run.upload_folder(name="outputs", path=folder)

        target = run.download_file("outputs/sub/b.bin", output_file_path=tmp_path / "copy.bin")

        assert run.get_file_names() == ["outputs/a.txt", "outputs/sub/b.bin"]
        assert [e.name for e in events_of(run) if isinstance(e, FileUploaded)] == ["outputs/a.txt", "outputs/sub/b.bin"]
        assert bytes(range(256)) == target.read_bytes()

    def test_download_of_a_missing_file(self, experiment: Experiment, tmp_path: Path) -> None:
        with experiment.start_logging() as run, pytest.raises(FileNotFoundError, match=r"nothing\.txt"):
            run.download_file("nothing.txt", tmp_path / "x")


class TestImages:
    """Images are stored as run files; the image event names the stored file."""

    def test_log_image_from_path(self, experiment: Experiment, tmp_path: Path) -> None:
        png = tmp_path / "roc.png"
        png.write_bytes(b"\x89PNG fake image")
        with experiment.start_logging() as run:
            run.log_image("ROC", path=png)
            run.log_image("ROC", path=str(png))

        events = events_of(run)
        images = [(e.name, e.file) for e in events if isinstance(e, ImageLogged)]

        assert images == [("ROC", "roc.png"), ("ROC", "roc_1.png")]  # under its own name, as Azure keeps it
        assert {"roc.png", "roc_1.png"} <= set(run.get_file_names())

    def test_log_image_from_a_matplotlib_figure(
        self, experiment: Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        matplotlib = pytest.importorskip("matplotlib")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots()
        axes.plot([0, 1], [0, 1])
        with experiment.start_logging() as run:
            run.log_image("curve", plot=figure)
            run.log_image("pyplot", plot=plt)
        plt.close(figure)

        stored = [e.file for e in events_of(run) if isinstance(e, ImageLogged)]

        assert stored == ["images/curve.png", "images/pyplot.png"]
        monkeypatch.chdir(tmp_path)  # without a target, the file lands in the working folder
        with run.download_file("images/curve.png", None).open("rb") as image:
            assert image.read(4) == b"\x89PNG"
        assert (tmp_path / "curve.png").is_file()


class TestBatches:
    """Batches carry the producer id and consecutive seqs from 1."""

    def test_seqs_are_consecutive_per_producer_and_run(self, experiment: Experiment) -> None:
        with experiment.start_logging() as run:
            for i in range(40_000):
                run.log("loss", i)
                if i % 1000 == 0:
                    run.tag("at", str(i))
        assert run.experiment is not None

        batches: list[Batch] = read_batches(run.experiment.workspace, run.id)

        assert list(range(1, len(batches) + 1)) == [b.seq for b in batches]
        assert len({b.producer for b in batches}) == 1
