"""Oversize calls: a call too big for one stream entry is split, or refused at the call.

What a user notices: a 72 MB ``log_list``, a large table or many long strings arrive whole,
beside everything else the run logged (its start, a small metric, its status), and nothing
is dead-lettered; a single value that cannot fit in any entry (a row wider than an entry)
is refused with a ``ValueError`` that names the metric and the limit, and the run's other
data is as if the call had never been made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import cast

import pytest
import redis
from structlog.testing import capture_logs

from runstream import Experiment, Run, Workspace
from runstream._batcher import MAX_BATCH_WEIGHT, Item, RunHandle, build_batches
from runstream.codec import MAX_BATCH_BYTES, Batch, decode_entry
from runstream.events import (
    Event,
    HeartbeatSent,
    ListLogged,
    MetricsLogged,
    OutputLogged,
    PropertiesAdded,
    RunStarted,
    TableLogged,
    TagsSet,
    Value,
)
from runstream.validation import MAX_ROW_BYTES
from tests.conftest import CollectorThread, read_batches

StartCollector = Callable[..., CollectorThread]

#: The longest str a value may be, in characters (events.MAX_STR_LEN).
LONGEST = 65_536


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def dead_letters(client: redis.Redis, workspace: Workspace) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(workspace.keys.deadletter()))


def finish(run: Run) -> dict[str, object]:
    """Complete ``run`` (bounded for a large run) and return its details."""
    run.complete(timeout=60)
    return run.get_details()


def built(items: list[Item], runs: int = 1) -> list[Batch]:
    """The batches one drain of ``items`` makes, decoded, each checked against both bounds."""
    handles = [RunHandle(i, f"run{i}", f"stream{i}", None) for i in range(runs)]  # type: ignore[arg-type]  # no channel: not sent
    batches = []
    for _, out in build_batches(items, "p", handles):
        assert len(out.fields["b"]) <= MAX_BATCH_BYTES
        assert out.events <= MAX_BATCH_WEIGHT or len(decode_fields(out.fields).events) == 1
        batches.append(decode_fields(out.fields))
    return batches


def decode_fields(fields: object) -> Batch:
    assert isinstance(fields, dict)
    return decode_entry({k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()})


def joined(batches: list[Batch], run_id: str) -> list[tuple[str, str, list[object]]]:
    """The run's events with pieces of one event joined again: (type, name, values or rows)."""
    out: list[tuple[str, str, list[object]]] = []
    for event in (e for b in batches if b.run_id == run_id for e in b.events):
        items: list[object]
        match event:
            case MetricsLogged(name, steps, values, _):
                key, items = (event.TYPE, name), list(zip(steps, values, strict=True))
            case ListLogged(name, values, _):
                key, items = (event.TYPE, name), list(values)
            case TableLogged(name, columns, _):
                key, items = (event.TYPE, name), list(zip(*columns.values(), strict=True))
            case TagsSet(tags, _):
                key, items = (event.TYPE, ""), list(tags.items())
            case _:
                key, items = (event.TYPE, ""), [event]
        if out and out[-1][:2] == key and key[0] != "run_started":
            out[-1][2].extend(items)
        else:
            out.append((*key, items))
    return out


class TestBatchesFitAnEntry:
    """One drain of anything makes batches under both bounds, in order, with contiguous seqs."""

    def test_a_long_list_among_other_events_and_runs(self) -> None:
        started = RunStarted("e", "d", None, "Running", 1.0)
        values: list[Value] = [i * 0.5 for i in range(100_000)]
        items: list[Item] = [(0, started), (0, "lr", 0.1, None), (1, "loss", 1.0, None)]
        items += [(0, ListLogged("weights", values, 1.0)), (1, "loss", 2.0, None), (0, "lr", 0.2, None)]

        batches = built(items, runs=2)

        assert [b.seq for b in batches if b.run_id == "run0"] == list(range(1, 8))  # 100,003 weighed, 16,000 a batch
        assert [
            ("run_started", "", [started]),
            ("metric", "lr", [(0, 0.1)]),
            ("list", "weights", values),
            ("metric", "lr", [(1, 0.2)]),
        ] == joined(batches, "run0")
        assert [("metric", "loss", [(0, 1.0), (1, 2.0)])] == joined(batches, "run1")

    def test_16000_long_strings_in_one_drain(self) -> None:
        texts: list[Value] = [f"{i:05d}" + "t" * 4_995 for i in range(16_000)]  # 80 MB
        items: list[Item] = [(0, "text", text, None) for text in texts]

        batches = built(items)

        assert 80 <= len(batches) <= 110
        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
        assert [("metric", "text", list(enumerate(texts)))] == joined(batches, "run0")

    def test_a_table_of_long_strings_and_many_long_tags(self) -> None:
        table: dict[str, list[Value]] = {"i": list(range(2_000)), "s": ["s" * 10_000] * 2_000}  # 20 MB
        tags = {f"t{i}": "v" * LONGEST for i in range(100)}  # 6.5 MB in one call
        items: list[Item] = [(0, TableLogged("t", table, 1.0)), (0, TagsSet(tags, 1.0)), (0, "after", 1, None)]

        batches = built(items)

        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
        assert [
            ("table", "t", list(zip(table["i"], table["s"], strict=True))),
            ("tag", "", list(tags.items())),
            ("metric", "after", [(0, 1)]),
        ] == joined(batches, "run0")

    def test_a_table_after_a_nearly_full_batch_and_long_properties_and_output(self) -> None:
        table: dict[str, list[Value]] = {"a": list(range(10_000)), "b": [0.5] * 10_000, "c": ["c"] * 10_000}
        properties = {f"p{i}": "v" * LONGEST for i in range(40)}
        lines = [f"{i} " + "o" * 50_000 for i in range(100)]
        items: list[Item] = [(0, TagsSet({"k": "v"}, 1.0))]
        items += [(0, f"m{i % 7}", float(i), None) for i in range(MAX_BATCH_WEIGHT - 2)]  # 1 left: not a row
        items += [(0, TableLogged("t", table, 1.0)), (0, PropertiesAdded(properties, 1.0))]
        items += [(0, OutputLogged("stdout", lines, 1.0))]

        batches = built(items)
        merged = joined(batches, "run0")

        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
        assert ["tag", *["metric"] * 7] == [e.TYPE for e in batches[0].events]  # the table starts the next
        assert [
            ("tag", ""),
            *[("metric", f"m{i}") for i in range(7)],
            ("table", "t"),
            ("property", ""),
            ("log_line", ""),
        ] == [m[:2] for m in merged]
        assert list(zip(table["a"], table["b"], table["c"], strict=True)) == merged[8][2]
        assert properties == {k: v for p in merged[9][2] for k, v in cast("PropertiesAdded", p).properties.items()}
        assert lines == [line for o in merged[10][2] for line in cast("OutputLogged", o).lines]

    def test_an_event_that_cannot_be_cut_goes_alone_and_is_reported(self) -> None:
        handles = [RunHandle(0, "run0", "stream0", None)]  # type: ignore[arg-type]  # no channel: not sent
        line = OutputLogged("stdout", ["o" * (2 * MAX_BATCH_BYTES)], 1.0)  # what validation never lets through
        items: list[Item] = [(0, "a", 1.0, None), (0, line), (0, TagsSet({"k": "v"}, 1.0))]

        with capture_logs() as logs:
            batches = [decode_fields(b.fields) for _, b in build_batches(items, "p", handles)]

        assert [1, 2, 3] == [b.seq for b in batches]
        assert [["metric"], ["log_line"], ["tag"]] == [[e.TYPE for e in b.events] for b in batches]
        assert ["batch_over_budget"] == [entry["event"] for entry in logs]


class TestLargeCallsArriveWhole:
    """A call bigger than an entry goes out in pieces, in consecutive batches, and reads back as one."""

    def test_a_72_mb_list_beside_a_small_metric(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        values = [i * 0.25 for i in range(9_000_000)]  # 9 bytes each in msgpack: 81 MB
        run = experiment.start_logging()
        run.log("lr", 0.01)
        run.log_list("weights", values)
        run.log("epoch", 1)
        details = finish(run)

        metrics = run.get_metrics()

        assert "Completed" == details["status"]
        assert "tests" == details["experiment"]
        assert 0.01 == metrics["lr"]
        assert 1 == metrics["epoch"]
        assert values == metrics["weights"]
        assert [] == dead_letters(client, workspace)

    def test_a_72_mb_list_of_long_strings(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        notes = [f"{i:06d}" + "n" * (LONGEST - 6) for i in range(1_100)]
        run = experiment.start_logging()
        run.log("lr", 0.01)
        run.log_list("notes", notes)
        details = finish(run)

        metrics = run.get_metrics()

        assert "Completed" == details["status"]
        assert 0.01 == metrics["lr"]
        assert notes == metrics["notes"]
        assert [] == dead_letters(client, workspace)

    def test_16000_long_strings(
        self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        texts = [f"{i:05d}" + "t" * 4_995 for i in range(16_000)]  # 80 MB in one drain
        run = experiment.start_logging()
        for text in texts:
            run.log("text", text)
        run.log("loss", 0.5)
        details = finish(run)

        metrics = run.get_metrics()

        assert "Completed" == details["status"]
        assert texts == metrics["text"]
        assert 0.5 == metrics["loss"]
        assert [] == dead_letters(client, workspace)

    def test_a_large_table(self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        rows = 400_000
        table: dict[str, list[int | float | str]] = {
            "i": list(range(rows)),
            "x": [i / 3 for i in range(rows)],
            "label": [f"row {i:07d} " + "l" * 150 for i in range(rows)],  # ~70 MB in all
        }
        run = experiment.start_logging()
        run.log_table("samples", table)
        run.log_row("samples", i=rows, x=0.0, label="last")
        details = finish(run)

        metrics = run.get_metrics()

        assert "Completed" == details["status"]
        assert {
            "i": [*table["i"], rows],
            "x": [*table["x"], 0.0],
            "label": [*table["label"], "last"],
        } == metrics["samples"]
        assert [] == dead_letters(client, workspace)


# --------------------------------------------------------------------------- refusals


def describe(event: Event) -> tuple[object, ...]:
    """The event's type and fields, without its time (steps as a list)."""
    values = [getattr(event, f.name) for f in fields(event) if f.name != "timestamp"]
    return (event.TYPE, *[list(v) if isinstance(v, range) else v for v in values])


def events_of(run: Run) -> list[tuple[object, ...]]:
    """The run's events on its ingest stream, in order, heartbeats left out; the points of
    one metric in consecutive events as one (how the linger cut them is not the point)."""
    assert run.experiment is not None
    out: list[tuple[object, ...]] = []
    for batch in read_batches(run.experiment.workspace, run.id):
        for event in batch.events:
            if isinstance(event, HeartbeatSent):
                continue
            described = describe(event)
            if isinstance(event, MetricsLogged) and out and out[-1][:2] == described[:2]:
                _, name, steps, values = out.pop()
                steps = [*cast("list[int]", steps), *event.steps]
                described = ("metric", name, steps, [*cast("list[Value]", values), *event.values])
            out.append(described)
    return out


WIDE = {f"c{i}": "w" * LONGEST for i in range(MAX_ROW_BYTES // LONGEST + 1)}  # one row over an entry

REFUSED: list[tuple[str, Callable[[Run], object], str]] = [
    ("log-100-mb-str", lambda run: run.log("notes", "s" * 100_000_000), "65536"),
    ("list-item", lambda run: run.log_list("notes", ["ok", "s" * (LONGEST + 1)]), "65536"),
    ("table-cell", lambda run: run.log_table("notes", {"a": [1, 2], "b": ["ok", "s" * (LONGEST + 1)]}), "65536"),
    ("tag-value", lambda run: run.set_tags({"ok": "1", "notes": "s" * (LONGEST + 1)}), "65536"),
    ("property-value", lambda run: run.add_properties({"notes": "s" * (LONGEST + 1)}), "65536"),
    ("row-wider-than-an-entry", lambda run: run.log_row("notes", **WIDE), str(MAX_ROW_BYTES)),
    (
        "table-row-wider-than-an-entry",
        lambda run: run.log_table("notes", {col: ["short", value] for col, value in WIDE.items()}),
        str(MAX_ROW_BYTES),
    ),
    (
        "non-ascii-row",  # 3 bytes a character in UTF-8: the limit is in bytes
        lambda run: run.log_row(
            "notes", a="€" * LONGEST, b="€" * LONGEST, c="€" * LONGEST, d="€" * LONGEST, e="€" * LONGEST
        ),
        str(MAX_ROW_BYTES),
    ),
]


class TestValuesThatCannotFitAreRefused:
    """A value no entry can hold raises ValueError naming the metric and the limit; nothing of it is queued."""

    @pytest.mark.parametrize(("call", "limit"), [pytest.param(c, lim, id=i) for i, c, lim in REFUSED])
    def test_refused_at_the_call(self, experiment: Experiment, call: Callable[[Run], object], limit: str) -> None:
        run = experiment.start_logging()
        run.log("good", 1.5)

        with pytest.raises(ValueError, match="notes") as refused:
            call(run)
        run.log("good", 2.5)
        run.complete(timeout=None)
        run.flush()

        assert limit in str(refused.value)
        assert [
            ("run_started", "tests", run.id, None, "Running"),
            ("metric", "good", [0, 1], [1.5, 2.5]),
            ("status", "Completed", None),
        ] == events_of(run)

    def test_the_widest_row_that_fits_is_taken(self, experiment: Experiment) -> None:
        run = experiment.start_logging()
        columns = MAX_ROW_BYTES // (LONGEST + 8)
        row = {f"c{i}": "w" * LONGEST for i in range(columns)}
        run.log_row("wide", **row)
        run.flush()

        events = events_of(run)

        assert ("row", "wide", row) == events[-1]
        assert MAX_ROW_BYTES < MAX_BATCH_BYTES
