"""NotResponding in the record: where ``apply.lua`` lets a status go, and what brings a silent run back.

The batches here are folded by :func:`~runstream.collector.aggregate.plan` and applied
by the real script on the session's Redis, one at a time, as the collector applies
them (the collector's own processes are in tests/battery/test_paused_producer.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis

from runstream import Workspace
from runstream.codec import Batch, decode_payload
from runstream.collector.aggregate import plan
from runstream.collector.applier import APPLY_LUA
from runstream.events import RUN_STATUSES, Event, HeartbeatSent, StatusChanged, TagsSet, status_follows

RUN = "tests_1700000000_0123abcd"


@pytest.fixture
def client(workspace: Workspace) -> Iterator[redis.Redis]:
    """A client of the workspace's Redis."""
    client = redis.Redis.from_url(workspace.settings.redis_url, decode_responses=True)
    yield client
    client.close()


def apply(client: redis.Redis, workspace: Workspace, producer: str, seq: int, *events: Event) -> None:
    """Apply one batch of ``RUN`` as the collector does (``producer`` "" is the collector's own)."""
    p = plan(Batch(RUN, producer, seq, list(events)), workspace.keys, producer=producer, now=100.0 + seq)
    client.eval(APPLY_LUA, len(p.keys), *p.keys, *p.args)


def status(client: redis.Redis, workspace: Workspace) -> str | None:
    return cast("str | None", client.hget(workspace.keys.meta(RUN), "status"))


def live_statuses(workspace: Workspace) -> list[str]:
    """The statuses the run's live stream carries, in order."""
    raw = redis.Redis.from_url(workspace.settings.redis_url)
    try:
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", raw.xrange(workspace.keys.live(RUN)))
    finally:
        raw.close()
    events = [event for _, fields in entries for event in decode_payload(fields[b"b"])]
    return [event.status for event in events if isinstance(event, StatusChanged)]


class TestStatusRule:
    """``apply.lua`` moves a run's status exactly where ``status_follows`` says it may go."""

    def test_every_pair(self, client: redis.Redis, workspace: Workspace) -> None:
        expected, actual = {}, {}
        for current in (None, *RUN_STATUSES):
            for new in RUN_STATUSES:
                client.delete(workspace.keys.meta(RUN))
                if current is not None:
                    client.hset(workspace.keys.meta(RUN), "status", current)
                apply(client, workspace, "", 0, StatusChanged(new, None, 1.0))
                expected[current, new] = new if status_follows(current, new) else current
                actual[current, new] = status(client, workspace)

        assert expected == actual
        assert status_follows("Running", "NotResponding")
        assert status_follows("Finalizing", "NotResponding")
        assert status_follows("NotResponding", "Running")
        assert status_follows("NotResponding", "Failed")
        assert not status_follows("NotResponding", "Starting")
        assert not any(status_follows(final, "NotResponding") for final in ("Completed", "Failed", "Canceled"))
        assert not status_follows("NotResponding", "NotResponding")


class TestHeardFrom:
    """A NotResponding run is Running again on its producer's next batch; a batch of statuses alone moves it on."""

    def test_heartbeat_brings_it_back(self, client: redis.Redis, workspace: Workspace) -> None:
        apply(client, workspace, "", 0, StatusChanged("Running", None, 1.0))
        apply(client, workspace, "", 0, StatusChanged("NotResponding", None, 2.0))
        apply(client, workspace, "p1", 1, HeartbeatSent(3.0))
        meta = client.hgetall(workspace.keys.meta(RUN))

        assert ("Running", "101.0") == (meta["status"], meta["resumed_at"])
        assert "error" not in meta
        assert ["Running", "NotResponding", "Running"] == live_statuses(workspace)

    def test_any_batch_brings_it_back(self, client: redis.Redis, workspace: Workspace) -> None:
        apply(client, workspace, "", 0, StatusChanged("NotResponding", None, 2.0))
        apply(client, workspace, "p1", 1, TagsSet({"epoch": "3"}, 3.0), StatusChanged("Completed", None, 3.0))

        assert "Completed" == status(client, workspace)
        assert ["NotResponding", "Running", "Completed"] == live_statuses(workspace)

    def test_cancel_alone_moves_it_on(self, client: redis.Redis, workspace: Workspace) -> None:
        apply(client, workspace, "", 0, StatusChanged("NotResponding", None, 2.0))
        apply(client, workspace, "p2", 1, StatusChanged("Canceled", None, 3.0))

        assert "Canceled" == status(client, workspace)
        assert ["NotResponding", "Canceled"] == live_statuses(workspace)

    def test_final_stays(self, client: redis.Redis, workspace: Workspace) -> None:
        apply(client, workspace, "", 0, StatusChanged("Failed", "heartbeat lost", 2.0))
        apply(client, workspace, "p1", 1, HeartbeatSent(3.0))

        assert "Failed" == status(client, workspace)
        assert ["Failed"] == live_statuses(workspace)
        assert "resumed_at" not in client.hgetall(workspace.keys.meta(RUN))

    def test_running_run_untouched(self, client: redis.Redis, workspace: Workspace) -> None:
        apply(client, workspace, "", 0, StatusChanged("Running", None, 1.0))
        apply(client, workspace, "p1", 1, HeartbeatSent(3.0))

        assert "Running" == status(client, workspace)
        assert ["Running"] == live_statuses(workspace)
        assert "resumed_at" not in client.hgetall(workspace.keys.meta(RUN))
