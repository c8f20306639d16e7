"""The workspace: which Redis, which key namespace, where files and the spool live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

from runstream.artifacts import ArtifactStore
from runstream.config import DATA_DIR_NAME, Settings
from runstream.connection import mask_url
from runstream.keys import Keys
from runstream.object_artifacts import artifact_store as open_artifact_store

__all__ = ["Workspace"]


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
