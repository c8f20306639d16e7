"""Every Redis key name runstream uses, built in one place.

The producer, the collector and the consumers all import :class:`Keys`; no key
name appears as a string literal anywhere else.  Keys carry a Redis Cluster
hash tag (the part in braces) so that everything about one run lives in one
slot and can be updated by one atomic script:

    rs:{<ws>:s<N>}:ingest        ingest shard stream N (a run id hashes to one shard)
    rs:<ws>:{<run_id>}:meta      hash: experiment, status, times, parent, error
    rs:<ws>:{<run_id>}:<part>    tags, properties, metric index and series, files,
                                 applied seqs, live stream, output log
    rs:<ws>:exp:<name>:runs      sorted set of run ids by start time
    rs:<ws>:experiments          set of experiment names
    rs:<ws>:deadletter           stream of refused entries with the reason
    rs:<ws>:shards               how many ingest shards the workspace has (see shard_count)
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SHARDS",
    "INGEST_GROUP",
    "MAX_RUN_ID_LEN",
    "Keys",
    "check_identifier",
    "check_run_id",
]

DEFAULT_PREFIX = "rs"
#: Ingest shards of a workspace: enough to spread over the primaries of a small cluster
#: (each shard is one stream, in one slot) and over a few collectors.
DEFAULT_SHARDS = 16
#: The consumer group every collector reader joins on each ingest shard.
INGEST_GROUP = "collectors"

# Workspace, experiment and key-prefix names end up inside key names and run ids;
# braces would break the hash tags and ':' the layout, so they are kept to a safe,
# URL-friendly alphabet (as Azure ML does for experiment names).
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
#: A run id is ``<experiment>_<unix seconds>_<8 hex>``: an experiment name and 20 more characters.
MAX_RUN_ID_LEN = 255 + 20
# Run ids name a folder of the artifact store and sit inside hash tags, so they share the
# identifiers' alphabet: no '/', no backslash, no braces, never '.' or '..' (the first character
# is a letter or digit), nothing a URL must encode.
_RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_RUN_ID_LEN - 1}}}")


def check_identifier(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid workspace/experiment/prefix name.

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: it is empty, too long or uses characters outside ``[A-Za-z0-9_.-]``.
    """
    return _matching(_IDENTIFIER, f"{kind} name", 255, value)


def check_run_id(value: object) -> str:
    """Return ``value`` if it can be a run id (and so a folder name and a hash tag).

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: it is empty, too long, or uses characters outside ``[A-Za-z0-9_.-]``.
    """
    return _matching(_RUN_ID, "run id", MAX_RUN_ID_LEN, value)


def _matching(pattern: re.Pattern[str], what: str, longest: int, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not pattern.fullmatch(value):
        raise ValueError(
            f"{what} {value[:80]!r} is invalid: use 1-{longest} letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one workspace.

    Attributes:
        workspace: the workspace name (part of every key).
        prefix: the first component of every key; tests use one per test.
        shards: how many ingest streams the workspace spreads runs over.
    """

    workspace: str
    prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        check_identifier("workspace", self.workspace)
        check_identifier("key prefix", self.prefix)
        if not 1 <= self.shards <= 1024:
            raise ValueError(f"shards must be between 1 and 1024, not {self.shards}")

    # -- ingest ---------------------------------------------------------------------

    def shard_of(self, run_id: str) -> int:
        """The ingest shard a run's batches go to (stable across processes)."""
        return zlib.crc32(run_id.encode()) % self.shards

    def ingest(self, shard: int) -> str:
        return f"{self.prefix}:{{{self.workspace}:s{shard}}}:ingest"

    def ingest_for(self, run_id: str) -> str:
        return self.ingest(self.shard_of(run_id))

    def ingest_lease(self, shard: int) -> str:
        """Lease key naming the collector that owns a shard (same slot as the shard)."""
        return f"{self.prefix}:{{{self.workspace}:s{shard}}}:lease"

    # -- one run's record (all in the run's slot) ------------------------------------

    def _run(self, run_id: str, part: str) -> str:
        return f"{self.prefix}:{self.workspace}:{{{run_id}}}:{part}"

    def meta(self, run_id: str) -> str:
        return self._run(run_id, "meta")

    def tags(self, run_id: str) -> str:
        return self._run(run_id, "tags")

    def properties(self, run_id: str) -> str:
        return self._run(run_id, "props")

    def metric_index(self, run_id: str) -> str:
        """Hash: metric name -> how the metric was logged (its kind) and point count."""
        return self._run(run_id, "metrics")

    def metric_series(self, run_id: str, name: str) -> str:
        """List of sealed chunks of one metric's packed series; the name follows the
        hash tag, so any unicode (braces included) is safe."""
        return self._run(run_id, f"m:{name}")

    def metric_tail(self, run_id: str, name: str) -> str:
        """The newest chunks of a packed series, not yet sealed into the list."""
        return self._run(run_id, f"t:{name}")

    def metric_values(self, run_id: str, name: str) -> str:
        """Non-packed values of one metric (lists, rows, tables, strings)."""
        return self._run(run_id, f"v:{name}")

    def metric_counts(self, run_id: str) -> str:
        """Hash: metric name -> how many points (or rows, or images) it holds."""
        return self._run(run_id, "counts")

    def files(self, run_id: str) -> str:
        return self._run(run_id, "files")

    def children(self, run_id: str) -> str:
        return self._run(run_id, "children")

    def applied(self, run_id: str) -> str:
        """Hash: producer id -> last seq applied, for exactly-once apply."""
        return self._run(run_id, "seqs")

    def live(self, run_id: str) -> str:
        """Capped stream of compact updates that subscribers follow."""
        return self._run(run_id, "live")

    def output(self, run_id: str) -> str:
        """Stream of the run's captured output lines."""
        return self._run(run_id, "out")

    # -- workspace indexes ----------------------------------------------------------

    def experiments(self) -> str:
        return f"{self.prefix}:{self.workspace}:experiments"

    def experiment_runs(self, experiment: str) -> str:
        return f"{self.prefix}:{self.workspace}:exp:{experiment}:runs"

    def deadletter(self) -> str:
        return f"{self.prefix}:{self.workspace}:deadletter"

    def shard_count(self) -> str:
        """The workspace's shard count, as high as any process was configured with."""
        return f"{self.prefix}:{self.workspace}:shards"

    def live_runs(self) -> str:
        """Sorted set of runs not yet final, by the time of their last heartbeat."""
        return f"{self.prefix}:{self.workspace}:live"

    def ended_runs(self) -> str:
        """Sorted set of ended runs whose live stream is still whole, by the collector's time of the end."""
        return f"{self.prefix}:{self.workspace}:ended"

    def archive_due(self) -> str:
        """Sorted set of ended runs not archived yet, by the time they became due to be (the end)."""
        return f"{self.prefix}:{self.workspace}:archive-due"

    def delete_due(self) -> str:
        """Sorted set of ended runs that a retention deletes, by the time they ended."""
        return f"{self.prefix}:{self.workspace}:delete-due"

    def retention(self) -> str:
        """Hash: experiment name -> its retention, where it has its own (:mod:`runstream.retention`)."""
        return f"{self.prefix}:{self.workspace}:retention"

    def summaries(self) -> str:
        """Hash: ended run id -> its summary for search (msgpack: runstream.consumer.summaries)."""
        return f"{self.prefix}:{self.workspace}:summaries"

    def collectors(self) -> str:
        """Hash: collector reader name -> its latest counters (JSON)."""
        return f"{self.prefix}:{self.workspace}:collectors"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this workspace (for tests and cleanup)."""
        return f"{self.prefix}:*{self.workspace}*"
