"""Fixtures: real Redis servers started by the test session, and isolated workspaces.

A session-wide ``redis-server`` (no persistence) serves most tests; each test gets
its own workspace name and data folder, so nothing is shared between tests.  Fault
tests take a server of their own (``restartable_redis``) that they may stop, kill
and restart.  ``RUNSTREAM_TEST_REDIS_URL`` points the shared fixture at an existing
server instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from runstream import Experiment, Settings, Workspace
from runstream.codec import Batch, decode_entry
from runstream.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's Redis."""
    existing = os.environ.get("RUNSTREAM_TEST_REDIS_URL")
    if existing:
        yield existing
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, persisting every write (AOF, fsync always)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    with server:
        yield server


def make_workspace(redis_url: str, data_dir: Path, **settings: Any) -> Workspace:
    """A workspace with a unique name, logging to ``redis_url``."""
    name = f"t{uuid.uuid4().hex[:12]}"
    return Workspace.from_settings(Settings(redis_url=redis_url, workspace=name, data_dir=data_dir, **settings))


@pytest.fixture
def workspace(redis_url: str, tmp_path: Path) -> Workspace:
    """A fresh workspace on the session's Redis, with its own data folder."""
    return make_workspace(redis_url, tmp_path / ".runstream")


@pytest.fixture
def experiment(workspace: Workspace) -> Experiment:
    return Experiment(workspace, "tests")


def read_batches(workspace: Workspace, run_id: str) -> list[Batch]:
    """Every batch of ``run_id`` on its ingest stream, in stream order, decoded."""
    client = redis.Redis.from_url(workspace.settings.redis_url)
    try:
        entries = client.xrange(workspace.keys.ingest_for(run_id))
    finally:
        client.close()
    batches = [decode_entry(fields) for _, fields in entries]
    return [b for b in batches if b.run_id == run_id]
