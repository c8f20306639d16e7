"""The door: every check a logged value passes before it may enter the buffer.

Bad input is refused here, at the call, with a ``TypeError`` or ``ValueError`` that
names the metric; nothing refused ever reaches the stream or the logger thread.
numpy and torch scalars (anything with a 0-d ``.item()``) are turned into the
Python value they hold, so a series logged as ``np.float32`` reads back as float.

Size: a call of any size is taken when the producer can cut it into entries (a list
by values, a table by rows, tags by keys; see :mod:`runstream._batcher`).  What no
entry can hold is refused here, naming the limit: a str over ``MAX_STR_LEN``
characters (anywhere: a value, a list item, a table cell, a tag), and a row over
:data:`MAX_ROW_BYTES` (a ``log_row``, or one row of a ``log_table``), which cannot be cut.
"""

from __future__ import annotations

import operator
import posixpath
from collections.abc import Iterable, Mapping
from typing import Final

from runstream.codec import MAX_BATCH_BYTES
from runstream.errors import InvalidNameError, InvalidValueError
from runstream.events import MAX_NAME_LEN, MAX_STR_LEN, Value

__all__ = [
    "MAX_FILE_NAME_LEN",
    "MAX_ROW_BYTES",
    "check_file_name",
    "check_name",
    "check_row",
    "check_step",
    "check_str_map",
    "check_table",
    "check_value",
    "check_values",
]

MAX_FILE_NAME_LEN: Final = 1024
#: Most bytes one row (a ``log_row``, one row of a ``log_table``) may take, counted as
#: :func:`_row_bytes` does: a row is never cut, so it must fit in one entry, with room
#: to spare for the event around it (its name of up to 1 KiB, its type and time).
MAX_ROW_BYTES: Final = MAX_BATCH_BYTES - 64 * 1024
#: What :func:`_row_bytes` counts per cell besides its name and value: the msgpack headers
#: of its name (3) and value (5), and, in a piece of a table, of its column's array (1).
_CELL_BYTES: Final = 9
#: Columns a row of numbers may have and still certainly fit (names of 255 characters).
_NUMERIC_COLUMNS: Final = MAX_ROW_BYTES // (4 * MAX_NAME_LEN + 2 * _CELL_BYTES)
# msgpack carries ints of 64 bits (signed or unsigned); a larger one could not be sent.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def check_name(name: object, kind: str = "metric") -> str:
    """Return ``name`` if it can name a metric (or tag, property, column).

    Raises:
        TypeError: not a str.
        InvalidNameError: empty, over 255 characters, or not encodable as UTF-8.
    """
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, not {type(name).__name__} ({name!r:.80})")
    if not 0 < len(name) <= MAX_NAME_LEN:
        raise InvalidNameError(f"{kind} name {name!r:.80} must have 1 to {MAX_NAME_LEN} characters, not {len(name)}")
    _check_utf8(name, f"{kind} name {name!r:.80}", InvalidNameError)
    return name


def check_value(name: str, value: object) -> Value:
    """Return ``value`` as a plain int, float, bool or str, or refuse it naming ``name``."""
    cls = type(value)
    if cls is float or cls is bool:
        return value  # type: ignore[return-value]  # narrowed by the exact-type test above
    if isinstance(value, float):  # float subclasses such as numpy.float64
        return float(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidValueError(f"metric {name!r}: int {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, str):
        if len(value) > MAX_STR_LEN:
            raise InvalidValueError(
                f"metric {name!r}: str value of {len(value)} characters exceeds the limit of {MAX_STR_LEN}"
            )
        _check_utf8(value, f"metric {name!r}: str value")
        return str.__str__(value)  # a plain str, also from subclasses such as numpy.str_
    item = _scalar_item(value)
    if item is not None:
        return check_value(name, item)
    raise TypeError(
        f"metric {name!r}: value of type {type(value).__name__} is not supported (use int, float, bool or str)"
    )


def check_step(name: str, step: object) -> int:
    """Return ``step`` as a non-negative int (numpy ints accepted)."""
    if isinstance(step, bool):
        raise TypeError(f"metric {name!r}: step must be an int, not bool")
    try:
        index = operator.index(step)  # type: ignore[arg-type]  # no __index__ (float, str...) raises TypeError
    except TypeError:  # so does a 0-d float array, which has __index__ but refuses
        raise TypeError(f"metric {name!r}: step must be an int, not {type(step).__name__}") from None
    if not 0 <= index <= _INT_MAX:
        raise InvalidValueError(f"metric {name!r}: step must be a non-negative 64-bit int, not {index}")
    return index


def check_values(name: str, values: object) -> list[Value]:
    """Values of ``log_list``: a list, tuple or 1-d array of scalars."""
    # No limit on their number: a long list goes out in pieces, each value fits alone.
    return [check_value(name, v) for v in _as_sequence(name, values)]


def check_row(name: str, row: Mapping[str, object]) -> dict[str, Value]:
    """Columns of ``log_row``: at least one, each a named scalar."""
    if not row:
        raise InvalidValueError(f"metric {name!r}: log_row needs at least one column, such as x=1, y=0.4")
    checked = {check_name(col, f"metric {name!r}: column"): check_value(name, v) for col, v in row.items()}
    # Only str values (or thousands of columns) can make a row big: a C-level look first.
    if len(checked) > _NUMERIC_COLUMNS or str in map(type, checked.values()):
        _check_row_size(name, checked.items(), "a row")
    return checked


def check_table(name: str, table: object) -> dict[str, list[Value]]:
    """Columns of ``log_table``: a non-empty mapping of column name to equal-length lists."""
    if not isinstance(table, Mapping):
        raise TypeError(f"metric {name!r}: log_table needs a dict of column name to list, not {type(table).__name__}")
    if not table:
        raise InvalidValueError(f"metric {name!r}: log_table needs at least one column")
    columns = {check_name(col, f"metric {name!r}: column"): check_values(name, vals) for col, vals in table.items()}
    lengths = {col: len(vals) for col, vals in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidValueError(f"metric {name!r}: table columns have different lengths {lengths}")
    # No limit on the rows: a large table goes out in pieces of rows.  A row is never
    # cut: the widest must fit, and only str cells can make one wide, so check it when the
    # longest str of each column, all in one row, would not.
    if _widest_bound(columns) > MAX_ROW_BYTES:
        rows = len(next(iter(columns.values())))
        for i in range(rows):
            _check_row_size(name, ((col, cells[i]) for col, cells in columns.items()), f"row {i}")
    return columns


def check_str_map(kind: str, mapping: object) -> dict[str, str]:
    """Tags or properties: names to str values (int, float and bool are turned into str)."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{kind}s must be a dict of name to value, not {type(mapping).__name__}")
    result: dict[str, str] = {}
    for raw_key, raw_value in mapping.items():
        key = check_name(raw_key, kind)
        if raw_value is None:
            value = ""
        elif isinstance(raw_value, int | float):  # bool included: True -> "True", as MLflow does
            value = str(raw_value)
        elif isinstance(raw_value, str):
            value = raw_value
        else:
            raise TypeError(f"{kind} {key!r}: value must be a str, not {type(raw_value).__name__}")
        if len(value) > MAX_STR_LEN:
            raise InvalidValueError(
                f"{kind} {key!r}: value of {len(value)} characters exceeds the limit of {MAX_STR_LEN}"
            )
        _check_utf8(value, f"{kind} {key!r}: value")
        result[key] = value
    return result


def check_file_name(name: object) -> str:
    """A run file name: a relative POSIX path confined to the run's folder.

    Raises:
        TypeError: not a str.
        InvalidNameError: empty, absolute, with ``..`` or empty parts, a backslash,
            a NUL or other control character, or over 1024 characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"file name must be a str, not {type(name).__name__}")
    if not 0 < len(name) <= MAX_FILE_NAME_LEN:
        raise InvalidNameError(f"file name {name!r:.80} must have 1 to {MAX_FILE_NAME_LEN} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
        raise InvalidNameError(f"file name {name!r:.80} holds a control character or backslash")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidNameError(f"file name {name!r:.80} must be a relative path without '.', '..' or empty parts")
    _check_utf8(name, f"file name {name!r:.80}", InvalidNameError)
    return posixpath.normpath(name)


def _row_bytes(cells: Iterable[tuple[str, Value]]) -> int:
    """What a row takes in an entry, at most: UTF-8 names and str values, 9 bytes a number
    (or bool), and :data:`_CELL_BYTES` per cell."""
    size = 0
    for col, value in cells:
        size += _utf8_len(col) + _CELL_BYTES + (_utf8_len(value) if isinstance(value, str) else 9)
    return size


def _check_row_size(name: str, cells: Iterable[tuple[str, Value]], what: str) -> None:
    size = _row_bytes(cells)
    if size > MAX_ROW_BYTES:
        raise InvalidValueError(
            f"metric {name!r}: {what} of {size} bytes exceeds the limit of {MAX_ROW_BYTES} bytes a row"
            f" (a row is never split, and one stream entry holds {MAX_BATCH_BYTES} bytes)"
        )


def _widest_bound(columns: Mapping[str, list[Value]]) -> int:
    """No row of ``columns`` takes more than this (each column's widest cell, together)."""
    bound = 0
    for col, cells in columns.items():
        widest = 9
        if str in map(type, cells):  # C-level: most columns hold numbers
            widest = max(_utf8_len(v) for v in cells if isinstance(v, str))
        bound += _utf8_len(col) + _CELL_BYTES + widest
    return bound


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())  # isascii() reads a flag: O(1)


def _check_utf8(text: str, what: str, error: type[ValueError] = InvalidValueError) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise error(f"{what} is not valid unicode (lone surrogate)") from None


def _scalar_item(value: object) -> object | None:
    """The Python scalar inside a numpy scalar, 0-d array or one-element tensor, else None."""
    item = getattr(value, "item", None)
    if item is None or not callable(item) or getattr(value, "ndim", 0) != 0:
        return None
    try:
        result: object = item()
    except (TypeError, ValueError):
        return None
    return result if isinstance(result, int | float | str) else None


def _as_sequence(name: str, values: object) -> list[object]:
    if isinstance(values, list | tuple):
        return list(values)
    tolist = getattr(values, "tolist", None)  # numpy arrays, torch tensors
    if callable(tolist) and getattr(values, "ndim", None) == 1:
        result = tolist()
        if isinstance(result, list):
            return result
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise TypeError(f"metric {name!r}: log_list needs a list of values, not {type(values).__name__}")
    raise TypeError(f"metric {name!r}: log_list needs a list or tuple, not {type(values).__name__}")
