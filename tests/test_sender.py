"""The sender sends on a linger, never on a log call: batches carry many steps, nothing is lost or reordered.

What a user notices: a training loop's points leave in few, large batches (not one per step),
every point arrives once with its step, a lone point after an idle spell still arrives, and a
bad ``linger_ms`` is refused at the door.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import ConfigError, Experiment, logger_stats
from runstream._batcher import MAX_BATCH_WEIGHT, Item, RunHandle, build_batches
from runstream.codec import decode_entry
from runstream.config import Settings
from runstream.events import MetricsLogged, TagsSet
from tests.conftest import first_of_each_seq, make_workspace, read_batches


def _handles(count: int) -> list[RunHandle]:
    return [RunHandle(i, f"run{i}", f"stream{i}", None) for i in range(count)]  # type: ignore[arg-type]  # no channel: not sent


def _decoded(items: list[Item], handles: list[RunHandle]) -> dict[str, list[tuple[int, object]]]:
    """run/metric -> [(step, value)] as the batches built from ``items`` carry them; tags as run/tag."""
    out: dict[str, list[tuple[int, object]]] = defaultdict(list)
    for _, batch in build_batches(items, "p", handles):
        assert len(batch.fields["b"]) == batch.size
        fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in batch.fields.items()}
        decoded = decode_entry(fields)
        for event in decoded.events:
            if isinstance(event, MetricsLogged):
                out[f"{decoded.run_id}/{event.name}"] += list(zip(event.steps, event.values, strict=True))
            elif isinstance(event, TagsSet):
                out[f"{decoded.run_id}/tags"].append((0, dict(event.tags)))
    return dict(out)


def _expected(items: list[Item], handles: list[RunHandle]) -> dict[str, list[tuple[int, object]]]:
    """What the batches must carry: each metric's points in order, a missing step one past the last."""
    out: dict[str, list[tuple[int, object]]] = defaultdict(list)
    next_step: dict[str, int] = defaultdict(int)
    for item in items:
        run = handles[item[0]].run_id
        if len(item) == 4:
            key = f"{run}/{item[1]}"
            step = next_step[key] if item[3] is None else item[3]
            out[key].append((step, item[2]))
            next_step[key] = step + 1
        else:
            out[f"{run}/tags"].append((0, dict(cast("TagsSet", item[1]).tags)))
    return dict(out)


class TestBatchesOfALoop:
    """A loop's buffer (the same metrics each step) and any other buffer give the same points."""

    @settings(max_examples=200)
    @given(
        metrics=st.integers(1, 12),
        steps=st.integers(1, 40),
        cut=st.integers(0, 11),
        explicit=st.booleans(),
        runs=st.integers(1, 2),
        tag_at=st.one_of(st.none(), st.integers(0, 200)),
    )
    def test_every_point_once_with_its_step(
        self, metrics: int, steps: int, cut: int, explicit: bool, runs: int, tag_at: int | None
    ) -> None:
        handles = _handles(2)
        items: list[Item] = []
        for step in range(steps):
            for j in range(metrics):
                run = (step + j) % runs
                items.append((run, f"m{j}", step * 0.5 + j, 10 + 2 * step if explicit else None))
        items = items[: max(1, len(items) - cut)]  # drained mid-step
        if tag_at is not None:
            items.insert(min(tag_at, len(items)), (0, TagsSet({"k": "v"}, 1.0)))

        assert _expected(items, _handles(2)) == _decoded(items, handles)

    def test_a_loop_bigger_than_a_batch_is_split_on_whole_steps(self) -> None:
        handles = _handles(1)
        metrics = 7
        items: list[Item] = [(0, f"m{j}", float(i), None) for i in range(5_000) for j in range(metrics)]

        batches = build_batches(items, "p", handles)

        assert len(batches) == -(-len(items) // (MAX_BATCH_WEIGHT - MAX_BATCH_WEIGHT % metrics))
        assert all(b.events % metrics == 0 for _, b in batches[:-1])
        assert _expected(items, _handles(1)) == _decoded(items, _handles(1))


class TestSending:
    """The sender's pace, seen from a training loop's side."""

    def test_a_paced_loop_sends_few_large_batches(self, redis_url: str, tmp_path: Path) -> None:
        workspace = make_workspace(redis_url, tmp_path / ".runstream")
        run = Experiment(workspace, "paced").start_logging()
        run.flush()
        before = logger_stats().batches_sent
        steps = 300
        for step in range(steps):
            time.sleep(0.001)  # the step's work: at least 1 ms, so at most 10 steps per linger
            for j in range(10):
                run.log(f"m{j}", float(step))
        run.flush()
        sent = logger_stats().batches_sent - before
        run.complete()

        points = [e for b in first_of_each_seq(read_batches(workspace, run.id)) for e in b.events]
        values: dict[str, list[tuple[int, object]]] = defaultdict(list)
        for event in points:
            if isinstance(event, MetricsLogged):
                values[event.name] += list(zip(event.steps, event.values, strict=True))
        assert {f"m{j}": [(s, float(s)) for s in range(steps)] for j in range(10)} == dict(values)
        assert sent <= steps // 5, f"{sent} batches for {steps} steps: the sender went at the loop's pace"

    def test_a_lone_point_after_an_idle_spell_arrives(self, redis_url: str, tmp_path: Path) -> None:
        workspace = make_workspace(redis_url, tmp_path / ".runstream", linger_ms=2.0)
        run = Experiment(workspace, "idle").start_logging()
        run.flush()
        time.sleep(0.3)  # far past the quiet spell: the sender waits to be woken by the next log

        run.log("late", 1.5)
        run.flush(timeout=10)
        run.complete()

        events = [e for b in first_of_each_seq(read_batches(workspace, run.id)) for e in b.events]
        assert [1.5] == [v for e in events if isinstance(e, MetricsLogged) and e.name == "late" for v in e.values]


class TestLingerSetting:
    @pytest.mark.parametrize("bad", ["0", "-1", "1001", "abc", "nan"])
    def test_a_bad_linger_is_refused(self, bad: str) -> None:
        with pytest.raises(ConfigError, match=r"(?i)linger"):
            Settings.from_config(env={"RUNSTREAM_REDIS_URL": "redis://localhost:6379/0", "RUNSTREAM_LINGER_MS": bad})

    def test_the_environment_sets_it(self) -> None:
        env = {"RUNSTREAM_REDIS_URL": "redis://localhost:6379/0", "RUNSTREAM_LINGER_MS": "25"}
        assert 25.0 == Settings.from_config(env=env).linger_ms
