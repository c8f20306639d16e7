"""The door: every check a logged value passes before it may enter the buffer.

Bad input is refused here, at the call, with a ``TypeError`` or ``ValueError`` that
names the metric; nothing refused ever reaches the stream or the logger thread.
numpy and torch scalars (anything with a 0-d ``.item()``) are turned into the
Python value they hold, so a series logged as ``np.float32`` reads back as float.
"""

from __future__ import annotations

import operator
import posixpath
from collections.abc import Iterable, Mapping
from typing import Final

from runstream.errors import InvalidNameError, InvalidValueError
from runstream.events import MAX_LIST_LEN, MAX_NAME_LEN, MAX_STR_LEN, MAX_TABLE_CELLS, Value

__all__ = [
    "MAX_FILE_NAME_LEN",
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
            raise InvalidValueError(f"metric {name!r}: str value of {len(value)} characters exceeds {MAX_STR_LEN}")
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
    seq = _as_sequence(name, values)
    if len(seq) > MAX_LIST_LEN:
        raise InvalidValueError(f"metric {name!r}: {len(seq)} values exceed the limit of {MAX_LIST_LEN}")
    return [check_value(name, v) for v in seq]


def check_row(name: str, row: Mapping[str, object]) -> dict[str, Value]:
    """Columns of ``log_row``: at least one, each a named scalar."""
    if not row:
        raise InvalidValueError(f"metric {name!r}: log_row needs at least one column, such as x=1, y=0.4")
    return {check_name(col, f"metric {name!r}: column"): check_value(name, v) for col, v in row.items()}


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
    if sum(lengths.values()) > MAX_TABLE_CELLS:
        raise InvalidValueError(f"metric {name!r}: table exceeds {MAX_TABLE_CELLS} cells")
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
            raise InvalidValueError(f"{kind} {key!r}: value of {len(value)} characters exceeds {MAX_STR_LEN}")
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
