"""The workspace: which Redis, which key namespace, where files and the spool live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from runstream.artifacts import ArtifactStore
from runstream.config import DATA_DIR_NAME, Settings, read_instance
from runstream.connection import mask_url
from runstream.errors import ConfigError
from runstream.keys import Keys
from runstream.object_artifacts import artifact_store as open_artifact_store

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["Workspace", "server_url"]


def server_url(settings: Settings) -> str:
    """The base URL of the workspace's server: the configuration's, else that of the
    ``runstream up`` running for its data folder (no trailing slash).

    Raises:
        ConfigError: there is neither.
    """
    if settings.server_url:
        return settings.server_url.rstrip("/")
    instance = read_instance(settings.data_dir)
    if instance is not None and instance.alive() and instance.server_url:
        return instance.server_url.rstrip("/")
    raise ConfigError("no server URL is configured: set RUNSTREAM_URL, or run `runstream up` in the data folder")


class Workspace:
    """A namespace of experiments and runs in one Redis.

    Args:
        name: the workspace name (default: from the configuration, else "default").
        artifact_store: where run files go (default: ``artifacts_url``'s store, else a
            local folder in ``data_dir``).
        **settings: any :class:`~runstream.config.Settings` field (``redis_url``,
            ``data_dir``, ``shards``, ...) overriding the configuration.

    With no ``redis_url`` given, the configuration is read as
    :meth:`from_config` does.
    """

    def __init__(
        self, name: str | None = None, *, artifact_store: ArtifactStore | None = None, **settings: Any
    ) -> None:
        if name is not None:
            settings["workspace"] = name
        if "redis_url" in settings:
            settings["data_dir"] = Path(settings.get("data_dir", DATA_DIR_NAME)).absolute()
            resolved = Settings(**settings)
        else:
            resolved = Settings.from_config().with_changes(**settings)
        self._init(resolved, artifact_store)

    def _init(self, settings: Settings, artifact_store: ArtifactStore | None) -> None:
        self.settings = settings
        self.name = settings.workspace
        self.keys = Keys(settings.workspace, prefix=settings.key_prefix, shards=settings.shards)
        self.artifacts: ArtifactStore = artifact_store or open_artifact_store(settings)

    def get_run(self, run_id: str) -> Run:
        """The run ``run_id`` of this workspace, whatever its experiment (Azure's ``Workspace.get_run``).

        Raises:
            RunNotFoundError: there is no such run.
        """
        from runstream.run import Run  # run imports workspace: a cycle

        return Run.get(self, run_id)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Self:
        """The workspace the environment, ``.runstream/config.json`` or ``runstream up`` names.

        Raises:
            ConfigError: no Redis URL could be found; the message says how to start one.
        """
        return cls.from_settings(Settings.from_config(path))

    @classmethod
    def from_settings(cls, settings: Settings, artifact_store: ArtifactStore | None = None) -> Self:
        workspace = cls.__new__(cls)
        workspace._init(settings, artifact_store)
        return workspace

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, redis={mask_url(self.settings.redis_url)!r})"
