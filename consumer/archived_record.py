"""An archived run's record as :class:`~.reader.RecordReader` reads it: its packed series, its
arrays, its values (the archive extra's, loaded with the record)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runstream.events import Value

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from runstream.archive.columns import Segment
    from runstream.archive.fileset import Record
    from runstream.archive.series_file import Points

    Arrays = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str]

__all__ = ["ArchivedRecord"]


class ArchivedRecord:
    """An archived run's record (decoded, shared by every reader in the process) and its key."""

    def __init__(self, key: tuple[str, str, str], record: Record) -> None:
        self.key = key
        self.record = record

    async def packed_parts(self, name: str) -> list[bytes]:
        from runstream.archive.archived import packed_parts  # loaded with the record

        return await packed_parts(self.key, self.record, name)

    async def arrays(self, name: str) -> Arrays | None:
        from runstream.archive.archived import series_arrays  # loaded with the record

        return series_arrays(await self.record.numbers(name))

    async def numbers(self, name: str) -> Sequence[Points | Segment]:
        """The metric's steps and values, segment by segment (read from the store on its
        first read)."""
        return await self.record.numbers(name)

    @staticmethod
    def values(segments: Sequence[Points | Segment]) -> list[Value]:
        """The segments' values as ``unpack_values`` gives them (Python floats, ints, bools, strs)."""
        out: list[Value] = []
        for s in segments:
            if isinstance(s.values, list):
                out.extend(s.values)
            elif s.kind == b"?":
                out.extend(map(bool, s.values.tolist()))
            else:
                out.extend(s.values.tolist())
        return out
