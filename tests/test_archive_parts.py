"""The archive's parts on their own: stores named by URL, the records kept per process, retention figures.

What the end-to-end tests in tests/test_archive.py reach only by chance: a URL that names
no store, a record cache over its budget, series of several types, retention figures
that are not figures, and a run archived without its summary kept.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from runstream import Experiment
from runstream.archive import archived
from runstream.archive.columns import Segment
from runstream.archive.store import open_store
from runstream.connection import connect
from runstream.consumer.reader import RecordReader
from runstream.consumer.summaries import summaries
from runstream.retention import Retention, decode_retention, encode_retention
from tests.conftest import CollectorThread, wait_until


class TestStores:
    def test_a_file_url_and_the_default_folder(self, tmp_path: Path) -> None:
        named = open_store(f"file://{tmp_path / 'elsewhere'}")
        default = open_store(None, tmp_path)

        asyncio.run(named.put("a/b.bin", b"bytes"))

        assert (tmp_path / "elsewhere" / "a" / "b.bin").read_bytes() == b"bytes"
        assert (tmp_path / "archive").is_dir()
        assert default.folder == tmp_path / "archive"
        assert ["a/b.bin"] == asyncio.run(named.names("a/"))
        asyncio.run(named.delete(["a/b.bin", "a/absent.bin"]))  # what is not there is no error
        assert not (tmp_path / "elsewhere" / "a").exists()  # emptied folders go too

    @pytest.mark.parametrize(
        ("url", "says"),
        [("s3://", "names no bucket"), ("gopher://x/y", "neither s3://"), (None, "no data folder")],
    )
    def test_a_url_that_names_no_store(self, url: str | None, says: str) -> None:
        with pytest.raises(ValueError, match=says):
            open_store(url)


def segment(kind: bytes, values: Sequence[float | str], start: int = 0) -> Segment:
    steps = np.arange(start, start + len(values), dtype=np.int64)
    typed: Any = [str(v) for v in values] if kind == b"s" else np.asarray(values, archived_dtype(kind))
    return Segment(kind, False, steps, typed, np.full(len(values), 1.7e9))


def archived_dtype(kind: bytes) -> str:
    return {b"d": "<f8", b"q": "<i8", b"?": "u1"}[kind]


class TestSeriesArrays:
    def test_segments_of_several_types_make_one_mixed_series(self) -> None:
        found = archived.series_arrays([segment(b"q", [1, 2]), segment(b"d", [0.5], 2), segment(b"?", [1], 3)])

        assert found is not None
        steps, values, value_type = found
        assert ([0, 1, 2, 3], [1.0, 2.0, 0.5, 1.0], "mixed") == (steps.tolist(), values.tolist(), value_type)

    def test_text_has_no_arrays_and_nothing_is_an_empty_float_series(self) -> None:
        empty = archived.series_arrays([])

        assert archived.series_arrays([segment(b"s", ["a", "b"])]) is None
        assert empty is not None
        assert (0, "float") == (len(empty[0]), empty[2])


class TestRecordCache:
    """Records decoded in a process are kept up to a budget of points, the least recently read first out."""

    @pytest.fixture
    def two_archived(
        self, experiment: Experiment, start_collector: Callable[..., CollectorThread], client: redis.Redis
    ) -> list[str]:
        start_collector(experiment.workspace, live_kept_after_end=0.2, archive_after=None)
        ids = []
        for n in range(2):
            run = experiment.start_logging()
            for step in range(100):
                run.log("loss", step * (n + 1.0))
            run.complete()
            live = experiment.workspace.keys.live(run.id)
            wait_until(functools.partial(trimmed, client, live))
            assert run.archive()
            ids.append(run.id)
        return ids

    def test_over_the_budget_the_oldest_goes(
        self, experiment: Experiment, two_archived: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(archived, "BUDGET", 150)
        archived._records.clear()
        archived._packed.clear()

        async def read_both() -> list[object]:
            async with connect(experiment.workspace.settings.redis_url) as client:
                reader = RecordReader(client, experiment.workspace.keys)
                return [(await reader.metrics(run_id, "loss"))["loss"] for run_id in two_archived]

        first, second = asyncio.run(read_both())

        assert [float(s) for s in range(100)] == first
        assert [2.0 * s for s in range(100)] == second
        assert [two_archived[1]] == [path.rstrip("/").rsplit("/", 1)[-1] for _, path, _ in archived._records]

    def test_a_summary_not_kept_is_made_from_the_archive(
        self, experiment: Experiment, two_archived: list[str], client: redis.Redis
    ) -> None:
        client.delete(experiment.workspace.keys.summaries())  # as if the archiver was killed before writing it

        async def summed() -> list[dict[str, Any]]:
            async with connect(experiment.workspace.settings.redis_url) as redis_client:
                return await summaries(RecordReader(redis_client, experiment.workspace.keys), two_archived)

        found = asyncio.run(summed())

        assert [{"last": 99.0, "min": 0.0, "max": 99.0}, {"last": 198.0, "min": 0.0, "max": 198.0}] == [
            s["metrics"]["loss"] for s in found
        ]
        assert 2 == client.hlen(experiment.workspace.keys.summaries())


def trimmed(client: redis.Redis, live: str) -> bool:
    return 1 == client.xlen(live)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


class TestRetentionFigures:
    def test_round_trip_and_defaults(self) -> None:
        own = decode_retention(encode_retention(archive_after=60, delete_after=None) or "")
        defaults = Retention(600.0, 86_400.0)

        assert {"archive_after": 60.0, "delete_after": None} == own
        assert Retention(60.0, None) == defaults.with_own(own)
        assert defaults == defaults.with_own({})
        assert encode_retention() is None  # both left to the workspace

    @pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"archive_after": "soon"}'])
    def test_a_stored_figure_that_reads_as_none_is_ignored(self, raw: bytes) -> None:
        assert {} == decode_retention(raw)
