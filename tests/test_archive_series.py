"""An archived record's series are read and decoded a metric at a time, as they are read.

No Redis: a record's file set is encoded and decoded in memory, or written to a local
store and opened by ranges as readers open it.  Reading one metric of a run must not pay
for its other metrics (the first chart of a ten-metric run of a million points each
would decode all ten, and fetch them all from S3), what is read is what was written,
and a file that is damaged or replaced under a reader is an error, never other data.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runstream.archive import series_file
from runstream.archive.archived import open_record
from runstream.archive.columns import Segment, segments
from runstream.archive.fileset import GROUP_POINTS, MANIFEST, SERIES, Record, Series, decode, digest, encode
from runstream.archive.series_file import ArchiveError, Points, RangedFile
from runstream.archive.store import ArchiveStore, open_store
from runstream.collector.records import pack_chunk


def a_record() -> Record:
    """Three series (floats, ints then floats, text), chunked as the collector writes them."""
    series = {
        "loss": [
            pack_chunk(range(0, 500), [1.0 / (1 + s) for s in range(500)], 1.8e9),
            pack_chunk(range(500, 900), [0.5] * 400, 1.8e9 + 1),
        ],
        "epoch": [pack_chunk(range(3), [1, 2, 3], 1.8e9), pack_chunk(range(3, 5), [4.5, 5.5], 1.8e9 + 2)],
        "note": [pack_chunk(range(2), ["a", "b"], 1.8e9)],
    }
    kinds = {name: "series" for name in series}
    return Record(
        "train_1800000000_0a1b2c3d",
        {"status": "Completed"},
        kinds=kinds,
        series={name: segments(parts) for name, parts in series.items()},
    )


def test_a_metric_is_decoded_when_it_is_read() -> None:
    record = a_record()

    decoded = decode(encode(record))

    assert isinstance(decoded.series, Series)
    assert record.points == decoded.points  # counted from the table: nothing decoded yet
    assert {"loss", "epoch", "note"} == set(decoded.series)
    assert 3 == len(decoded.series)
    assert [] == decoded.series.get("absent", [])
    with pytest.raises(KeyError):
        decoded.series["absent"]
    loss = decoded.series["loss"]
    assert loss is decoded.series["loss"]  # decoded once, then kept
    assert [s.values.tolist() for s in record.series["loss"]] == [s.values.tolist() for s in loss]  # type: ignore[union-attr]
    assert digest(record) == digest(decoded)  # every metric, every point's step, value and time


def test_a_metric_not_read_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = decode(encode(a_record()))
    decoded_columns: list[int] = []
    real = series_file.unpco

    def counted(data: bytes, dtype: str, n: int) -> object:
        decoded_columns.append(n)
        return real(data, dtype, n)

    monkeypatch.setattr(series_file, "unpco", counted)
    decoded.series["epoch"]

    assert [3, 3, 3, 2, 2, 2] == decoded_columns  # its two segments' steps, values, times; no other metric's


def a_large_record() -> Record:
    """Three metrics of more points than a row group shares (noise: 8 bytes a value), and
    forty small ones."""
    n = GROUP_POINTS + 1000
    steps = np.arange(n, dtype=np.int64)
    times = 1.8e9 + (steps // 100).astype(np.float64)
    noise = np.random.default_rng(7).random((3, n))
    series = {name: [Segment(b"d", False, steps, noise[k], times)] for k, name in enumerate(["acc", "loss", "lr"])}
    for k in range(40):
        series[f"small/{k:02d}"] = [Segment(b"q", False, steps[:10], steps[:10] * k, times[:10])]
    return Record("train_1800000000_0a1b2c3d", {"status": "Completed"}, series=series)


def stored(tmp_path: Path, objects: dict[str, bytes]) -> tuple[ArchiveStore, str]:
    store, location = open_store(None, tmp_path), "ws/runs/train_1800000000_0a1b2c3d/"
    for name, data in objects.items():
        (tmp_path / "archive" / location).mkdir(parents=True, exist_ok=True)
        (tmp_path / "archive" / location / name).write_bytes(data)
    return store, location


class TestRangedReads:
    def test_a_metric_is_fetched_alone_and_reads_as_written(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record = a_large_record()
        objects = encode(record)
        files: list[RangedFile] = []
        monkeypatch.setattr(series_file.RangedFile, "__init__", _recorded(files))
        store, location = stored(tmp_path, objects)

        opened = open_record(store, location)
        loss = numbers(opened, "loss")

        (file,) = files
        assert file.size == len(objects[SERIES])
        assert file.fetched < len(objects[SERIES]) / 2  # the footer, loss' steps and values: not acc, lr
        assert np.array_equal(record.series["loss"][0].values, loss[0].values)
        assert np.array_equal(record.series["loss"][0].steps, loss[0].steps)
        assert record.points == opened.points
        assert digest(record) == digest(opened)  # and every other metric, times included

    def test_small_metrics_share_a_row_group(self) -> None:
        file = pq.ParquetFile(pa.BufferReader(encode(a_large_record())[SERIES]))

        assert 4 == file.num_row_groups  # acc, loss, lr, and the forty small ones together

    def test_a_damaged_page_is_an_error_and_the_other_metrics_still_read(self, tmp_path: Path) -> None:
        record = a_large_record()
        objects = encode(record)
        data = bytearray(objects[SERIES])
        group = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata.row_group(1)  # loss'
        values = group.column(group.num_columns - 2)  # its values column
        data[values.data_page_offset + values.total_compressed_size // 2] ^= 0xFF
        objects[SERIES] = bytes(data)
        store, location = stored(tmp_path, objects)

        opened = open_record(store, location)

        with pytest.raises(ArchiveError, match="loss"):
            numbers(opened, "loss")
        assert np.array_equal(record.series["lr"][0].values, numbers(opened, "lr")[0].values)

    def test_a_file_replaced_while_open_is_an_error_not_other_data(self, tmp_path: Path) -> None:
        store, location = stored(tmp_path, encode(a_large_record()))
        opened = open_record(store, location)
        other = a_large_record()
        other.series = {"acc": other.series["lr"], "loss": other.series["acc"], "lr": other.series["loss"]}
        (tmp_path / "archive" / location / SERIES).write_bytes(encode(other)[SERIES])

        with pytest.raises(ArchiveError, match="changed"):
            numbers(opened, "loss")

    def test_a_truncated_series_file_is_refused_on_open(self, tmp_path: Path) -> None:
        objects = encode(a_large_record())
        objects[SERIES] = objects[SERIES][:-100]
        store, location = stored(tmp_path, objects)

        with pytest.raises(ArchiveError, match="does not match the manifest"):
            open_record(store, location)

    def test_an_older_file_set_with_one_row_group_is_read_whole(self, tmp_path: Path) -> None:
        record = a_large_record()
        objects = encode(record)
        table = pq.read_table(pa.BufferReader(objects[SERIES]))
        sink = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")  # as format 1 wrote it
        objects[SERIES] = sink.getvalue()
        manifest = json.loads(objects[MANIFEST])
        manifest["files"][SERIES] = {
            "bytes": len(objects[SERIES]),
            "sha256": hashlib.sha256(objects[SERIES]).hexdigest(),
        }
        objects[MANIFEST] = json.dumps(manifest).encode()
        store, location = stored(tmp_path, objects)

        opened = open_record(store, location)

        assert digest(record) == digest(opened)
        assert digest(record) == digest(decode(objects))


def numbers(record: Record, name: str) -> Sequence[Points | Segment]:
    """The metric's steps and values as a chart reads them (an archived record's)."""
    assert isinstance(record.series, Series)
    return record.series.numbers(name)


def _recorded(files: list[RangedFile]) -> object:
    real = RangedFile.__init__

    def init(self: RangedFile, *args: object) -> None:
        real(self, *args)  # type: ignore[arg-type]
        files.append(self)

    return init
