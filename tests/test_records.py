"""The record's packed series format and the pure fold of a batch into one apply call.

Pure tests (no Redis): :func:`pack_chunk` and :func:`unpack_series` round-trip every
value kind and step mode, and :func:`plan` keeps every write of a run in the run's
cluster slot, with exactly the index updates each event calls for as follow-ups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.codec import Batch, decode_payload
from runstream.collector.aggregate import LIVE_POINTS, Plan, plan
from runstream.collector.records import HEADER, Series, pack_chunk, unpack_series, unpack_values
from runstream.errors import DecodeError
from runstream.events import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
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
    Status,
    StatusChanged,
    TableLogged,
    TagsSet,
    Value,
)
from runstream.keys import Keys
from tests.test_config import key_slot

TS = 1717000000.25
NOW = 1717000100.5
RUN_ID = "mnist_1717000000_0a1b2c3d"
PARENT_ID = "mnist_1716999999_ffffffff"
PRODUCER = "4f2a9c0d1e2b3a4c"
CHUNK_POINTS = 16_384


def typed(values: Sequence[Value]) -> list[tuple[str, str]]:
    """Values as data that compares exactly: type and repr (NaN equals NaN, -0.0 differs from 0.0)."""
    return [(type(v).__name__, repr(v)) for v in values]


def round_trip(steps: Sequence[int], values: Sequence[Value], ts: float = TS) -> Series:
    return unpack_series(pack_chunk(steps, values, ts))


# ------------------------------------------------------------------------ value kinds

FLOATS: list[Value] = [0.0, -0.0, 0.5, -1e308, 5e-324, math.nan, math.inf, -math.inf]
INTS: list[Value] = [0, 1, -1, 2**31, -(2**63), 2**63 - 1, 2**63, 2**64 - 1]
BOOLS: list[Value] = [True, False, False, True]
STRS: list[Value] = ["", "a", "0.5", "x" * 70_000]
UNICODE: list[Value] = ["损失", "λ", "🚀 rocket", "ünïcödé ✓", "\x00nul"]
MIXED: list[Value] = [1, 1.0, True, "1", 2**64 - 1, -(2**63), math.nan, False, "", 0, 0.0, 2**63, 7]


class TestValueKinds:
    """Every value comes back with the type and the exact value it was packed with."""

    @pytest.mark.parametrize(
        "values",
        [FLOATS, INTS, BOOLS, STRS, UNICODE, MIXED],
        ids=["float", "int", "bool", "str", "unicode", "mixed"],
    )
    def test_values_round_trip(self, values: list[Value]) -> None:
        series = round_trip(range(len(values)), values)

        assert typed(values) == typed(series.values)
        assert list(range(len(values))) == series.steps
        assert [TS] * len(values) == series.timestamps

    @pytest.mark.parametrize("value", [-(2**63), 2**63 - 1, 2**63, 2**64 - 1])
    def test_extreme_int_alone(self, value: int) -> None:
        series = round_trip([3], [value])

        assert [("int", repr(value))] == typed(series.values)
        assert [3] == series.steps

    def test_nan_payload_and_sign_of_zero_are_kept(self) -> None:
        values: list[Value] = [math.nan, -0.0, math.copysign(math.nan, -1.0)]

        series = round_trip(range(3), values)

        assert [math.copysign(1.0, float(v)) for v in values] == [math.copysign(1.0, float(v)) for v in series.values]
        assert typed(values) == typed(series.values)


# ------------------------------------------------------------------------- step modes

STEP_MODES: dict[str, Sequence[int]] = {
    "range": range(5, 105),
    "consecutive list": list(range(0, 100)),
    "stride 10": list(range(0, 1000, 10)),
    "range stride 10": range(0, 1000, 10),
    "irregular": [0, 1, 3, 7, 8, 20, 21, 1000],
    "negative deltas": [100, 90, 95, 3, 2, 1, 0, 50],
    "decreasing stride": [50, 40, 30, 20, 10, 0],
    "same step": [7, 7, 7, 7],
    "beyond int32": [0, 2**31, 2**40, 2**40 + 1, 3, 2**62],
    "int64 edge": [2**63 - 1, 0, 2**63 - 2],
    "beyond int64": [2**64 - 1, 0, 2**63, 5],
    "range beyond int64": range(2**64 - 4, 2**64),
    "single point": [42],
    "single point at 0": [0],
    "single huge point": [2**64 - 1],
}


class TestStepModes:
    """Steps come back as they were given, whatever their pattern."""

    @pytest.mark.parametrize("steps", list(STEP_MODES.values()), ids=list(STEP_MODES))
    def test_steps_round_trip(self, steps: Sequence[int]) -> None:
        values: list[Value] = [float(i) / 3 for i in range(len(steps))]

        series = round_trip(steps, values)

        assert list(steps) == series.steps
        assert typed(values) == typed(series.values)

    @pytest.mark.parametrize("steps", list(STEP_MODES.values()), ids=list(STEP_MODES))
    def test_steps_round_trip_with_mixed_values(self, steps: Sequence[int]) -> None:
        values = [MIXED[i % len(MIXED)] for i in range(len(steps))]

        series = round_trip(steps, values)

        assert list(steps) == series.steps
        assert typed(values) == typed(series.values)

    @pytest.mark.parametrize("steps", list(STEP_MODES.values()), ids=list(STEP_MODES))
    def test_values_alone_read_back_past_any_steps(self, steps: Sequence[int]) -> None:
        values = [MIXED[i % len(MIXED)] for i in range(len(steps))]
        data = pack_chunk(steps, values, TS) + pack_chunk(steps, values, TS)

        read = unpack_values(data)

        assert typed(values + values) == typed(read)

    def test_arithmetic_steps_cost_no_step_bytes(self) -> None:
        values: list[Value] = [1.5] * 100

        chunk = pack_chunk(list(range(0, 1000, 10)), values, TS)

        assert HEADER.size + 8 * 100 == len(chunk)

    def test_irregular_small_deltas_cost_four_bytes_a_step(self) -> None:
        values: list[Value] = [1.5] * 8

        chunk = pack_chunk(STEP_MODES["irregular"], values, TS)

        assert HEADER.size + (4 + 8) * 8 == len(chunk)


class TestConcatenation:
    """Chunks appended one after another read back as one series, in the order they were packed."""

    def test_chunks_of_every_kind_and_mode_keep_their_order(self) -> None:
        parts: list[tuple[Sequence[int], list[Value], float]] = [
            (range(0, 3), [0.5, math.nan, -math.inf], TS),
            ([3, 5, 4], [1, 2**64 - 1, -(2**63)], TS + 1),
            ([10], [True], TS + 2),
            (range(20, 50, 10), ["a", "β", ""], TS + 3),
            ([2**40, 1, 2**62], [False, True, False], TS + 4),
            ([7, 7], MIXED[:2], TS + 5),
        ]

        series = unpack_series(b"".join(pack_chunk(steps, values, ts) for steps, values, ts in parts))

        assert [s for steps, _, _ in parts for s in steps] == series.steps
        assert typed([v for _, values, _ in parts for v in values]) == typed(series.values)
        assert [ts for steps, _, ts in parts for _ in steps] == series.timestamps

    def test_no_points_pack_to_nothing(self) -> None:
        chunk = pack_chunk([], [], TS)

        assert b"" == chunk
        assert Series([], [], []) == unpack_series(chunk)


SCALARS: st.SearchStrategy[Value] = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.booleans()
    | st.text(max_size=8)
)
STEPS = st.integers(min_value=0, max_value=2**64 - 1) | st.integers(min_value=0, max_value=100)


@st.composite
def point_batches(draw: st.DrawFn) -> tuple[Sequence[int], list[Value]]:
    """Steps (a list, or a range as the producer sends consecutive steps) and values of equal length."""
    elements: dict[str, st.SearchStrategy[Value]] = {
        "mixed": SCALARS,
        "floats": st.floats(),
        "int64s": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    }
    values = draw(st.lists(elements[draw(st.sampled_from(sorted(elements)))], min_size=1, max_size=40))
    if draw(st.booleans()):
        start = draw(st.integers(min_value=0, max_value=2**63 - 1 - len(values)))
        return range(start, start + len(values)), values
    return draw(st.lists(STEPS, min_size=len(values), max_size=len(values))), values


class TestRoundTripProperty:
    """Any sequence of packed batches reads back as the points of all batches, in order, types kept."""

    @settings(max_examples=200)
    @given(st.lists(st.tuples(point_batches(), st.floats(allow_nan=False, allow_infinity=False)), max_size=6))
    def test_any_batches_round_trip(self, batches: list[tuple[tuple[Sequence[int], list[Value]], float]]) -> None:
        expected_steps = [s for (steps, _), _ in batches for s in steps]
        expected_values = typed([v for (_, values), _ in batches for v in values])
        expected_stamps = [ts for (steps, _), ts in batches for _ in steps]

        data = b"".join(pack_chunk(steps, values, ts) for (steps, values), ts in batches)
        series = unpack_series(data)

        assert expected_steps == series.steps
        assert expected_values == typed(series.values)
        assert expected_stamps == series.timestamps
        assert expected_values == typed(unpack_values(data))


class TestBudget:
    """A float point costs at most 9 bytes in a full chunk (the record's budget is 16)."""

    def test_float_point_in_a_full_chunk(self) -> None:
        values: list[Value] = [i * 0.001 for i in range(CHUNK_POINTS)]

        per_point = len(pack_chunk(range(CHUNK_POINTS), values, TS)) / CHUNK_POINTS

        assert per_point <= 9

    def test_float_point_with_explicit_consecutive_steps(self) -> None:
        values: list[Value] = [i * 0.001 for i in range(CHUNK_POINTS)]

        per_point = len(pack_chunk(list(range(100, 100 + CHUNK_POINTS)), values, TS)) / CHUNK_POINTS

        assert per_point <= 9


# --------------------------------------------------------------------------- plan()

KEYS = Keys("team", prefix="rs")


def plan_of(*events: Event, now: float | None = NOW) -> Plan:
    return plan(Batch(RUN_ID, PRODUCER, 3, list(events)), KEYS, now=now)


def run_slot() -> int:
    return key_slot(KEYS.meta(RUN_ID))


#: One example of every event class, as a producer emits them.
EVENTS: list[Event] = [
    RunStarted("mnist", "first try", None, "Running", TS),
    RunStarted("mnist", "child", PARENT_ID, "Running", TS),
    MetricsLogged("loss {val}", range(0, 3), [0.5, 0.25, 0.125], TS),
    MetricsLogged("}{", [0, 5, 7], [True, False, True], TS),
    ListLogged("accuracy", [0.6, 0.7, 0.87], TS),
    ListLogged("empty", [], TS),
    RowLogged("Y over X", {"x": 1, "y": 0.4}, TS),
    TableLogged("Sine Wave", {"angle": [0, 1], "sine": [0.0, 0.84]}, TS),
    ImageLogged("ROC", "images/ROC.png", TS),
    TagsSet({"selected": "yes", "{a}": "b"}, TS),
    PropertiesAdded({"k": "v"}, TS),
    FileUploaded("outputs/model.pkl", 1234, "ab" * 32, TS),
    OutputLogged("stdout", ["epoch 1", ""], TS),
    StatusChanged("Running", None, TS),
    StatusChanged("Completed", None, TS),
    StatusChanged("Failed", "ValueError: boom", TS),
    HeartbeatSent(TS),
]


class TestPlanSlots:
    """Every key a plan writes is in the run's cluster slot, so one script can apply it."""

    @pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
    def test_each_event_type(self, event: Event) -> None:
        p = plan_of(event)

        assert {run_slot()} == {key_slot(key) for key in p.keys}

    def test_a_batch_of_every_event_type(self) -> None:
        p = plan_of(*EVENTS)

        assert {run_slot()} == {key_slot(key) for key in p.keys}
        assert len(set(p.keys)) == len(p.keys)

    @given(st.text(min_size=1, max_size=30))
    def test_any_metric_name(self, name: str) -> None:
        p = plan_of(
            MetricsLogged(name, range(0, 1), [1.0], TS),
            ListLogged(name, [1], TS),
            RowLogged(name, {"c": 1}, TS),
            ImageLogged(name, "images/x.png", TS),
        )

        assert {run_slot()} == {key_slot(key) for key in p.keys}


class TestPlanFollowUps:
    """The follow-ups are exactly the index updates outside the run's slot that the events call for."""

    def test_run_started(self) -> None:
        expected = [
            ("SADD", KEYS.experiments(), "mnist"),
            ("ZADD", KEYS.experiment_runs("mnist"), "NX", TS, RUN_ID),
            ("ZADD", KEYS.live_runs(), "NX", NOW, RUN_ID),
        ]

        p = plan_of(RunStarted("mnist", "first try", None, "Running", TS))

        assert expected == p.after

    def test_child_run_started(self) -> None:
        expected = [
            ("SADD", KEYS.children(PARENT_ID), RUN_ID),
            ("SADD", KEYS.experiments(), "mnist"),
            ("ZADD", KEYS.experiment_runs("mnist"), "NX", TS, RUN_ID),
            ("ZADD", KEYS.live_runs(), "NX", NOW, RUN_ID),
        ]

        p = plan_of(RunStarted("mnist", "child", PARENT_ID, "Running", TS))

        assert expected == p.after
        assert key_slot(KEYS.children(PARENT_ID)) == key_slot(KEYS.meta(PARENT_ID))

    def test_live_index_scores_by_event_time_without_a_collector_clock(self) -> None:
        expected = [
            ("SADD", KEYS.experiments(), "mnist"),
            ("ZADD", KEYS.experiment_runs("mnist"), "NX", TS, RUN_ID),
            ("ZADD", KEYS.live_runs(), "NX", TS, RUN_ID),
            ("ZADD", KEYS.live_runs(), "XX", TS + 1, RUN_ID),
        ]

        p = plan_of(RunStarted("mnist", "first try", None, "Running", TS), HeartbeatSent(TS + 1), now=None)

        assert expected == p.after

    @pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
    def test_terminal_status_leaves_the_live_index(self, status: Status) -> None:
        expected = [("ZREM", KEYS.live_runs(), RUN_ID), ("ZADD", KEYS.ended_runs(), "NX", NOW, RUN_ID)]

        p = plan_of(StatusChanged(status, None, TS))

        assert expected == p.after

    @pytest.mark.parametrize("status", [s for s in RUN_STATUSES if s not in TERMINAL_STATUSES])
    def test_other_status_has_no_follow_up(self, status: Status) -> None:
        p = plan_of(StatusChanged(status, None, TS))

        assert [] == p.after

    def test_heartbeat_renews_a_live_run_only(self) -> None:
        expected = [("ZADD", KEYS.live_runs(), "XX", NOW, RUN_ID)]

        p = plan_of(HeartbeatSent(TS))

        assert expected == p.after

    @pytest.mark.parametrize(
        "event",
        [e for e in EVENTS if not isinstance(e, RunStarted | StatusChanged | HeartbeatSent)],
        ids=lambda e: type(e).__name__,
    )
    def test_record_only_events_have_none(self, event: Event) -> None:
        p = plan_of(event)

        assert [] == p.after

    def test_follow_ups_keep_the_event_order(self) -> None:
        expected = [
            ("SADD", KEYS.experiments(), "mnist"),
            ("ZADD", KEYS.experiment_runs("mnist"), "NX", TS, RUN_ID),
            ("ZADD", KEYS.live_runs(), "NX", NOW, RUN_ID),
            ("ZADD", KEYS.live_runs(), "XX", NOW, RUN_ID),
            ("ZREM", KEYS.live_runs(), RUN_ID),
            ("ZADD", KEYS.ended_runs(), "NX", NOW, RUN_ID),
        ]

        p = plan_of(
            RunStarted("mnist", "first try", None, "Running", TS),
            MetricsLogged("loss", range(0, 2), [1.0, 0.5], TS),
            HeartbeatSent(TS),
            StatusChanged("Completed", None, TS),
        )

        assert expected == p.after


class TestPlanArguments:
    """The apply call carries the producer and seq to check, and counts the points it applies."""

    def test_producer_and_seq_lead_the_arguments(self) -> None:
        p = plan_of(HeartbeatSent(TS))

        assert [PRODUCER, 3] == p.args[:2]
        assert [KEYS.applied(RUN_ID), KEYS.meta(RUN_ID), KEYS.live(RUN_ID)] == p.keys[:3]

    def test_collector_override_skips_the_seq_check(self) -> None:
        p = plan(Batch(RUN_ID, PRODUCER, 3, [HeartbeatSent(TS)]), KEYS, producer="")

        assert "" == p.args[0]

    def test_a_batch_without_producer_is_refused(self) -> None:
        with pytest.raises(DecodeError, match="empty producer id"):
            plan(Batch(RUN_ID, "", 3, [HeartbeatSent(TS)]), KEYS)

    def test_points_count_series_list_values_rows_and_images(self) -> None:
        p = plan_of(
            MetricsLogged("loss", range(0, 3), [0.5, 0.25, 0.125], TS),
            ListLogged("acc", [1, 2], TS),
            RowLogged("row", {"x": 1}, TS),
            TableLogged("tab", {"a": [1, 2, 3, 4]}, TS),
            ImageLogged("img", "images/img.png", TS),
            TagsSet({"t": "v"}, TS),
        )

        assert 3 + 2 + 1 + 4 + 1 == p.points

    def test_heartbeats_alone_make_no_live_update(self) -> None:
        p = plan_of(HeartbeatSent(TS), HeartbeatSent(TS + 1))

        assert b"" == p.args[3]

    def test_live_update_is_bounded_per_metric(self) -> None:
        events: list[Event] = []
        for i in range(3 * LIVE_POINTS):
            events.append(MetricsLogged("loss", range(i, i + 1), [float(i)], TS))
            events.append(RowLogged("curve", {"x": i}, TS))
        big: list[Value] = [1.0 for _ in range(5 * LIVE_POINTS)]
        events.append(MetricsLogged("big", range(0, 5 * LIVE_POINTS), big, TS))
        events.append(ListLogged("list", list(range(2 * LIVE_POINTS)), TS))

        payload = plan_of(*events).args[3]

        assert isinstance(payload, bytes)
        per_metric: dict[str, list[Value]] = {}
        for event in decode_payload(payload):
            if isinstance(event, MetricsLogged | ListLogged):
                per_metric.setdefault(event.name, []).extend(event.values)
        assert {"loss": LIVE_POINTS, "big": LIVE_POINTS, "list": LIVE_POINTS} == {
            name: len(values) for name, values in per_metric.items()
        }
        assert [float(i) for i in range(2 * LIVE_POINTS, 3 * LIVE_POINTS)] == per_metric["loss"]
        assert list(range(LIVE_POINTS, 2 * LIVE_POINTS)) == per_metric["list"]
