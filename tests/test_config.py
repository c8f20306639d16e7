"""Configuration (DESIGN §6) and key names (DESIGN §4): where settings come from, what they hide, where keys live.

No Redis is needed: these tests read files in ``tmp_path`` and pass the environment
explicitly (``env=``), so neither the developer's shell nor the working folder leaks in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstream import ConfigError, Experiment, Settings, Workspace
from runstream.config import CONFIG_FILE, DATA_DIR_NAME, INSTANCE_FILE
from runstream.connection import mask_url
from runstream.keys import Keys, check_identifier

REDIS_ENV_VARS = (
    "RUNSTREAM_REDIS_URL",
    "RUNSTREAM_URL",
    "RUNSTREAM_WORKSPACE",
    "RUNSTREAM_TOKEN",
    "RUNSTREAM_DATA_DIR",
)
CLUSTER_SLOTS = 16384


def write_config(folder: Path, content: object) -> Path:
    """Write ``content`` as ``folder/.runstream/config.json``; return the file."""
    return write_json(folder / DATA_DIR_NAME / CONFIG_FILE, content)


def write_instance(folder: Path, redis_url: str, server_url: str) -> Path:
    """Write the record ``runstream up`` leaves in ``folder/.runstream/instance.json`` (this
    process stands for the running ``up``)."""
    record = {"redis_url": redis_url, "server_url": server_url, "pid": os.getpid()}
    return write_json(folder / DATA_DIR_NAME / INSTANCE_FILE, record)


def write_json(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def subfolder(root: Path) -> Path:
    """A folder two levels below ``root``, as a script in a project's subfolder sees it."""
    folder = root / "src" / "train"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RUNSTREAM_* variable from the developer's shell, for APIs that read os.environ."""
    for name in REDIS_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


class TestPrecedence:
    """The environment overrides .runstream/config.json, which overrides the instance `runstream up` recorded."""

    def test_config_file_is_found_in_a_parent_folder(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0", "workspace": "team"})

        settings = Settings.from_config(path=subfolder(tmp_path), env={})

        assert ("redis://config:6379/0", "team") == (settings.redis_url, settings.workspace)

    def test_nearest_config_file_wins(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://outer:6379/0"})
        inner = subfolder(tmp_path)
        write_config(inner.parent, {"redis_url": "redis://inner:6379/0"})

        settings = Settings.from_config(path=inner, env={})

        assert "redis://inner:6379/0" == settings.redis_url

    def test_path_may_name_the_config_file_itself(self, tmp_path: Path) -> None:
        config = write_json(tmp_path / "elsewhere.json", {"redis_url": "redis://named:6379/0"})

        settings = Settings.from_config(path=config, env={})

        assert "redis://named:6379/0" == settings.redis_url

    @pytest.mark.parametrize(
        ("variable", "attribute", "value"),
        [
            ("RUNSTREAM_REDIS_URL", "redis_url", "redis://env:6379/1"),
            ("RUNSTREAM_URL", "server_url", "http://env:8080"),
            ("RUNSTREAM_WORKSPACE", "workspace", "from-env"),
            ("RUNSTREAM_TOKEN", "token", "env-token"),
        ],
    )
    def test_environment_overrides_config_file(self, tmp_path: Path, variable: str, attribute: str, value: str) -> None:
        write_config(
            tmp_path,
            {"redis_url": "redis://config:6379/0", "server_url": "http://config", "workspace": "cfg", "token": "cfg"},
        )

        settings = Settings.from_config(path=tmp_path, env={variable: value})

        assert value == getattr(settings, attribute)

    def test_empty_environment_variable_is_ignored(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0"})

        settings = Settings.from_config(path=tmp_path, env={"RUNSTREAM_REDIS_URL": ""})

        assert "redis://config:6379/0" == settings.redis_url

    def test_instance_is_used_without_config_or_environment(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")

        settings = Settings.from_config(path=tmp_path, env={})

        assert ("redis://127.0.0.1:7001/0", "http://127.0.0.1:7002") == (settings.redis_url, settings.server_url)

    def test_instance_is_found_from_a_subfolder(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")

        settings = Settings.from_config(path=subfolder(tmp_path), env={})

        assert "redis://127.0.0.1:7001/0" == settings.redis_url

    def test_config_file_overrides_instance(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")
        write_config(tmp_path, {"redis_url": "redis://config:6379/0", "server_url": "http://config"})

        settings = Settings.from_config(path=tmp_path, env={})

        assert ("redis://config:6379/0", "http://config") == (settings.redis_url, settings.server_url)

    def test_config_server_url_is_kept_when_the_instance_supplies_redis(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")
        write_config(tmp_path, {"workspace": "team", "server_url": "http://config"})

        settings = Settings.from_config(path=tmp_path, env={})

        assert ("redis://127.0.0.1:7001/0", "http://config", "team") == (
            settings.redis_url,
            settings.server_url,
            settings.workspace,
        )

    def test_environment_overrides_instance(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")

        settings = Settings.from_config(
            path=tmp_path, env={"RUNSTREAM_REDIS_URL": "redis://env:6379/0", "RUNSTREAM_URL": "http://env"}
        )

        assert ("redis://env:6379/0", "http://env") == (settings.redis_url, settings.server_url)


class TestConfigErrors:
    """A missing or unusable configuration raises ConfigError saying what to fix."""

    def test_nothing_configured_says_how_to_start_redis(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)

        with pytest.raises(ConfigError) as raised:
            Settings.from_config(path=subfolder(tmp_path), env={})

        missing = [hint for hint in ("runstream up", "RUNSTREAM_REDIS_URL") if hint not in str(raised.value)]
        assert [] == missing

    def test_unknown_key_is_named(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0", "shard_count": 8})

        with pytest.raises(ConfigError) as raised:
            Settings.from_config(path=tmp_path, env={})

        assert "shard_count" in str(raised.value)

    def test_misspelt_redis_url_is_named_not_reported_missing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        write_config(tmp_path, {"redis_uri": "redis://config:6379/0"})

        with pytest.raises(ConfigError) as raised:
            Settings.from_config(path=tmp_path, env={})

        assert "redis_uri" in str(raised.value)

    @pytest.mark.parametrize("text", ["{", '{"redis_url": "redis://x:6379/0",}', "", "\x00"])
    def test_invalid_json_names_the_file(self, tmp_path: Path, text: str) -> None:
        config = write_config(tmp_path, {})
        config.write_text(text, encoding="utf-8")

        with pytest.raises(ConfigError) as raised:
            Settings.from_config(path=tmp_path, env={})

        assert str(config) in str(raised.value)

    def test_config_must_hold_an_object(self, tmp_path: Path) -> None:
        write_config(tmp_path, ["redis://config:6379/0"])

        with pytest.raises(ConfigError, match="JSON object"):
            Settings.from_config(path=tmp_path, env={})

    def test_invalid_instance_record_is_refused(self, tmp_path: Path) -> None:
        instance = write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")
        instance.write_text("{not json", encoding="utf-8")

        with pytest.raises(ConfigError) as raised:
            Settings.from_config(path=tmp_path, env={})

        assert str(instance) in str(raised.value)

    @pytest.mark.parametrize(
        "override",
        [
            {"redis_url": "http://config:6379/0"},
            {"workspace": "my team"},
            {"workspace": "a:b"},
            {"shards": 0},
            {"shards": "four"},
        ],
    )
    def test_bad_value_is_refused(self, tmp_path: Path, override: dict[str, object]) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0"} | override)

        with pytest.raises(ConfigError):
            Settings.from_config(path=tmp_path, env={})

    def test_bad_workspace_from_the_environment_is_refused(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0"})

        with pytest.raises(ConfigError, match="a:b"):
            Settings.from_config(path=tmp_path, env={"RUNSTREAM_WORKSPACE": "a:b"})


class TestDataDir:
    """Artifacts and the spool live in the .runstream folder the configuration came from, unless told otherwise."""

    def test_defaults_to_the_folder_holding_config_json(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0"})

        settings = Settings.from_config(path=subfolder(tmp_path), env={})

        assert tmp_path / DATA_DIR_NAME == settings.data_dir

    def test_defaults_to_the_folder_holding_the_instance(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")

        settings = Settings.from_config(path=subfolder(tmp_path), env={})

        assert tmp_path / DATA_DIR_NAME == settings.data_dir

    def test_defaults_to_the_working_folder_with_only_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)

        settings = Settings.from_config(path=tmp_path, env={"RUNSTREAM_REDIS_URL": "redis://env:6379/0"})

        assert tmp_path / DATA_DIR_NAME == settings.data_dir

    def test_environment_overrides_it(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0", "data_dir": str(tmp_path / "cfg")})

        settings = Settings.from_config(path=tmp_path, env={"RUNSTREAM_DATA_DIR": str(tmp_path / "env")})

        assert tmp_path / "env" == settings.data_dir

    def test_is_absolute(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)

        settings = Settings.from_config(path=tmp_path, env={"RUNSTREAM_REDIS_URL": "redis://env:6379/0"})

        assert settings.data_dir.is_absolute()


class TestSettingsRepr:
    """repr(settings) shows where settings point but never a password or the token."""

    def test_hides_the_redis_password(self, tmp_path: Path) -> None:
        settings = Settings(redis_url="redis://user:secret@host:6379/0", data_dir=tmp_path)

        shown = repr(settings)

        assert "secret" not in shown
        assert "redis_url='redis://user:***@host:6379/0'" in shown

    def test_hides_the_token(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0"})
        settings = Settings.from_config(path=tmp_path, env={"RUNSTREAM_TOKEN": "tok-9f8e7d"})

        shown = repr(settings)

        assert "tok-9f8e7d" == settings.token
        assert "tok-9f8e7d" not in shown
        assert "token=***" in shown

    def test_shows_no_token_when_there_is_none(self, tmp_path: Path) -> None:
        settings = Settings(redis_url="redis://host:6379/0", data_dir=tmp_path)

        shown = repr(settings)

        assert "token=None" in shown

    def test_hides_secrets_read_from_the_environment(self, tmp_path: Path) -> None:
        env = {"RUNSTREAM_REDIS_URL": "rediss://ml:hunter2@redis.internal:6380/2", "RUNSTREAM_TOKEN": "tok-1a2b"}
        write_config(tmp_path, {})

        shown = repr(Settings.from_config(path=tmp_path, env=env))

        assert "hunter2" not in shown
        assert "tok-1a2b" not in shown

    def test_workspace_repr_hides_the_password(self, tmp_path: Path) -> None:
        settings = Settings(redis_url="redis://user:secret@host:6379/0", data_dir=tmp_path)

        shown = repr(Workspace.from_settings(settings))

        assert "Workspace(name='default', redis='redis://user:***@host:6379/0')" == shown


class TestMaskUrl:
    """mask_url replaces the password with *** and keeps the rest of the URL as it was."""

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
            ("rediss://:secret@host:6380", "rediss://:***@host:6380"),
            ("redis://user:p%40ss%3Aword@host/0", "redis://user:***@host/0"),
            ("unix://:secret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
            ("redis://user:secret@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
            ("redis://user:secret@Redis.Example.com:6379/0", "redis://user:***@Redis.Example.com:6379/0"),
            ("redis://host:6379/0?password=secret", "redis://host:6379/0?password=***"),
            ("redis://host:6379/0?db=2&password=secret", "redis://host:6379/0?db=2&password=***"),
        ],
    )
    def test_masks_the_password(self, url: str, expected: str) -> None:
        masked = mask_url(url)

        assert expected == masked

    @pytest.mark.parametrize("url", ["redis://host:6379/0", "redis://user@host:6379/0", "unix:///run/redis.sock"])
    def test_leaves_a_url_without_password_alone(self, url: str) -> None:
        masked = mask_url(url)

        assert url == masked

    def test_passes_none_through(self) -> None:
        masked = mask_url(None)

        assert masked is None

    def test_masks_a_url_it_cannot_fully_parse(self) -> None:
        masked = mask_url("redis://user:secret@host:port/0")

        assert "redis://user:***@host:port/0" == masked


class TestWorkspaceFromConfig:
    """Workspace.from_config builds the workspace the configuration names."""

    @pytest.mark.usefixtures("clean_environ")
    def test_reads_the_config_file(self, tmp_path: Path) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0", "workspace": "team", "shards": 8})

        workspace = Workspace.from_config(subfolder(tmp_path))

        assert ("team", "team", 8, "redis://config:6379/0", tmp_path / DATA_DIR_NAME) == (
            workspace.name,
            workspace.keys.workspace,
            workspace.keys.shards,
            workspace.settings.redis_url,
            workspace.settings.data_dir,
        )

    @pytest.mark.usefixtures("clean_environ")
    def test_environment_overrides_the_config_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write_config(tmp_path, {"redis_url": "redis://config:6379/0", "workspace": "team"})
        monkeypatch.setenv("RUNSTREAM_WORKSPACE", "from-env")

        workspace = Workspace.from_config(tmp_path)

        assert ("from-env", "redis://config:6379/0") == (workspace.name, workspace.settings.redis_url)

    @pytest.mark.usefixtures("clean_environ")
    def test_uses_the_instance_runstream_up_recorded(self, tmp_path: Path) -> None:
        write_instance(tmp_path, "redis://127.0.0.1:7001/0", "http://127.0.0.1:7002")

        workspace = Workspace.from_config(subfolder(tmp_path))

        assert ("redis://127.0.0.1:7001/0", "default") == (workspace.settings.redis_url, workspace.name)

    @pytest.mark.usefixtures("clean_environ")
    def test_nothing_configured_says_how_to_start_redis(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)

        with pytest.raises(ConfigError, match="runstream up"):
            Workspace.from_config(tmp_path)


def crc16_xmodem(data: bytes) -> int:
    """CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster hashes key slots with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_tag(key: str) -> bytes:
    """The part of ``key`` Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            return raw[start + 1 : end]
    return raw


def key_slot(key: str) -> int:
    return crc16_xmodem(hash_tag(key)) % CLUSTER_SLOTS


def run_keys(keys: Keys, run_id: str, metric: str) -> list[str]:
    """Every key of one run's record."""
    return [
        keys.meta(run_id),
        keys.tags(run_id),
        keys.properties(run_id),
        keys.metric_index(run_id),
        keys.metric_series(run_id, metric),
        keys.metric_values(run_id, metric),
        keys.files(run_id),
        keys.children(run_id),
        keys.applied(run_id),
        keys.live(run_id),
        keys.output(run_id),
    ]


class TestClusterSlotHelper:
    """The test's own key-slot function agrees with the values the Redis Cluster spec publishes."""

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("123456789", 0x31C3 % CLUSTER_SLOTS),
            ("foo", 12182),
            ("{user1000}.following", 3443),
            ("foo{}{bar}", 8363),
            ("foo{{bar}}zap", 4015),
            ("foo{bar}{zap}", 5061),
        ],
    )
    def test_matches_the_spec(self, key: str, expected: int) -> None:
        slot = key_slot(key)

        assert expected == slot

    def test_crc16_check_value(self) -> None:
        checksum = crc16_xmodem(b"123456789")

        assert 0x31C3 == checksum


class TestRunKeys:
    """Every key of one run hashes to the run's cluster slot, so one script can update the whole record."""

    def test_share_one_slot_with_braces_in_the_metric_name(self) -> None:
        keys = Keys("team", prefix="rs")

        slots = {key_slot(key) for key in run_keys(keys, "mnist_1700000000_0a1b2c3d", "loss{val}}{")}

        assert {key_slot("{mnist_1700000000_0a1b2c3d}")} == slots

    def test_hash_tag_is_the_run_id(self) -> None:
        keys = Keys("team", prefix="rs")

        tags = {hash_tag(key) for key in run_keys(keys, "mnist_1700000000_0a1b2c3d", "a}b{c")}

        assert {b"mnist_1700000000_0a1b2c3d"} == tags

    @given(
        run_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", fullmatch=True),
        metric=st.text(min_size=1, max_size=40),
    )
    def test_share_one_slot_for_any_metric_name(self, run_id: str, metric: str) -> None:
        keys = Keys("ws", prefix="p")

        slots = {key_slot(key) for key in run_keys(keys, run_id, metric)}

        assert {key_slot(keys.meta(run_id))} == slots


class TestIngestKeys:
    """Each ingest shard has a hash tag of its own, and its lease lives in the shard's slot."""

    @pytest.mark.parametrize("shards", [1, 4, 16])
    def test_shards_use_different_tags(self, shards: int) -> None:
        keys = Keys("team", shards=shards)

        tags = {hash_tag(keys.ingest(shard)) for shard in range(shards)}

        assert shards == len(tags)

    def test_shard_tag_names_the_workspace_and_the_shard(self) -> None:
        keys = Keys("team")

        tag = hash_tag(keys.ingest(3))

        assert b"team:s3" == tag

    def test_lease_shares_the_shard_slot(self) -> None:
        keys = Keys("team", shards=8)

        apart = [shard for shard in range(8) if key_slot(keys.ingest(shard)) != key_slot(keys.ingest_lease(shard))]

        assert [] == apart

    def test_runs_spread_over_every_shard(self) -> None:
        keys = Keys("team", shards=4)
        run_ids = [f"mnist_1700000000_{n:08x}" for n in range(200)]

        used = {keys.ingest_for(run_id) for run_id in run_ids}

        assert {keys.ingest(shard) for shard in range(4)} == used


class TestCheckIdentifier:
    """Workspace, experiment and prefix names are kept to 1-255 of [A-Za-z0-9_.-], starting with a letter or digit."""

    @pytest.mark.parametrize("name", ["", "a{b", "a}b", "a:b", "-x", ".x", "_x", "a b", "x" * 256, "é", "a\n"])
    def test_refuses(self, name: str) -> None:
        with pytest.raises(ValueError, match="invalid"):
            check_identifier("workspace", name)

    @pytest.mark.parametrize("name", ["a", "0", "train-within-notebook", "v1.2_final", "x" * 255])
    def test_accepts(self, name: str) -> None:
        accepted = check_identifier("workspace", name)

        assert name == accepted

    def test_refuses_a_non_string(self) -> None:
        with pytest.raises(TypeError, match="workspace name must be a str"):
            check_identifier("workspace", 7)

    @pytest.mark.parametrize("name", ["a{b", "a:b"])
    def test_keys_refuse_a_bad_workspace(self, name: str) -> None:
        with pytest.raises(ValueError, match="invalid"):
            Keys(name)


class TestRelativeDataDir:
    """A relative data_dir in config.json is taken from the project folder, not the working folder."""

    def test_relative_to_the_project(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        project = tmp_path / "project"
        (project / ".runstream").mkdir(parents=True)
        (project / ".runstream" / "config.json").write_text(
            json.dumps({"redis_url": "redis://localhost:6379/0", "data_dir": "artifacts-here"})
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)

        settings = Settings.from_config(project, env={})

        assert project / "artifacts-here" == settings.data_dir


class TestWorkspaceInCode:
    """A workspace can be built in code, from the configuration with overrides, or from settings."""

    def test_explicit_redis_url(self, tmp_path: Path) -> None:
        workspace = Workspace("team-a", redis_url="redis://u:secret@localhost:6379/0", data_dir=tmp_path, shards=8)

        assert ("team-a", 8, tmp_path) == (workspace.name, workspace.keys.shards, workspace.settings.data_dir)
        assert "secret" not in repr(workspace)
        assert workspace.keys.ingest(0).startswith("rs:{team-a:s0}")

    def test_configuration_with_overrides(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RUNSTREAM_REDIS_URL", "redis://localhost:6380/0")
        monkeypatch.delenv("RUNSTREAM_WORKSPACE", raising=False)
        monkeypatch.chdir(tmp_path)

        workspace = Workspace("override", heartbeat_interval=1.0)

        assert ("override", "redis://localhost:6380/0", 1.0) == (
            workspace.name,
            workspace.settings.redis_url,
            workspace.settings.heartbeat_interval,
        )


class TestExperiments:
    """Experiments are named within a workspace; names are safe for keys and URLs."""

    def test_equality_and_repr(self, tmp_path: Path) -> None:
        workspace = Workspace("w", redis_url="redis://localhost:6379/0", data_dir=tmp_path)

        assert Experiment(workspace, "mnist") == Experiment(workspace, "mnist")
        assert Experiment(workspace, "mnist") != Experiment(workspace, "cifar")
        assert 1 == len({Experiment(workspace, "mnist"), Experiment(workspace, "mnist")})
        assert "Experiment(name='mnist', workspace='w')" == repr(Experiment(workspace, "mnist"))

    @pytest.mark.parametrize("name", ["", "has space", "a{b}", "a:b", "-lead"])
    def test_bad_names_are_refused(self, tmp_path: Path, name: str) -> None:
        workspace = Workspace("w", redis_url="redis://localhost:6379/0", data_dir=tmp_path)

        with pytest.raises(ValueError, match="experiment name"):
            Experiment(workspace, name)
