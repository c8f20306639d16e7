"""Workspace settings: where they come from and what they hold.

:meth:`Settings.from_config` looks, in order of precedence, at:

1. the environment: ``RUNSTREAM_REDIS_URL``, ``RUNSTREAM_URL`` (the server),
   ``RUNSTREAM_WORKSPACE``, ``RUNSTREAM_TOKEN``, ``RUNSTREAM_DATA_DIR``;
2. ``.runstream/config.json`` in the working folder or its parents (or ``path``);
3. the embedded instance that ``runstream up`` recorded in ``.runstream/instance.json``.

With no Redis URL from any of them it raises :class:`~runstream.errors.ConfigError`
saying how to start one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Self

from runstream.connection import mask_url
from runstream.errors import ConfigError
from runstream.keys import DEFAULT_PREFIX, DEFAULT_SHARDS, check_identifier

__all__ = ["CONFIG_FILE", "DATA_DIR_NAME", "INSTANCE_FILE", "Instance", "Settings", "read_instance"]

DATA_DIR_NAME: Final = ".runstream"
CONFIG_FILE: Final = "config.json"
#: Written by ``runstream up``: the URLs of the embedded Redis and server.
INSTANCE_FILE: Final = "instance.json"

_ENV: Final = {
    "RUNSTREAM_REDIS_URL": "redis_url",
    "RUNSTREAM_URL": "server_url",
    "RUNSTREAM_WORKSPACE": "workspace",
    "RUNSTREAM_TOKEN": "token",
    "RUNSTREAM_DATA_DIR": "data_dir",
    "RUNSTREAM_SHARDS": "shards",
    "RUNSTREAM_LINGER_MS": "linger_ms",
    "RUNSTREAM_ARCHIVE_URL": "archive_url",
    "RUNSTREAM_ARTIFACTS_URL": "artifacts_url",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a workspace needs to know; immutable, passed explicitly.

    Attributes:
        redis_url: where the streams and records live (``redis://`` or ``rediss://``).
        workspace: the workspace name, part of every key.
        server_url: base URL of ``runstream serve`` (for portal URLs and remote files).
        token: bearer token for the server; never shown by ``repr``.
        data_dir: the local folder for artifacts and the spool.
        key_prefix: first component of every Redis key.
        shards: number of ingest streams; the workspace's count in Redis is raised to it
            (:mod:`runstream.shard_count`), so collectors read every stream a producer writes.
        max_memory_bytes: encoded batches held in memory before spilling to disk.
        max_queue_events: events the in-process buffer holds before ``log`` helps drain it.
        heartbeat_interval: seconds between heartbeats of a live run.
        exit_flush_timeout: seconds the exit flush waits for Redis before spooling.
        linger_ms: how long the logger lets points gather before it sends them (Kafka's
            ``linger.ms``): a longer one costs a training loop less and charts more delay.
        archive_url: the object store ended runs are archived in (``s3://bucket/prefix``,
            ``file:///folder``); None: the folder ``archive`` in ``data_dir`` (DESIGN §7).
        artifacts_url: the store run files live in (``s3://bucket/prefix``, ``file:///folder``);
            None: the folder ``artifacts`` in ``data_dir``.
    """

    redis_url: str
    workspace: str = "default"
    server_url: str | None = None
    token: str | None = field(default=None, repr=False)
    data_dir: Path = field(default_factory=lambda: Path(DATA_DIR_NAME).absolute())
    key_prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS
    max_memory_bytes: int = 64 * 1024 * 1024
    max_queue_events: int = 1_000_000
    heartbeat_interval: float = 5.0
    exit_flush_timeout: float = 10.0
    linger_ms: float = 10.0
    archive_url: str | None = None
    artifacts_url: str | None = None

    def __post_init__(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"redis_url must start with redis://, rediss:// or unix://, not {mask_url(self.redis_url)!r}"
            )
        check_identifier("workspace", self.workspace)
        check_identifier("key prefix", self.key_prefix)
        for name in ("max_memory_bytes", "max_queue_events", "shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        if self.heartbeat_interval <= 0 or self.exit_flush_timeout < 0:
            raise ConfigError("heartbeat_interval must be positive and exit_flush_timeout not negative")
        if self.artifacts_url and not self.artifacts_url.startswith(("s3://", "file:///")):
            raise ConfigError(f"artifacts_url must be s3://bucket/prefix or file:///folder, not {self.artifacts_url!r}")
        if not 0 < self.linger_ms <= 1000:
            raise ConfigError(f"linger_ms must be above 0 and at most 1000, not {self.linger_ms!r}")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={mask_url(self.redis_url)!r}" if f.name == "redis_url" else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr
        )
        return f"Settings({shown}, token={'***' if self.token else None})"

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Self:
        """Settings from the environment, the config file and the embedded instance.

        Args:
            path: a config file, or a folder to start the search from (default: cwd).
            env: the environment to read (default: ``os.environ``).

        Raises:
            ConfigError: the config file is unreadable, or no Redis URL is known.
        """
        env = os.environ if env is None else env
        start = Path(path) if path is not None else None
        config_file = _find_config(start)
        values: dict[str, Any] = _read_json(config_file) if config_file else {}
        # Checked before anything else, so a misspelt "redis_url" is named, not reported missing.
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown settings {unknown} in {config_file}")
        data_dir = config_file.parent if config_file else _default_data_dir(start)
        if config_file and "data_dir" in values:  # relative to the project folder holding .runstream/
            values["data_dir"] = str(config_file.parent.parent / str(values["data_dir"]))
        values.setdefault("data_dir", str(data_dir))
        values.update({key: env[var] for var, key in _ENV.items() if env.get(var)})
        _numbers_from_env(values)
        if not values.get("redis_url"):
            instance = read_instance(Path(values["data_dir"]))
            if instance is not None and not instance.alive():
                raise ConfigError(
                    f"the `runstream up` recorded in {values['data_dir']} is not running (pid {instance.pid}):"
                    " start it again with `runstream up` in that folder"
                )
            if instance is not None:
                values["redis_url"] = instance.redis_url
                values.setdefault("server_url", instance.server_url)
        if not values.get("redis_url"):
            raise ConfigError(
                "no Redis to log to: run `runstream up` in this folder to start the embedded one,"
                " or set RUNSTREAM_REDIS_URL (e.g. redis://localhost:6379/0),"
                f' or write {{"redis_url": ...}} to {DATA_DIR_NAME}/{CONFIG_FILE}'
            )
        try:
            values["data_dir"] = Path(values["data_dir"]).absolute()
            return cls(**values)
        except (TypeError, ValueError) as exc:  # wrong types, or names check_identifier refuses
            raise ConfigError(f"bad settings in {config_file or 'the environment'}: {exc}") from exc

    def with_changes(self, **changes: Any) -> Self:
        """A copy with some settings changed (tests and the CLI tune the logger this way)."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Instance:
    """What ``runstream up`` records: where its Redis and server are, and which process runs them."""

    redis_url: str
    server_url: str
    pid: int

    def alive(self) -> bool:
        """Whether the recording process still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it runs
            return True
        try:  # Linux: a zombie (ended, its parent has not reaped it yet) runs no more
            return Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except (OSError, IndexError):
            return True


def read_instance(data_dir: Path) -> Instance | None:
    """The instance recorded in ``data_dir`` (running or not: see ``alive``), if any."""
    path = data_dir / INSTANCE_FILE
    if not path.is_file():
        return None
    recorded = _read_json(path)
    try:
        return Instance(str(recorded["redis_url"]), str(recorded["server_url"]), int(recorded["pid"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a record of `runstream up`: {exc!r}") from exc


def _numbers_from_env(values: dict[str, Any]) -> None:
    """The numbers among ``values`` that came from the environment, as strings, made numbers."""
    if isinstance(values.get("shards"), str):
        if not values["shards"].strip().isdigit():
            raise ConfigError(f"RUNSTREAM_SHARDS must be a whole number, not {values['shards']!r}")
        values["shards"] = int(values["shards"])
    if isinstance(values.get("linger_ms"), str):
        try:
            values["linger_ms"] = float(values["linger_ms"])
        except ValueError:
            raise ConfigError(f"RUNSTREAM_LINGER_MS must be a number, not {values['linger_ms']!r}") from None


def _find_config(start: Path | None) -> Path | None:
    if start is not None and start.is_file():
        return start
    return _find_upwards(start, CONFIG_FILE)


def _default_data_dir(start: Path | None) -> Path:
    """Without a config file: the folder where ``runstream up`` left its record, else the cwd's."""
    instance = _find_upwards(start, INSTANCE_FILE)
    return instance.parent if instance else Path.cwd() / DATA_DIR_NAME


def _find_upwards(start: Path | None, name: str) -> Path | None:
    """The nearest ``.runstream/<name>`` in ``start`` (default: the cwd) or its parents."""
    folder = (start or Path.cwd()).absolute()
    for candidate in (folder, *folder.parents):
        found = candidate / DATA_DIR_NAME / name
        if found.is_file():
            return found
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data
