"""An archived record's series are decoded a metric at a time, as they are read.

Pure tests (no Redis, no store): a record's file set is encoded and decoded in memory.
Reading one metric of a run must not pay for its other metrics (the first chart of a
ten-metric run of a million points each would decode all ten), and what is read is
what was written.
"""

from __future__ import annotations

import pytest

from runstream.archive import fileset
from runstream.archive.columns import segments
from runstream.archive.fileset import Record, Series, decode, digest, encode
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
    real = fileset._unpco

    def counted(data: bytes, dtype: str, n: int) -> object:
        decoded_columns.append(n)
        return real(data, dtype, n)

    monkeypatch.setattr(fileset, "_unpco", counted)
    decoded.series["epoch"]

    assert [3, 3, 3, 2, 2, 2] == decoded_columns  # its two segments' steps, values, times; no other metric's
