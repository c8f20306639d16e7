"""The wire format: every event survives encode -> stream entry -> decode, and malformed entries are refused.

Pure tests (no Redis).  Entries are handed to :func:`decode_entry` the way redis-py
returns them: every field name and value as bytes.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstream.codec import WIRE_VERSION, Batch, decode_entry, encode_batch, encode_payload
from runstream.errors import DecodeError
from runstream.events import (
    MAX_NAME_LEN,
    RUN_STATUSES,
    Event,
    FileUploaded,
    HeartbeatSent,
    ImageLogged,
    ListLogged,
    MetricsLogged,
    OutputLogged,
    PropertiesAdded,
    RowLogged,
    RunStarted,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
)

RUN_ID = "train_1717000000_0a1b2c3d"
PRODUCER = "p-4f2a"
TS = 1717000000.25


def redis_fields(batch: Batch) -> dict[bytes, bytes]:
    """The entry that carries ``batch`` as redis-py reads it back: bytes names and values."""
    entry = encode_batch(batch)
    return {
        b"v": str(entry["v"]).encode(),
        b"r": entry["r"].encode(),
        b"p": entry["p"].encode(),
        b"q": str(entry["q"]).encode(),
        b"b": entry["b"],
    }


def round_trip(events: list[Event], seq: int = 7) -> Batch:
    return decode_entry(redis_fields(Batch(RUN_ID, PRODUCER, seq, events)))


def pack(obj: object) -> bytes:
    """A hand-made payload (msgpack, bin type on, as the producer packs)."""
    return msgpack.packb(obj, use_bin_type=True)


def raw_entry(payload: object, **overrides: bytes | None) -> dict[bytes, bytes]:
    """Entry fields around ``payload`` (packed unless bytes); an override of None drops the field."""
    entry: dict[str, bytes | None] = {
        "v": b"1",
        "r": RUN_ID.encode(),
        "p": PRODUCER.encode(),
        "q": b"7",
        "b": payload if isinstance(payload, bytes) else pack(payload),
    }
    entry.update(overrides)
    return {key.encode(): value for key, value in entry.items() if value is not None}


def plain(x: object) -> object:
    """``x`` as data that compares exactly: each scalar tagged with its type, NaN equal to NaN,
    steps as a list.  Anything that is not a well-typed event field fails the test."""
    if isinstance(x, float):
        return ("float", "nan" if math.isnan(x) else x)
    if isinstance(x, bool | int | str):
        return (type(x).__name__, x)
    if x is None:
        return None
    if isinstance(x, range | list):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        assert all(isinstance(k, str) for k in x), f"non-str key in {x!r}"
        return {k: plain(v) for k, v in x.items()}
    raise AssertionError(f"unexpected {type(x).__name__} in an event: {x!r}")


def comparable(event: Event) -> tuple[str, dict[str, object]]:
    return (type(event).__name__, {f.name: plain(getattr(event, f.name)) for f in fields(event)})


def wire_map(event: Event) -> dict[str, Any]:
    """The map ``event`` becomes inside the payload."""
    [item] = msgpack.unpackb(encode_payload([event]), raw=False)
    assert isinstance(item, dict)
    return item


#: One example of every event class (at least), as a producer would emit them.
EXAMPLES: list[Event] = [
    RunStarted("mnist", "first try", None, "Running", TS),
    RunStarted("mnist", "child", "mnist_1717000000_00000000", "Queued", TS),
    MetricsLogged("loss", range(0, 3), [0.5, 0.25, 0.125], TS),
    MetricsLogged("loss", range(10, 11), [1], TS),
    MetricsLogged("loss", [0, 5, 7], [True, False, True], TS),
    MetricsLogged("step", [2**64 - 1], [-(2**63)], TS),
    ListLogged("accuracy", [0.6, 0.7, 0.87, 1, "a", False], TS),
    ListLogged("empty", [], TS),
    RowLogged("Y over X", {"x": 1, "y": 0.4, "ok": True, "note": "n"}, TS),
    TableLogged("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]}, TS),
    ImageLogged("ROC", "images/ROC.png", TS),
    TagsSet({"selected": "yes", "empty": ""}, TS),
    PropertiesAdded({"k": "v"}, TS),
    FileUploaded("outputs/model.pkl", 1234, "ab" * 32, TS),
    OutputLogged("stdout", ["epoch 1", ""], TS),
    OutputLogged("stderr", ["warning"], TS),
    StatusChanged("Completed", None, TS),
    StatusChanged("Failed", "ValueError: boom", TS),
    HeartbeatSent(TS),
]


class TestRoundTrip:
    """An entry decodes to the batch that was encoded: same run, producer, seq and events."""

    def test_examples_cover_every_event_class(self) -> None:
        expected = set(typing.get_args(Event))

        assert expected == {type(e) for e in EXAMPLES}

    @pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
    def test_every_event_class(self, event: Event) -> None:
        batch = Batch(RUN_ID, PRODUCER, 7, [event])

        decoded = decode_entry(redis_fields(batch))

        assert batch == decoded

    def test_a_batch_of_many_events_keeps_their_order(self) -> None:
        batch = Batch(RUN_ID, PRODUCER, 2**63 - 1, list(EXAMPLES))

        decoded = decode_entry(redis_fields(batch))

        assert batch == decoded

    def test_nan_and_infinities_stay_floats(self) -> None:
        [decoded] = round_trip([ListLogged("x", [math.nan, math.inf, -math.inf, -0.0], TS)]).events

        assert isinstance(decoded, ListLogged)
        assert [float] * 4 == [type(v) for v in decoded.values]
        assert math.isnan(float(decoded.values[0]))  # a float: checked above
        assert [math.inf, -math.inf] == decoded.values[1:3]
        assert "-0.0" == repr(decoded.values[3])

    def test_nan_in_metrics_rows_and_tables(self) -> None:
        events: list[Event] = [
            MetricsLogged("m", range(0, 2), [math.nan, math.inf], TS),
            RowLogged("r", {"x": math.nan}, TS),
            TableLogged("t", {"c": [math.nan, -math.inf]}, TS),
        ]

        metric, row, table = round_trip(events).events

        assert isinstance(metric, MetricsLogged)
        assert isinstance(row, RowLogged)
        assert isinstance(table, TableLogged)
        assert isinstance(metric.values[0], float)
        assert math.isnan(metric.values[0])
        assert math.inf == metric.values[1]
        assert isinstance(row.row["x"], float)
        assert math.isnan(row.row["x"])
        assert isinstance(table.columns["c"][0], float)
        assert math.isnan(table.columns["c"][0])
        assert -math.inf == table.columns["c"][1]

    def test_values_keep_their_type(self) -> None:
        values: list[Value] = [1, 1.0, True, "1", 0, 0.0, False, ""]

        [decoded] = round_trip([ListLogged("x", values, TS)]).events

        assert isinstance(decoded, ListLogged)
        assert [(type(v), v) for v in values] == [(type(v), v) for v in decoded.values]

    def test_unicode_names_and_strings(self) -> None:
        events: list[Event] = [
            MetricsLogged("损失 λ 🚀", range(0, 1), ["ünïcödé ✓"], TS),
            TagsSet({"标签": "值 ✓"}, TS),
            RunStarted("exp", "эксперимент 🧪", None, "Running", TS),
            FileUploaded("模型/权重.bin", 0, "0" * 64, TS),
        ]

        batch = decode_entry(redis_fields(Batch("exp_1_abcdef01", "прод", 1, events)))

        assert Batch("exp_1_abcdef01", "прод", 1, events) == batch

    def test_the_longest_name(self) -> None:
        events: list[Event] = [MetricsLogged("n" * MAX_NAME_LEN, range(0, 1), [1], TS)]

        decoded = round_trip(events).events

        assert events == decoded


class TestMetricSteps:
    """Consecutive steps travel as their first step alone; any other steps as an explicit array."""

    def test_consecutive_steps_travel_as_step0(self) -> None:
        wire = wire_map(MetricsLogged("loss", range(5, 8), [0.1, 0.2, 0.3], TS))

        assert {"type": "metric", "name": "loss", "step0": 5, "values": [0.1, 0.2, 0.3], "ts": TS} == wire

    def test_step0_decodes_to_a_range(self) -> None:
        [decoded] = round_trip([MetricsLogged("loss", range(5, 8), [0.1, 0.2, 0.3], TS)]).events

        assert isinstance(decoded, MetricsLogged)
        assert range(5, 8) == decoded.steps

    def test_explicit_steps_travel_as_an_array(self) -> None:
        wire = wire_map(MetricsLogged("loss", [0, 10, 20], [0.1, 0.2, 0.3], TS))

        assert {"type": "metric", "name": "loss", "steps": [0, 10, 20], "values": [0.1, 0.2, 0.3], "ts": TS} == wire

    def test_explicit_steps_decode_to_the_same_list(self) -> None:
        [decoded] = round_trip([MetricsLogged("loss", [3, 1, 2, 2], [1, 2, 3, 4], TS)]).events

        assert isinstance(decoded, MetricsLogged)
        assert [3, 1, 2, 2] == decoded.steps

    def test_a_range_with_a_stride_travels_as_an_array(self) -> None:
        event = MetricsLogged("loss", range(0, 6, 2), [0.1, 0.2, 0.3], TS)

        wire = wire_map(event)
        [decoded] = round_trip([event]).events

        assert [0, 2, 4] == wire["steps"]
        assert "step0" not in wire
        assert isinstance(decoded, MetricsLogged)
        assert [0, 2, 4] == list(decoded.steps)


# ------------------------------------------------------------------------- property

NAMES = st.text(min_size=1, max_size=MAX_NAME_LEN)
#: Experiment names and run ids: identifiers (they name keys and folders).
IDENTIFIERS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", fullmatch=True)
FILE_NAMES = st.text(min_size=1, max_size=1024)
TIMES = st.floats(allow_nan=False, allow_infinity=False)
VALUES: st.SearchStrategy[Value] = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(), st.booleans(), st.text()
)
STEPS = st.integers(min_value=0, max_value=2**64 - 1)
STATUSES = st.sampled_from(RUN_STATUSES)
STR_MAPS = st.dictionaries(NAMES, st.text(), max_size=5)


@st.composite
def metrics(draw: st.DrawFn) -> MetricsLogged:
    values = draw(st.lists(VALUES, min_size=1, max_size=20))
    n = len(values)
    steps: range | list[int]
    kind = draw(st.sampled_from(["consecutive", "strided", "explicit"]))
    if kind == "consecutive":
        start = draw(st.integers(min_value=0, max_value=2**64 - 1 - n))
        steps = range(start, start + n)
    elif kind == "strided":
        start, stride = draw(st.integers(0, 2**32)), draw(st.integers(2, 1000))
        steps = range(start, start + stride * n, stride)
    else:
        steps = draw(st.lists(STEPS, min_size=n, max_size=n))
    return MetricsLogged(draw(NAMES), steps, values, draw(TIMES))


@st.composite
def tables(draw: st.DrawFn) -> TableLogged:
    rows = draw(st.integers(0, 5))
    columns = draw(st.dictionaries(NAMES, st.lists(VALUES, min_size=rows, max_size=rows), min_size=1, max_size=4))
    return TableLogged(draw(NAMES), columns, draw(TIMES))


EVENTS: st.SearchStrategy[Event] = st.one_of(
    st.builds(RunStarted, IDENTIFIERS, st.text(), st.none() | IDENTIFIERS, STATUSES, TIMES),
    metrics(),
    st.builds(ListLogged, NAMES, st.lists(VALUES, max_size=20), TIMES),
    st.builds(RowLogged, NAMES, st.dictionaries(NAMES, VALUES, min_size=1, max_size=5), TIMES),
    tables(),
    st.builds(ImageLogged, NAMES, FILE_NAMES, TIMES),
    st.builds(TagsSet, STR_MAPS, TIMES),
    st.builds(PropertiesAdded, STR_MAPS, TIMES),
    st.builds(FileUploaded, FILE_NAMES, STEPS, st.text(), TIMES),
    st.builds(OutputLogged, st.sampled_from(["stdout", "stderr"]), st.lists(st.text(), max_size=5), TIMES),
    st.builds(StatusChanged, STATUSES, st.none() | st.text(), TIMES),
    st.builds(HeartbeatSent, TIMES),
)

#: Any msgpack value (bin on, str or bytes map keys): what a hostile or buggy producer could send.
ANY_MSGPACK: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.binary(max_size=2), inner, max_size=3)
    ),
    max_leaves=8,
)


class TestRoundTripProperty:
    """Any batch of valid events decodes to equal events (consecutive steps may come back as a range)."""

    @given(
        events=st.lists(EVENTS, min_size=1, max_size=8),
        run_id=IDENTIFIERS,
        producer=st.text(min_size=1),
        seq=st.integers(min_value=1, max_value=2**63 - 1),
    )
    def test_any_valid_batch_round_trips(self, events: list[Event], run_id: str, producer: str, seq: int) -> None:
        expected = (run_id, producer, seq, [comparable(e) for e in events])

        batch = decode_entry(redis_fields(Batch(run_id, producer, seq, events)))

        assert expected == (batch.run_id, batch.producer, batch.seq, [comparable(e) for e in batch.events])


class TestDecodeNeverCrashes:
    """Whatever an entry holds, decoding gives well-typed events or a DecodeError, never another exception."""

    @given(st.dictionaries(st.sampled_from([b"v", b"r", b"p", b"q", b"b", b"x"]), st.binary(max_size=40)))
    def test_arbitrary_field_bytes(self, entry: dict[bytes, bytes]) -> None:
        try:
            batch = decode_entry(entry)
        except DecodeError:
            return

        assert all(comparable(e) for e in batch.events)

    @given(EVENTS, st.data())
    def test_one_field_of_a_valid_event_replaced(self, event: Event, data: st.DataObject) -> None:
        wire = wire_map(event)
        key = data.draw(st.sampled_from(sorted(wire)), label="key")
        if data.draw(st.booleans(), label="drop"):
            del wire[key]
        else:
            wire[key] = data.draw(ANY_MSGPACK, label="value")
        try:
            batch = decode_entry(raw_entry([wire]))
        except DecodeError:
            return

        assert all(comparable(e) for e in batch.events)

    @given(ANY_MSGPACK)
    def test_arbitrary_msgpack_payload(self, payload: object) -> None:
        try:
            batch = decode_entry(raw_entry(pack(payload)))
        except DecodeError:
            return

        assert all(comparable(e) for e in batch.events)


# ------------------------------------------------------------------------- refusals

GOOD_EVENT = {"type": "heartbeat", "ts": TS}


def event(**wire: object) -> list[dict[str, object]]:
    """A one-event payload: ``wire`` with a ``ts``."""
    return [{"ts": TS, **wire}]


class TestEntryRefusals:
    """A malformed entry is refused with a DecodeError whose reason says what is wrong with it."""

    @pytest.mark.parametrize(
        ("entry", "reason"),
        [
            pytest.param(raw_entry([GOOD_EVENT], v=b"2"), "unknown wire version '2'", id="version-2"),
            pytest.param(raw_entry([GOOD_EVENT], v=b"01"), "unknown wire version '01'", id="version-01"),
            pytest.param(raw_entry([GOOD_EVENT], v=b""), "unknown wire version ''", id="version-empty"),
            pytest.param(raw_entry([GOOD_EVENT], v=None), "missing field 'v'", id="no-v"),
            pytest.param(raw_entry([GOOD_EVENT], r=None), "missing field 'r'", id="no-r"),
            pytest.param(raw_entry([GOOD_EVENT], p=None), "missing field 'p'", id="no-p"),
            pytest.param(raw_entry([GOOD_EVENT], q=None), "missing field 'q'", id="no-q"),
            pytest.param(raw_entry([GOOD_EVENT], b=None), "missing field 'b'", id="no-b"),
            pytest.param({}, "missing field 'v'", id="empty-entry"),
            pytest.param(raw_entry([GOOD_EVENT], r=b"\xff\xfe"), "field 'r' is not UTF-8", id="run-not-utf8"),
            pytest.param(raw_entry(b"\xc1"), "payload is not valid msgpack", id="payload-not-msgpack"),
            pytest.param(raw_entry(b""), "payload is not valid msgpack", id="payload-empty-bytes"),
            pytest.param(raw_entry(pack([GOOD_EVENT])[:-1]), "payload is not valid msgpack", id="payload-truncated"),
            pytest.param(raw_entry(pack([GOOD_EVENT]) + b"\x00"), "payload is not valid msgpack", id="payload-extra"),
            pytest.param(raw_entry(b'[{"type": "heartbeat"}]'), "payload is not valid msgpack", id="payload-json"),
            pytest.param(raw_entry(pack({1: 2})), "payload is not valid msgpack", id="payload-int-map-key"),
            pytest.param(raw_entry([]), "payload must be a non-empty array of events", id="payload-empty-array"),
            pytest.param(raw_entry(GOOD_EVENT), "payload must be a non-empty array of events", id="payload-a-map"),
            pytest.param(raw_entry(1), "payload must be a non-empty array of events", id="payload-an-int"),
            pytest.param(raw_entry([1]), "event must be a map, not int", id="event-an-int"),
            pytest.param(raw_entry([GOOD_EVENT, None]), "event must be a map, not NoneType", id="event-nil"),
        ],
    )
    def test_refuses_a_malformed_entry(self, entry: dict[bytes, bytes], reason: str) -> None:
        with pytest.raises(DecodeError) as refused:
            decode_entry(entry)

        assert reason in refused.value.reason

    @pytest.mark.parametrize(
        "seq",
        [
            pytest.param(b"0", id="0"),
            pytest.param(b"abc", id="abc"),
            pytest.param(b"-1", id="negative"),
            pytest.param(b"", id="empty"),
            pytest.param(b"1.5", id="float"),
            pytest.param(b" 1", id="space"),
            pytest.param("²".encode(), id="superscript-two"),
            pytest.param("٣".encode(), id="arabic-indic-three"),
            pytest.param(b"9" * 5000, id="5000-digits"),
            pytest.param(str(2**63).encode(), id="2**63"),
        ],
    )
    def test_refuses_a_seq_that_is_not_a_positive_63_bit_int(self, seq: bytes) -> None:
        with pytest.raises(DecodeError) as refused:
            decode_entry(raw_entry([GOOD_EVENT], q=seq))

        assert f"seq must be a positive integer, not {seq.decode()!r}" == refused.value.reason

    def test_accepts_the_largest_seq(self) -> None:
        batch = decode_entry(raw_entry([GOOD_EVENT], q=str(2**63 - 1).encode()))

        assert 2**63 - 1 == batch.seq

    def test_the_reason_is_the_message(self) -> None:
        with pytest.raises(DecodeError) as refused:
            decode_entry(raw_entry([], v=b"2"))

        assert str(refused.value) == refused.value.reason

    def test_accepts_the_current_version(self) -> None:
        batch = decode_entry(raw_entry([GOOD_EVENT], v=str(WIRE_VERSION).encode()))

        assert [HeartbeatSent(TS)] == batch.events


class TestEventRefusals:
    """An event whose fields do not match its type's shape is refused, naming the type and the field."""

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            pytest.param(event(type="metrics"), "unknown event type 'metrics'", id="unknown-type"),
            pytest.param(event(type="Heartbeat"), "unknown event type 'Heartbeat'", id="type-wrong-case"),
            pytest.param(event(), "unknown event type None", id="no-type"),
            pytest.param(event(type=1), "unknown event type 1", id="type-an-int"),
            pytest.param(event(type=b"heartbeat"), "unknown event type b'heartbeat'", id="type-bytes"),
            pytest.param([{"type": "heartbeat"}], "heartbeat event: 'ts' must be a finite number", id="no-ts"),
            pytest.param(event(type="heartbeat", ts=math.nan), "'ts' must be a finite number", id="ts-nan"),
            pytest.param(event(type="heartbeat", ts=math.inf), "'ts' must be a finite number", id="ts-inf"),
            pytest.param(event(type="heartbeat", ts=True), "'ts' must be a finite number", id="ts-bool"),
            pytest.param(event(type="heartbeat", ts="1"), "'ts' must be a finite number", id="ts-str"),
            pytest.param(
                event(type="metric", name="m", step0=0, values=[1, {"a": 1}]),
                "metric event: 'values' holds a dict",
                id="metric-value-map",
            ),
            pytest.param(
                event(type="metric", name="m", step0=0, values=[[1]]), "'values' holds a list", id="metric-value-array"
            ),
            pytest.param(
                event(type="metric", name="m", step0=0, values=[None]),
                "'values' holds a NoneType",
                id="metric-value-nil",
            ),
            pytest.param(
                event(type="metric", name="m", step0=0, values=[b"1"]), "'values' holds a bytes", id="metric-value-bin"
            ),
            pytest.param(
                event(type="metric", name="m", step0=0, values=1), "'values' must be an array", id="values-int"
            ),
            pytest.param(event(type="metric", name="m", step0=0), "'values' must be an array", id="no-values"),
            pytest.param(
                event(type="metric", name="m", step0=0, values=[]),
                "'steps' and 'values' must be non-empty",
                id="metric-no-points",
            ),
            pytest.param(
                event(type="metric", name="m", step0=-1, values=[1]),
                "'step0' must be a non-negative int",
                id="step0-negative",
            ),
            pytest.param(
                event(type="metric", name="m", step0=True, values=[1]),
                "'step0' must be a non-negative int",
                id="step0-bool",
            ),
            pytest.param(
                event(type="metric", name="m", step0=0.0, values=[1]),
                "'step0' must be a non-negative int",
                id="step0-float",
            ),
            pytest.param(
                event(type="metric", name="m", values=[1]),
                "'steps' must be an array of non-negative ints",
                id="no-steps",
            ),
            pytest.param(
                event(type="metric", name="m", steps=[0, -1], values=[1, 2]),
                "'steps' must be an array of non-negative ints",
                id="steps-negative",
            ),
            pytest.param(
                event(type="metric", name="m", steps=[0, False], values=[1, 2]),
                "'steps' must be an array of non-negative ints",
                id="steps-bool",
            ),
            pytest.param(
                event(type="metric", name="m", steps=[0, 1], values=[1]),
                "'steps' and 'values' must be non-empty and of equal length",
                id="steps-longer",
            ),
            pytest.param(
                event(type="metric", name="", step0=0, values=[1]), "'name' must have 1 to 255", id="metric-empty-name"
            ),
            pytest.param(
                event(type="metric", name="n" * 256, step0=0, values=[1]),
                "'name' must have 1 to 255",
                id="metric-long-name",
            ),
            pytest.param(event(type="metric", name=1, step0=0, values=[1]), "'name' must be a str", id="name-int"),
            pytest.param(event(type="metric", name=b"m", step0=0, values=[1]), "'name' must be a str", id="name-bin"),
            pytest.param(event(type="list", name="l", values={"a": 1}), "'values' must be an array", id="list-a-map"),
            pytest.param(event(type="row", name="r", row={}), "'row' must be a non-empty map", id="row-empty"),
            pytest.param(event(type="row", name="r", row=[1]), "'row' must be a non-empty map", id="row-array"),
            pytest.param(event(type="row", name="r", row={"x": [1]}), "row event: 'row'", id="row-value-array"),
            pytest.param(event(type="row", name="r", row={b"x": 1}), "row event: 'row'", id="row-bin-key"),
            pytest.param(
                event(type="table", name="t", columns={"a": [1], "b": [1, 2]}),
                "table event: columns must have equal lengths",
                id="table-ragged",
            ),
            pytest.param(
                event(type="table", name="t", columns={}), "'columns' must be a non-empty map", id="table-empty"
            ),
            pytest.param(
                event(type="table", name="t", columns={"a": 1}), "'a' must be an array", id="table-scalar-col"
            ),
            pytest.param(
                event(type="table", name="t", columns={"a": [{"x": 1}]}), "'a' holds a dict", id="table-cell-map"
            ),
            pytest.param(
                event(type="table", name="t", columns={b"a": [1]}), "table event: 'columns'", id="table-bin-key"
            ),
            pytest.param(
                event(type="tag", tags={"selected": 1}),
                "tag event: 'tags' must be a map of str to str",
                id="tag-int-value",
            ),
            pytest.param(event(type="tag", tags={"k": None}), "'tags' must be a map of str to str", id="tag-nil-value"),
            pytest.param(event(type="tag", tags={b"k": "v"}), "'tags' must be a map of str to str", id="tag-bin-key"),
            pytest.param(event(type="tag", tags=["k", "v"]), "'tags' must be a map of str to str", id="tags-array"),
            pytest.param(
                event(type="property", properties={"k": 1.5}),
                "property event: 'properties' must be a map of str to str",
                id="property-float-value",
            ),
            pytest.param(
                event(type="status", status="Done", error=None), "status event: unknown status 'Done'", id="Done"
            ),
            pytest.param(
                event(type="status", status="completed", error=None), "unknown status 'completed'", id="lower"
            ),
            pytest.param(
                event(type="status", status="Failed", error=1), "'error' must be a str or nil", id="error-int"
            ),
            pytest.param(
                event(type="run_started", experiment="e", display_name="d", parent_id=None, status="Started"),
                "run_started event: unknown status 'Started'",
                id="run-started-status",
            ),
            pytest.param(
                event(type="run_started", experiment="", display_name="d", parent_id=None, status="Running"),
                "'experiment': experiment name '' is invalid",
                id="run-started-no-experiment",
            ),
            pytest.param(
                event(type="run_started", experiment="e", display_name="d", parent_id=5, status="Running"),
                "'parent_id': run id must be a str, not int",
                id="run-started-parent-int",
            ),
            pytest.param(
                event(type="file", name="f", size=-1, sha256="00"), "'size' must be a non-negative int", id="file-size"
            ),
            pytest.param(
                event(type="file", name="f", size=1.0, sha256="00"),
                "'size' must be a non-negative int",
                id="size-float",
            ),
            pytest.param(event(type="file", name="f", size=1, sha256=None), "'sha256' must be a str", id="file-no-sha"),
            pytest.param(
                event(type="file", name="f" * 1025, size=1, sha256="00"), "'name' must have 1 to 1024", id="file-long"
            ),
            pytest.param(event(type="image", name="i", file=""), "'file' must have 1 to 1024", id="image-empty-file"),
            pytest.param(
                event(type="log_line", stream="stdin", lines=["x"]), "unknown output stream 'stdin'", id="stream-stdin"
            ),
            pytest.param(
                event(type="log_line", stream="stdout", lines=[1]), "'lines' must be an array of str", id="lines-int"
            ),
            pytest.param(
                event(type="log_line", stream="stdout", lines="x"), "'lines' must be an array of str", id="lines-str"
            ),
        ],
    )
    def test_refuses_a_malformed_event(self, payload: object, reason: str) -> None:
        with pytest.raises(DecodeError) as refused:
            decode_entry(raw_entry(payload))

        assert reason in refused.value.reason

    def test_one_bad_event_refuses_the_whole_batch(self) -> None:
        payload = [GOOD_EVENT, *event(type="status", status="Done", error=None), GOOD_EVENT]

        with pytest.raises(DecodeError, match="unknown status 'Done'"):
            decode_entry(raw_entry(payload))
