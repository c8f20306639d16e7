"""The collector under fuzzed ingest entries: whatever lands on an ingest stream, it goes on.

Hypothesis builds entries from a valid one (a batch that starts a run and logs points)
by mutating it: a field dropped, replaced by random bytes or by another msgpack value,
the payload truncated or with bytes flipped, a version from the future, fields added.
Each lands on the run's shard while a real collector runs.  Every entry is accounted
for (applied, deduplicated, or dead-lettered with a reason), none stays pending, the
collector keeps running, and a run logged normally through it all is whole.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstream import Experiment, Workspace
from runstream.codec import Batch, encode_batch
from runstream.collector import CollectorSettings
from runstream.collector.background import BackgroundCollector
from runstream.events import Event, MetricsLogged, RunStarted
from runstream.keys import INGEST_GROUP

pytestmark = pytest.mark.battery

MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def valid_fields(workspace: Workspace) -> tuple[str, dict[str, Any]]:
    """A valid entry: a new run's start and three points."""
    run_id = f"fuzz_{int(time.time())}_{secrets.token_hex(4)}"
    events: list[Event] = [
        RunStarted("fuzz", run_id, None, "Running", time.time()),
        MetricsLogged("loss", range(3), [0.5, 0.25, 0.125], time.time()),
    ]
    return run_id, dict(encode_batch(Batch(run_id, secrets.token_hex(8), 1, events)))


@st.composite
def mutated(draw: st.DrawFn, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with one to three mutations."""
    fields = dict(fields)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(["v", "r", "p", "q", "b"]))
        how = draw(st.sampled_from(["drop", "bytes", "msgpack", "truncate", "flip", "future", "extra"]))
        if how == "drop":
            fields.pop(name, None)
        elif how == "bytes":
            fields[name] = draw(st.binary(max_size=64))
        elif how == "msgpack":
            fields[name] = msgpack.packb(draw(MSGPACK_VALUES), use_bin_type=True)
        elif how == "truncate" and isinstance(fields.get("b"), bytes):
            fields["b"] = fields["b"][: draw(st.integers(0, max(0, len(fields["b"]) - 1)))]
        elif how == "flip" and isinstance(fields.get("b"), bytes) and fields["b"]:
            payload = bytearray(fields["b"])
            at = draw(st.integers(0, len(payload) - 1))
            payload[at] ^= draw(st.integers(1, 255))
            fields["b"] = bytes(payload)
        elif how == "future":
            fields["v"] = draw(st.integers(2, 2**31))
        elif how == "extra":
            fields[draw(st.text(min_size=1, max_size=8))] = draw(st.binary(max_size=16))
    return fields or {"x": b""}


@pytest.fixture
def collecting(workspace: Workspace) -> Iterator[BackgroundCollector]:
    # A mutated entry can be a valid batch of a new producer with a seq past 1 (packb(50) is b"2"):
    # it waits for the seqs before it, so the bound on that wait is short here.
    settings = CollectorSettings(workspace=workspace.settings, lease_ttl=2.0, gap_timeout=1.0)
    with BackgroundCollector(settings) as collector:
        yield collector


def accounted(collector: BackgroundCollector) -> int:
    stats = collector.stats
    return int(stats.applied + stats.deduped + stats.dead_lettered)


def until(condition: Callable[[], bool], bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {bound} s waiting for {what}")
        time.sleep(0.01)


class TestFuzzedIngest:
    """Every fuzzed entry is applied or dead-lettered with a reason; the collector goes on."""

    def test_fuzzed_entries(self, workspace: Workspace, collecting: BackgroundCollector) -> None:
        client = redis.Redis.from_url(workspace.settings.redis_url)
        run = Experiment(workspace, "steady").start_logging()  # logs between the fuzzed entries
        logged = 0
        added = 0

        @given(data=st.data())
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def lands(data: st.DataObject) -> None:
            nonlocal logged, added
            run_id, fields = valid_fields(workspace)
            entries = data.draw(st.lists(mutated(fields), min_size=1, max_size=4))
            before = accounted(collecting)
            for entry in entries:
                client.xadd(workspace.keys.ingest_for(run_id), cast("dict[Any, Any]", entry))
            added += len(entries)
            run.log("steady", float(logged))
            logged += 1
            until(lambda: accounted(collecting) >= before + len(entries), 10, "the fuzzed entries to be handled")

        lands()
        run.complete()
        steady = run.get_metrics("steady")["steady"]
        letters = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(workspace.keys.deadletter()))
        pending = sum(
            int(cast("dict[str, int]", client.xpending(workspace.keys.ingest(shard), INGEST_GROUP))["pending"])
            for shard in range(workspace.keys.shards)
        )
        client.close()
        stats = collecting.stats
        print(
            f"fuzzed entries: {added}, dead-lettered {stats.dead_lettered}, applied or deduplicated"
            f" {stats.applied + stats.deduped} (with the steady run's), steady points {logged}"
        )

        assert [float(i) for i in range(logged)] == steady  # applied after all of it: the collector goes on
        assert 0 == pending
        assert stats.dead_lettered == len(letters)
        assert all(fields[b"reason"] for _, fields in letters)
        assert stats.dead_lettered >= added // 2  # most mutations make an entry unreadable
