"""The collector against a real Redis: what the producer logs becomes the record records.py documents.

Every test logs through the public producer API (or, for what no producer would send,
XADDs entries the way a hostile or replaying client could), runs a real
:class:`~runstream.collector.Collector` in a thread, and reads the record back with
redis-py.  Synchronisation is always a wait on Redis state or on the collector's counters.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import msgpack
import pytest
import redis
from redis.typing import EncodableT, FieldT

from runstream import Experiment, Workspace
from runstream.codec import MAX_ENTRY_BYTES, Batch, decode_entry, decode_payload, encode_batch
from runstream.collector import CollectorSettings
from runstream.collector.aggregate import LIVE_POINTS
from runstream.collector.deadletters import LETTER_FIELD_BYTES, fields_digest
from runstream.errors import DecodeError
from runstream.events import (
    Event,
    HeartbeatSent,
    ListLogged,
    MetricsLogged,
    OutputLogged,
    PropertiesAdded,
    RunStarted,
    StatusChanged,
    Value,
)
from runstream.keys import INGEST_GROUP, Keys
from runstream.logger import get_logger
from tests.conftest import CollectorThread, RunScript, make_workspace, read_batches, read_series, wait_until

StartCollector = Callable[..., CollectorThread]
Fields = dict[bytes, bytes]

#: A 1x1 transparent PNG, as ``log_image`` would store it.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


# ------------------------------------------------------------------------- helpers


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client on the test's Redis (bytes replies)."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def text_hash(client: redis.Redis, key: str) -> dict[str, str]:
    raw = cast("dict[bytes, bytes]", client.hgetall(key))
    return {k.decode(): v.decode() for k, v in raw.items()}


def items(client: redis.Redis, key: str) -> list[bytes]:
    return cast("list[bytes]", client.lrange(key, 0, -1))


def status_of(client: redis.Redis, workspace: Workspace, run_id: str) -> str | None:
    raw = cast("bytes | None", client.hget(workspace.keys.meta(run_id), "status"))
    return None if raw is None else raw.decode()


def wait_status(client: redis.Redis, workspace: Workspace, run_id: str, status: str, timeout: float = 30.0) -> None:
    wait_until(lambda: status_of(client, workspace, run_id) == status, timeout, f"{run_id} {status}")


def typed(values: list[Value]) -> list[tuple[str, str]]:
    """Values as data that compares exactly: type and repr (NaN equals NaN)."""
    return [(type(v).__name__, repr(v)) for v in values]


def xadd_batch(client: redis.Redis, stream: str, batch: Batch) -> bytes:
    """XADD ``batch`` the way a producer does (a late, replayed or hand-made one)."""
    return cast("bytes", client.xadd(stream, cast("dict[FieldT, EncodableT]", dict(encode_batch(batch)))))


def ingest_entries(client: redis.Redis, workspace: Workspace, run_id: str) -> list[tuple[bytes, Fields]]:
    """The entries of ``run_id`` on its ingest shard, as XRANGE returns them."""
    entries = cast("list[tuple[bytes, Fields]]", client.xrange(workspace.keys.ingest_for(run_id)))
    return [(entry_id, fields) for entry_id, fields in entries if fields.get(b"r") == run_id.encode()]


def read_key(client: redis.Redis, name: bytes) -> tuple[bytes, object]:
    """A key's type and whole content."""
    kind = cast("bytes", client.type(name))
    match kind:
        case b"string":
            return kind, client.get(name)
        case b"hash":
            return kind, client.hgetall(name)
        case b"list":
            return kind, client.lrange(name, 0, -1)
        case b"set":
            return kind, client.smembers(name)
        case b"zset":
            return kind, client.zrange(name, 0, -1, withscores=True)
        case b"stream":
            return kind, client.xrange(name)
    return kind, None


def snapshot(client: redis.Redis, workspace: Workspace, run_id: str) -> dict[bytes, tuple[bytes, object]]:
    """Every key of the run's record and the workspace indexes, with their whole content."""
    keys = workspace.keys
    experiments = cast("set[bytes]", client.smembers(keys.experiments()))
    names = sorted(cast("list[bytes]", list(client.scan_iter(match=f"*{{{run_id}}}*", count=1000))))
    names += [keys.experiments().encode(), keys.live_runs().encode()]
    names += [keys.experiment_runs(e.decode()).encode() for e in experiments]
    return {name: read_key(client, name) for name in names}


def live_updates(client: redis.Redis, workspace: Workspace, run_id: str) -> list[tuple[Fields, list[Event]]]:
    entries = cast("list[tuple[bytes, Fields]]", client.xrange(workspace.keys.live(run_id)))
    return [(fields, decode_payload(fields[b"b"])) for _, fields in entries]


Point = tuple[int | None, str, str]


def points_per_metric(events: list[Event]) -> dict[str, list[Point]]:
    """The points each metric (series or list) carries in ``events``: step (None in a list), type, repr."""
    points: dict[str, list[Point]] = {}
    for event in events:
        if isinstance(event, MetricsLogged):
            steps: list[int | None] = list(event.steps)
        elif isinstance(event, ListLogged):
            steps = [None] * len(event.values)
        else:
            continue
        points.setdefault(event.name, []).extend(
            (step, type(v).__name__, repr(v)) for step, v in zip(steps, event.values, strict=True)
        )
    return points


# ----------------------------------------------------------------- the whole record


@dataclass(frozen=True)
class Logged:
    """A parent run that logged every kind of event, and its child, both collected."""

    workspace: Workspace
    run_id: str
    child_id: str
    model: bytes
    batches: list[Batch]

    @property
    def keys(self) -> Keys:
        return self.workspace.keys


@pytest.fixture(scope="module")
def logged(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """One run logged and collected for the whole module (the tests only read its record)."""
    folder = tmp_path_factory.mktemp("record")
    workspace = make_workspace(redis_url, folder / ".runstream")
    experiment = Experiment(workspace, "tests")
    settings = CollectorSettings(workspace=workspace.settings, lease_ttl=2.0, trim_interval=3600.0)
    collector: CollectorThread | None = None
    client = redis.Redis.from_url(redis_url)
    try:
        model = os.urandom(3000)
        (folder / "model.pkl").write_bytes(model)
        (folder / "roc.png").write_bytes(PNG)
        with experiment.start_logging(display_name="first try") as run:
            run.log("alpha", 0.03)
            for i in range(20_000):
                run.log("loss", 1.0 / (i + 1))
            run.log("count", 3)
            run.log("count", -(2**63))
            run.log("count", 2**64 - 1)
            run.log("flag", True)
            run.log("flag", False)
            run.log("word", "ünïcödé ✓")
            run.log("special", math.nan)
            run.log("special", math.inf)
            run.log("special", -math.inf)
            run.log("stepped", 0.1, step=10)
            run.log("stepped", 0.2, step=20)
            run.log("stepped", 0.3, step=2**64 - 1)
            run.log("mixed", 1)
            run.log("mixed", 1.5)
            run.log("mixed", "one")
            run.log_list("accuracy", [0.6, 0.7, 0.87])
            run.log_list("accuracy", [1, True, "x"])
            run.log_list("long list", [float(i) for i in range(3 * LIVE_POINTS)])
            run.log_row("Y over X", x=1, y=0.4)
            run.log_row("Y over X", x=2, y=0.5)
            run.log_table("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]})
            run.log_table("Sine Wave", {"angle": [2], "sine": [0.91]})
            run.log_image("ROC", path=folder / "roc.png")
            run.log_image("ROC", path=folder / "roc.png")
            run.tag("selected", "yes")
            run.set_tags({"a": "1", "selected": "no"})
            run.add_properties({"k": "v"})
            # As another producer of the run would send it, racing this one (the SDK refuses it here).
            run._emit(PropertiesAdded({"k": "overwritten?", "k2": "x"}, time.time()))
            run.upload_file(name="outputs/model.pkl", path_or_stream=folder / "model.pkl")
            child = run.child_run("child")
            child.log("child loss", 0.5)
            child.complete()
        batches = read_batches(workspace, run.id)  # before the collector starts trimming the stream
        collector = CollectorThread(settings).start()
        wait_status(client, workspace, run.id, "Completed")
        wait_status(client, workspace, child.id, "Completed")
        yield Logged(workspace, run.id, child.id, model, batches)
    finally:
        client.close()
        if collector is not None:
            collector.stop()


class TestRecord:
    """Every event kind lands in the record as records.py documents it."""

    def test_meta(self, client: redis.Redis, logged: Logged) -> None:
        run_id, child_id = logged.run_id, logged.child_id
        keys = logged.keys

        meta = text_hash(client, keys.meta(run_id))
        child = text_hash(client, keys.meta(child_id))

        assert {
            "experiment",
            "display_name",
            "status",
            "created_at",
            "started_at",
            "ended_at",
            "last_heartbeat",
        } == set(meta)
        assert ("tests", "first try", "Completed") == (meta["experiment"], meta["display_name"], meta["status"])
        assert float(meta["created_at"]) <= float(meta["started_at"]) <= float(meta["ended_at"])
        assert ("tests", "child", run_id, "Completed") == (
            child["experiment"],
            child["display_name"],
            child["parent_id"],
            child["status"],
        )
        assert "error" not in child

    def test_tags_and_write_once_properties(self, client: redis.Redis, logged: Logged) -> None:
        keys = logged.keys

        tags = text_hash(client, keys.tags(logged.run_id))
        properties = text_hash(client, keys.properties(logged.run_id))

        assert {"selected": "no", "a": "1"} == tags
        assert {"k": "v", "k2": "x"} == properties

    def test_metric_index_and_counts(self, client: redis.Redis, logged: Logged) -> None:
        keys = logged.keys
        expected_kinds = {
            "alpha": "series",
            "loss": "series",
            "count": "series",
            "flag": "series",
            "word": "series",
            "special": "series",
            "stepped": "series",
            "mixed": "series",
            "accuracy": "list",
            "long list": "list",
            "Y over X": "table",
            "Sine Wave": "table",
            "ROC": "image",
        }
        expected_counts = {
            "alpha": "1",
            "loss": "20000",
            "count": "3",
            "flag": "2",
            "word": "1",
            "special": "3",
            "stepped": "3",
            "mixed": "3",
            "accuracy": "6",
            "long list": str(3 * LIVE_POINTS),
            "Y over X": "2",
            "Sine Wave": "3",
            "ROC": "2",
        }

        kinds = text_hash(client, keys.metric_index(logged.run_id))
        counts = text_hash(client, keys.metric_counts(logged.run_id))

        assert expected_kinds == kinds
        assert expected_counts == counts

    @pytest.mark.parametrize(
        ("name", "steps", "values"),
        [
            ("alpha", [0], [0.03]),
            ("loss", list(range(20_000)), [1.0 / (i + 1) for i in range(20_000)]),
            ("count", [0, 1, 2], [3, -(2**63), 2**64 - 1]),
            ("flag", [0, 1], [True, False]),
            ("word", [0], ["ünïcödé ✓"]),
            ("special", [0, 1, 2], [math.nan, math.inf, -math.inf]),
            ("stepped", [10, 20, 2**64 - 1], [0.1, 0.2, 0.3]),
            ("mixed", [0, 1, 2], [1, 1.5, "one"]),
            ("accuracy", [0, 1, 2, 0, 1, 2], [0.6, 0.7, 0.87, 1, True, "x"]),
        ],
    )
    def test_series_keep_steps_values_and_types(
        self, logged: Logged, name: str, steps: list[int], values: list[Value]
    ) -> None:
        series = read_series(logged.workspace, logged.run_id, name)

        assert steps == series.steps
        assert typed(values) == typed(series.values)
        assert all(not math.isnan(t) and t > 0 for t in series.timestamps)

    def test_tables_rows_and_images(self, client: redis.Redis, logged: Logged) -> None:
        keys = logged.keys

        rows = [msgpack.unpackb(item) for item in items(client, keys.metric_values(logged.run_id, "Y over X"))]
        table = [msgpack.unpackb(item) for item in items(client, keys.metric_values(logged.run_id, "Sine Wave"))]
        images = items(client, keys.metric_values(logged.run_id, "ROC"))

        # A table's rows are stored in chunks, one per batch: a batch that filled up
        # (MAX_BATCH_WEIGHT) mid-call ends a chunk there, wherever the sender's drain fell.
        joined: dict[str, list[object]] = {"angle": [], "sine": []}
        for chunk in table:
            assert set(chunk) == {"angle", "sine"}, chunk
            assert len(chunk["angle"]) == len(chunk["sine"]) > 0, chunk
            for column, cells in chunk.items():
                joined[column] += cells

        assert [{"x": [1], "y": [0.4]}, {"x": [2], "y": [0.5]}] == rows
        assert {"angle": [0, 1, 2], "sine": [0.0, 0.84, 0.91]} == joined
        assert 2 <= len(table) <= 3, "a chunk per log_table call, or one more where a batch ended mid-call"
        assert [b"roc.png", b"roc_1.png"] == images

    def test_files(self, client: redis.Redis, logged: Logged) -> None:
        run_id, model = logged.run_id, logged.model
        expected = {
            b"outputs/model.pkl": (len(model), hashlib.sha256(model).hexdigest()),
            b"roc.png": (len(PNG), hashlib.sha256(PNG).hexdigest()),
            b"roc_1.png": (len(PNG), hashlib.sha256(PNG).hexdigest()),
        }

        files = {
            name: msgpack.unpackb(value)
            for name, value in cast("dict[bytes, bytes]", client.hgetall(logged.keys.files(run_id))).items()
        }

        assert expected == {name: (f["size"], f["sha256"]) for name, f in files.items()}
        assert all(f["ts"] > 0 for f in files.values())

    def test_children_and_indexes(self, client: redis.Redis, logged: Logged) -> None:
        run_id, child_id = logged.run_id, logged.child_id
        keys = logged.keys

        children = client.smembers(keys.children(run_id))
        experiments = client.smembers(keys.experiments())
        runs = dict(
            cast("list[tuple[bytes, float]]", client.zrange(keys.experiment_runs("tests"), 0, -1, withscores=True))
        )
        live = client.zrange(keys.live_runs(), 0, -1)

        assert {child_id.encode()} == children
        assert {b"tests"} == experiments
        assert {run_id.encode(), child_id.encode()} == set(runs)
        assert float(text_hash(client, keys.meta(run_id))["created_at"]) == runs[run_id.encode()]
        assert [] == live

    def test_applied_seqs(self, client: redis.Redis, logged: Logged) -> None:
        run_id = logged.run_id

        seqs = text_hash(client, logged.keys.applied(run_id))

        assert {get_logger().producer: str(len(logged.batches))} == seqs

    def test_live_stream(self, client: redis.Redis, logged: Logged) -> None:
        run_id = logged.run_id
        workspace = logged.workspace
        # A batch of heartbeats alone has no live update (nothing a subscriber shows): one
        # lands alone when the heartbeat's timer fires between two sends on a slow machine.
        batches = {
            (b.producer, b.seq): b for b in logged.batches if not all(isinstance(e, HeartbeatSent) for e in b.events)
        }

        updates = live_updates(client, workspace, run_id)

        assert len(batches) == len(updates)
        kinds = {type(e).__name__ for _, events in updates for e in events}
        assert {
            "RunStarted",
            "MetricsLogged",
            "ListLogged",
            "RowLogged",
            "TableLogged",
            "ImageLogged",
            "TagsSet",
            "PropertiesAdded",
            "FileUploaded",
            "StatusChanged",
        } == kinds
        for fields, events in updates:
            batch = batches[(fields[b"p"].decode(), int(fields[b"q"]))]
            expected = {name: p[-LIVE_POINTS:] for name, p in points_per_metric(batch.events).items()}
            assert expected == points_per_metric(events), f"live update of seq {batch.seq}"
            assert [e for e in batch.events if not isinstance(e, HeartbeatSent | MetricsLogged | ListLogged)] == [
                e for e in events if not isinstance(e, MetricsLogged | ListLogged)
            ]
        # The long list's values in each update that has some: it may be cut across two
        # batches (where the sender's drain fell), each update capped at LIVE_POINTS.
        parts = [part for _, events in updates if (part := points_per_metric(events).get("long list"))]
        assert all(len(part) <= LIVE_POINTS for part in parts)
        assert sum(map(len, parts)) < 3 * LIVE_POINTS  # the cap left the oldest out
        assert (None, "float", repr(float(3 * LIVE_POINTS - 1))) == parts[-1][-1]  # and kept the newest


class TestOutputLines:
    """Output lines land in the run's output stream, one entry per captured chunk (lines joined by newlines)."""

    def test_lines_in_order(self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis) -> None:
        workspace = experiment.workspace
        collector = start_collector(workspace)
        run_id = "tests_1717000000_0a1b2c3d"
        events: list[Event] = [
            RunStarted("tests", run_id, None, "Running", 1717000000.0),
            OutputLogged("stdout", ["epoch 1", "", "ünï ✓"], 1717000001.0),
            OutputLogged("stderr", ["warning"], 1717000002.0),
        ]
        xadd_batch(client, workspace.keys.ingest_for(run_id), Batch(run_id, "hand", 1, events))
        wait_until(lambda: collector.stats.applied == 1, what="the batch applied")

        entries = cast("list[tuple[bytes, Fields]]", client.xrange(workspace.keys.output(run_id)))

        assert [
            {b"s": b"stdout", b"l": "epoch 1\n\nünï ✓".encode(), b"t": b"1717000001.0"},
            {b"s": b"stderr", b"l": b"warning", b"t": b"1717000002.0"},
        ] == [fields for _, fields in entries]


# -------------------------------------------------------------------- exactly once


class TestReplay:
    """A replayed or duplicated batch changes nothing in the record; the collector counts it as deduped."""

    def test_replayed_while_running_and_after_completion(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        run = experiment.start_logging()
        stream = workspace.keys.ingest_for(run.id)
        for i in range(1000):
            run.log("loss", float(i))
        run.tag("phase", "one")
        run.flush()
        early = ingest_entries(client, workspace, run.id)  # read before a collector trims them
        # trim_interval: after its first pass, the collector leaves the stream to the test
        collector = start_collector(workspace, trim_interval=3600.0)
        wait_until(lambda: text_hash(client, workspace.keys.metric_counts(run.id)).get("loss") == "1000", what="1000")
        for _ in range(3):
            for _, fields in early:
                client.xadd(stream, cast("dict[FieldT, EncodableT]", fields))
        wait_until(lambda: collector.stats.deduped == 3 * len(early), what="early replays deduped")
        for i in range(1000, 2000):
            run.log("loss", float(i))
        run.tag("phase", "two")
        run.complete()
        wait_status(client, workspace, run.id, "Completed")
        wait_until(lambda: not client.xpending(workspace.keys.ingest_for(run.id), INGEST_GROUP)["pending"])
        before = snapshot(client, workspace, run.id)
        deduped = collector.stats.deduped
        everything = early + ingest_entries(client, workspace, run.id)
        for _ in range(3):
            for _, fields in everything:
                client.xadd(stream, cast("dict[FieldT, EncodableT]", fields))
        wait_until(lambda: collector.stats.deduped == deduped + 3 * len(everything), what="late replays deduped")

        after = snapshot(client, workspace, run.id)
        series = read_series(workspace, run.id, "loss")

        assert early
        assert before == after
        assert [float(i) for i in range(2000)] == series.values
        assert list(range(2000)) == series.steps
        assert {"phase": "two"} == text_hash(client, workspace.keys.tags(run.id))
        assert "2000" == text_hash(client, workspace.keys.metric_counts(run.id))["loss"]

    def test_a_batch_added_twice_in_a_row_applies_once(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        collector = start_collector(workspace)
        run_id = "tests_1717000000_00000001"
        batch = Batch(
            run_id,
            "retrying-client",
            1,
            [
                RunStarted("tests", run_id, None, "Running", 1717000000.0),
                MetricsLogged("loss", range(0, 3), [0.5, 0.25, 0.125], 1717000000.0),
            ],
        )
        stream = workspace.keys.ingest_for(run_id)
        for _ in range(2):  # a client retry after a lost reply sends one XADD twice
            xadd_batch(client, stream, batch)
        wait_until(lambda: collector.stats.applied + collector.stats.deduped == 2, what="both copies read")

        series = read_series(workspace, run_id, "loss")

        assert (1, 1) == (collector.stats.applied, collector.stats.deduped)
        assert [0.5, 0.25, 0.125] == series.values
        assert 1 == client.xlen(workspace.keys.live(run_id))

    def test_an_empty_producer_id_cannot_skip_the_seq_check(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        collector = start_collector(workspace)
        run = experiment.start_logging()
        run.log("loss", 1.0)
        run.flush()
        wait_until(lambda: text_hash(client, workspace.keys.metric_counts(run.id)).get("loss") == "1", what="loss")
        batch = Batch(run.id, "", 1, [MetricsLogged("loss", range(1, 2), [2.0], time.time())])
        for _ in range(2):
            xadd_batch(client, workspace.keys.ingest_for(run.id), batch)
        wait_until(lambda: collector.stats.dead_lettered == 2, what="both dead-lettered")
        run.complete()
        wait_status(client, workspace, run.id, "Completed")

        series = read_series(workspace, run.id, "loss")

        assert [1.0] == series.values


# -------------------------------------------------------------------------- status


class TestStatusTransitions:
    """A final status stays: late status events (a new producer's, seq 1) do not change it."""

    @pytest.mark.parametrize("finish", ["fail", "complete", "cancel"])
    def test_late_statuses_after_a_final_one(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis, finish: str
    ) -> None:
        workspace = experiment.workspace
        collector = start_collector(workspace)
        run = experiment.start_logging()
        run.log("loss", 1.0)
        if finish == "fail":
            run.fail("ValueError: boom")
        elif finish == "complete":
            run.complete()
        else:
            run.cancel()
        final = {"fail": "Failed", "complete": "Completed", "cancel": "Canceled"}[finish]
        wait_status(client, workspace, run.id, final)
        wait_until(lambda: not client.xpending(workspace.keys.ingest_for(run.id), INGEST_GROUP)["pending"])
        before = text_hash(client, workspace.keys.meta(run.id))
        applied = collector.stats.applied
        late: list[tuple[str, str | None]] = [
            ("Running", None),
            ("Completed", None),
            ("Failed", "late error"),
            ("Canceled", None),
            ("Queued", None),
        ]
        for i, (status, error) in enumerate(late):
            batch = Batch(run.id, f"late-{i}", 1, [StatusChanged(status, error, time.time())])  # type: ignore[arg-type]  # statuses from the list above
            xadd_batch(client, workspace.keys.ingest_for(run.id), batch)
        wait_until(lambda: collector.stats.applied == applied + len(late), what="late statuses applied")

        after = text_hash(client, workspace.keys.meta(run.id))

        assert before == after
        assert final == after["status"]
        assert ("ValueError: boom" if finish == "fail" else None) == after.get("error")

    def test_statuses_move_forward_only(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        collector = start_collector(workspace)
        run_id = "tests_1717000000_00000002"
        stream = workspace.keys.ingest_for(run_id)
        xadd_batch(client, stream, Batch(run_id, "a", 1, [RunStarted("tests", run_id, None, "Queued", 100.0)]))
        xadd_batch(client, stream, Batch(run_id, "a", 2, [StatusChanged("Running", None, 200.0)]))
        xadd_batch(client, stream, Batch(run_id, "b", 1, [StatusChanged("Starting", None, 250.0)]))
        xadd_batch(client, stream, Batch(run_id, "a", 3, [StatusChanged("Finalizing", None, 300.0)]))
        xadd_batch(client, stream, Batch(run_id, "a", 4, [StatusChanged("Failed", "OOM", 400.0)]))
        wait_until(lambda: collector.stats.applied == 5, what="five batches applied")

        meta = text_hash(client, workspace.keys.meta(run_id))

        assert ("Failed", "OOM") == (meta["status"], meta["error"])
        assert ("100.0", "200.0", "400.0") == (meta["created_at"], meta["started_at"], meta["ended_at"])


# ---------------------------------------------------------------------------- fuzz


def _garbage_payload(rng: random.Random) -> object:
    """Msgpack data of a wrong shape: not an array of well-formed event maps."""
    scalar = rng.choice([None, True, 3, -(2**63), 2**64 - 1, 1.5, math.nan, "x", b"\x00\xff", ""])
    good = {"type": "metric", "name": "loss", "step0": 0, "values": [1.0], "ts": 1.0}
    wrong_field: dict[str, object] = dict(good)
    wrong_field[rng.choice(sorted(good))] = rng.choice(
        [None, "s", -1, [], {}, [None], math.inf, b"b", [[1]], 2**64 - 1]
    )
    if rng.random() < 0.3:
        del wrong_field[rng.choice(sorted(good))]
    return rng.choice(
        [
            scalar,
            [],
            {"type": "metric"},
            [scalar],
            [[good]],
            [good, scalar],
            [wrong_field],
            [good, wrong_field],
            [{"type": rng.choice(["nope", "METRIC", "", "heartbeats", "metric "]), "ts": 1.0}],
            [{"type": 7, "ts": 1.0}],
            [{"ts": 1.0}],
            [{"type": "heartbeat", "ts": rng.choice([math.nan, math.inf, "1", None, True])}],
            [{"type": "status", "status": rng.choice(["Done", "running", "", 3]), "ts": 1.0}],
            [{"type": "table", "name": "t", "columns": {"a": [1], "b": [1, 2]}, "ts": 1.0}],
            [{"type": "metric", "name": "m", "steps": [0, 1], "values": [1.0], "ts": 1.0}],
            [{"type": "metric", "name": "m" * 256, "step0": 0, "values": [1.0], "ts": 1.0}],
            [{"type": "row", "name": "r", "row": {}, "ts": 1.0}],
            [{"type": "file", "name": "f", "size": -1, "sha256": "0", "ts": 1.0}],
        ]
    )


def garbage_entry(rng: random.Random, run_id: str) -> Fields:
    """One stream entry the collector must refuse: broken fields or a payload of the wrong shape."""
    valid = Batch(run_id, f"fuzz-{rng.randrange(10**6)}", rng.randrange(1, 1000), [HeartbeatSent(1.0)])
    fields: Fields = {key.encode(): str(value).encode() for key, value in encode_batch(valid).items() if key != "b"}
    fields[b"b"] = encode_batch(valid)["b"]
    kind = rng.randrange(6)
    if kind == 0:  # random bytes as the payload
        fields[b"b"] = rng.randbytes(rng.choice([0, 1, 2, 5, 20, 200, 5000]))
    elif kind == 1:  # a version this collector does not know
        fields[b"v"] = rng.choice([b"0", b"2", b"1.0", b"", b"v1", b" 1", b"\xff", b"99999999999999999999"])
    elif kind == 2:  # a field missing
        del fields[rng.choice([b"v", b"r", b"p", b"q", b"b"])]
    elif kind == 3:  # a bad seq or undecodable text
        key = rng.choice([b"q", b"q", b"r", b"p"])
        fields[key] = b"\xc3\x28" if key != b"q" else rng.choice([b"0", b"-1", b"abc", b"1.5", b"", b"9" * 25, b"\xb2"])
    elif kind == 4:  # msgpack of the wrong shape
        fields[b"b"] = msgpack.packb(_garbage_payload(rng), use_bin_type=True)
    else:  # an unknown event type next to good events
        events = [{"type": "heartbeat", "ts": 1.0}, {"type": rng.choice(["log", "metrics", "x" * 300]), "ts": 1.0}]
        fields[b"b"] = msgpack.packb(events, use_bin_type=True)
    return fields


def refused(fields: Fields) -> bool:
    """Whether the codec refuses the entry (what the collector must dead-letter)."""
    try:
        decode_entry(fields)
    except DecodeError:
        return True
    return False


def assert_letter_keeps(fields: Fields, letter: dict[bytes, bytes]) -> None:
    """A dead letter keeps the entry's fields whole, or (an oversized one) their start and what it cut."""
    kept = {k[2:]: v for k, v in letter.items() if k.startswith(b"f:")}
    if sum(len(k) + len(v) for k, v in fields.items()) <= LETTER_FIELD_BYTES:
        assert fields == kept, "the dead letter keeps the entry's fields"
    else:
        assert fields_digest(fields).encode() == letter[b"sha256"]
        assert all(fields[k].startswith(v) for k, v in kept.items())


class TestFuzz:
    """Garbage mixed with a real run's batches: the run stays intact, the garbage is dead-lettered, nothing pends."""

    @pytest.mark.slow
    def test_garbage_between_good_batches(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        keys = workspace.keys
        collector = start_collector(workspace, trim_interval=3600.0)
        rng = random.Random(20240601)  # noqa: S311  # a seeded fuzzer, not cryptography
        sent: dict[tuple[str, bytes], Fields] = {}

        def add_garbage(count: int, run_id: str) -> None:
            batch: list[tuple[str, Fields]] = []
            while len(batch) < count:
                fields = garbage_entry(rng, run_id if rng.random() < 0.5 else f"fuzz_{rng.randrange(100)}_00000000")
                if refused(fields):  # (a random entry that happens to be valid is not garbage)
                    batch.append((keys.ingest(rng.randrange(keys.shards)), fields))
            pipe = client.pipeline(transaction=False)
            for stream, fields in batch:
                pipe.xadd(stream, cast("dict[FieldT, EncodableT]", fields))
            for (stream, fields), entry_id in zip(batch, pipe.execute(), strict=True):
                sent[(stream, cast("bytes", entry_id))] = fields

        run = experiment.start_logging()
        for round_ in range(10):
            for i in range(round_ * 500, (round_ + 1) * 500):
                run.log("loss", float(i))
            run.tag("round", str(round_))
            run.flush()
            add_garbage(300, run.id)
        oversized = dict(garbage_entry(rng, run.id))
        oversized.update({b"v": b"1", b"q": b"1", b"p": b"fuzz", b"r": run.id.encode()})
        oversized[b"b"] = bytes(MAX_ENTRY_BYTES + 1)
        stream = keys.ingest_for(run.id)
        sent[(stream, cast("bytes", client.xadd(stream, cast("dict[FieldT, EncodableT]", oversized))))] = oversized
        del oversized
        run.complete()
        wait_status(client, workspace, run.id, "Completed", timeout=60)
        wait_until(lambda: collector.stats.dead_lettered >= len(sent), 60, "the garbage dead-lettered")
        wait_until(
            lambda: all(not client.xpending(keys.ingest(s), INGEST_GROUP)["pending"] for s in range(keys.shards)),
            what="every ingest entry acked",
        )
        later = experiment.start_logging()
        later.log_list("after", [1, 2, 3])
        later.complete()
        wait_status(client, workspace, later.id, "Completed")

        letters = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(keys.deadletter()))
        series = read_series(workspace, run.id, "loss")
        try:
            assert len(sent) == collector.stats.dead_lettered
            assert len(sent) == len(letters)
            by_origin = {(f[b"stream"].decode(), f[b"entry"]): f for _, f in letters}
            assert set(sent) == set(by_origin)
            assert all(f[b"reason"] for f in by_origin.values())
            for origin, fields in sent.items():
                assert_letter_keeps(fields, by_origin[origin])
            assert [float(i) for i in range(5000)] == series.values
            assert list(range(5000)) == series.steps
            assert "5000" == text_hash(client, keys.metric_counts(run.id))["loss"]
            assert {"round": "9"} == text_hash(client, keys.tags(run.id))
            assert [1, 2, 3] == read_series(workspace, later.id, "after").values
            assert all(not client.xpending(keys.ingest(s), INGEST_GROUP)["pending"] for s in range(keys.shards))
        finally:  # the oversized entry and its dead letter are 128 MiB of the session's Redis
            client.delete(keys.deadletter())
            for shard in range(keys.shards):
                client.xtrim(keys.ingest(shard), maxlen=0)


# ----------------------------------------------------------------------- heartbeats

_DIE = """
import os, signal
for i in range(1000):
    run.log("loss", i * 0.5)
run.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""

# Keeps beating until another run of the experiment is Failed, says its own status at that
# moment, then completes (a wait on Redis state, bounded).
_BEAT = """
import time
import redis
keys = run.experiment.workspace.keys
client = redis.Redis.from_url(run.experiment.workspace.settings.redis_url, decode_responses=True)
run.log("loss", 1.0)
deadline = time.monotonic() + 60
def others_failed():
    ids = [r for r in client.zrange(keys.experiment_runs("scripts"), 0, -1) if r != run.id]
    return any(client.hget(keys.meta(r), "status") == "Failed" for r in ids)
while not others_failed() and time.monotonic() < deadline:
    time.sleep(0.05)
print(client.hget(keys.meta(run.id), "status"), flush=True)
run.complete()
"""


class TestHeartbeat:
    """A run whose process died without a word becomes Failed ("heartbeat lost"); a beating run does not."""

    @pytest.mark.slow
    def test_killed_process(
        self, workspace: Workspace, start_collector: StartCollector, client: redis.Redis, run_script: RunScript
    ) -> None:
        collector = start_collector(workspace, heartbeat_timeout=1.0)
        with ThreadPoolExecutor(max_workers=1) as pool:
            beating = pool.submit(run_script, workspace, _BEAT, heartbeat_interval=0.2)
            wait_until(lambda: client.zcard(workspace.keys.experiment_runs("scripts")) == 1, what="beating run")
            dead = run_script(workspace, _DIE, heartbeat_interval=0.2)
            wait_status(client, workspace, dead.run_id, "Failed")
            alive = beating.result(timeout=90)
        wait_status(client, workspace, alive.run_id, "Completed")

        meta = text_hash(client, workspace.keys.meta(dead.run_id))
        series = read_series(workspace, dead.run_id, "loss")

        assert -9 == dead.returncode
        assert ("Failed", "heartbeat lost") == (meta["status"], meta["error"])
        assert float(meta["started_at"]) <= float(meta["ended_at"])
        assert [i * 0.5 for i in range(1000)] == series.values
        assert 1 == collector.stats.heartbeats_lost
        assert (0, "Running") == (alive.returncode, alive.stdout.splitlines()[1])
        assert "error" not in text_hash(client, workspace.keys.meta(alive.run_id))
        assert [] == client.zrange(workspace.keys.live_runs(), 0, -1)


# --------------------------------------------------------------------- the budget


class TestStorageBudget:
    """A run of scalar points costs at most 16 bytes of Redis memory per point."""

    @pytest.mark.slow
    def test_a_million_points(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        points = 1_000_000
        run = experiment.start_logging()
        log = run.log
        for i in range(points):
            log("loss", i * 1e-6)
        run.complete(timeout=60)
        wait_status(client, workspace, run.id, "Completed", timeout=120)

        keys = cast("list[bytes]", list(client.scan_iter(match=f"*{{{run.id}}}*", count=1000)))
        used = sum(cast("int", client.memory_usage(key, samples=0)) for key in keys)
        per_point = used / points
        print(f"\nstorage: {used} bytes in {len(keys)} keys for {points} points = {per_point:.2f} bytes/point")  # noqa: T201  # the figure is the report

        assert read_series(workspace, run.id, "loss").values[-1] == (points - 1) * 1e-6
        assert per_point <= 16


def test_a_stream_that_lost_its_group_is_read_again(
    workspace: Workspace, client: redis.Redis, start_collector: Callable[..., CollectorThread]
) -> None:
    """A shard's stream gone with its group (a fail-over to a replica that never saw them):
    the collector makes the group again and goes on, rather than end on NOGROUP."""
    collector = start_collector(workspace)
    run = Experiment(workspace, "vanished").start_logging()
    run.log("a", 1)
    assert {"a": 1} == run.get_metrics()

    client.delete(workspace.keys.ingest_for(run.id))
    run.log("a", 2)

    assert {"a": [1, 2]} == run.get_metrics()
    assert collector.error is None
    assert collector.collector is not None
    assert workspace.keys.shard_of(run.id) in collector.collector.stats.shards
