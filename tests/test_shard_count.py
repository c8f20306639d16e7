"""The workspace's shard count lives in Redis: processes raise it to their setting, it never
goes down, and a collector grows to what a producer was configured with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from runstream import Experiment, Workspace
from runstream.config import Settings
from runstream.connection import connect
from runstream.errors import ConfigError
from runstream.keys import Keys
from runstream.shard_count import raise_shard_count
from tests.conftest import CollectorThread, make_workspace


async def raised(url: str, keys: Keys) -> int:
    async with connect(url) as client:
        return await raise_shard_count(client, keys)


class TestRecordedCount:
    def test_raised_never_lowered(self, redis_url: str) -> None:
        keys = Keys("t-shards-count", prefix="rsc")
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(keys.shard_count())
            assert 8 == asyncio.run(raised(redis_url, Keys(keys.workspace, keys.prefix, shards=8)))
            assert 32 == asyncio.run(raised(redis_url, Keys(keys.workspace, keys.prefix, shards=32)))
            assert 32 == asyncio.run(raised(redis_url, Keys(keys.workspace, keys.prefix, shards=4)))
            assert b"32" == client.get(keys.shard_count())
        finally:
            client.delete(keys.shard_count())
            client.close()

    def test_from_the_environment(self, tmp_path: Path) -> None:
        env = {"RUNSTREAM_REDIS_URL": "redis://env:6379/0", "RUNSTREAM_SHARDS": "24"}
        assert 24 == Settings.from_config(path=tmp_path, env=env).shards

    @pytest.mark.parametrize("value", ["eight", "-3", "0", "1.5"])
    def test_a_bad_count_is_named(self, tmp_path: Path, value: str) -> None:
        env = {"RUNSTREAM_REDIS_URL": "redis://env:6379/0", "RUNSTREAM_SHARDS": value}
        with pytest.raises(ConfigError, match=r"RUNSTREAM_SHARDS|shards must be positive"):
            Settings.from_config(path=tmp_path, env=env)


def test_a_collector_grows_to_a_producers_count(
    redis_url: str, tmp_path: Path, start_collector: Callable[..., CollectorThread]
) -> None:
    """A collector configured with 2 shards, a producer with 32: runs on shards 2..31 are
    collected all the same, once the producer has raised the workspace's count."""
    few = make_workspace(redis_url, tmp_path / ".runstream", shards=2)
    many = Workspace.from_settings(few.settings.with_changes(shards=32))
    collector = start_collector(few)
    experiment = Experiment(many, "wide")
    runs = [experiment.start_logging() for _ in range(12)]
    for n, run in enumerate(runs):
        run.log("n", n)
    assert any(many.keys.shard_of(run.id) >= 2 for run in runs), "some runs land past the collector's 2 shards"

    assert [{"n": n} for n in range(12)] == [run.get_metrics() for run in runs]
    assert collector.collector is not None
    assert 32 == collector.collector.keys.shards
