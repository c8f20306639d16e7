"""The door of every ``run.log*`` call: what :mod:`runstream.validation` lets in, in what shape, and what it refuses.

No Redis here: these are the pure checks.  A refusal is a ``TypeError`` or ``ValueError``
whose message names the metric (DESIGN.md §2).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import numpy as np
import pytest

from runstream.errors import InvalidNameError, InvalidValueError
from runstream.events import MAX_LIST_LEN, MAX_NAME_LEN, MAX_STR_LEN, MAX_TABLE_CELLS
from runstream.validation import (
    MAX_FILE_NAME_LEN,
    check_file_name,
    check_name,
    check_row,
    check_step,
    check_str_map,
    check_table,
    check_value,
    check_values,
)

NAME = "val/loss λ"
#: What a refusal of a value of ``NAME`` must contain: the metric's name, quoted.
NAMED = re.escape(repr(NAME))


class TestCheckName:
    """A name is a str of 1 to 255 characters of any unicode that UTF-8 can carry."""

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("x", id="one-char"),
            pytest.param("y" * MAX_NAME_LEN, id="255-chars"),
            pytest.param("Y over X", id="spaces"),
            pytest.param("损失/λ ✓ 🚀", id="unicode"),
            pytest.param("a\tb", id="control-char"),
        ],
    )
    def test_accepts_a_valid_name_unchanged(self, name: str) -> None:
        accepted = check_name(name)

        assert name == accepted

    @pytest.mark.parametrize(
        ("name", "text"),
        [
            pytest.param("", "''", id="empty"),
            pytest.param("long_" + "x" * (MAX_NAME_LEN + 1 - 5), "'long_xxx", id="256-chars"),
            pytest.param("\ud800", re.escape(repr("\ud800")), id="lone-surrogate"),
            pytest.param("ok\udfffok", re.escape("ok\\udfffok"), id="surrogate-inside"),
        ],
    )
    def test_refuses_a_bad_str_with_invalid_name_error(self, name: str, text: str) -> None:
        with pytest.raises(InvalidNameError, match=text):
            check_name(name)

    @pytest.mark.parametrize(
        ("name", "text"),
        [
            pytest.param(42, "not int", id="int"),
            pytest.param(None, "not NoneType", id="none"),
            pytest.param(b"loss", "not bytes", id="bytes"),
            pytest.param(["loss"], "not list", id="list"),
        ],
    )
    def test_refuses_a_non_str_with_type_error(self, name: object, text: str) -> None:
        with pytest.raises(TypeError, match=text):
            check_name(name)

    def test_says_what_kind_of_name_was_refused(self) -> None:
        with pytest.raises(InvalidNameError, match=r"^tag name ''"):
            check_name("", "tag")

    def test_invalid_name_error_is_a_value_error(self) -> None:
        assert issubclass(InvalidNameError, ValueError)


class TestCheckValue:
    """Values are int, float (NaN and inf kept), bool or str, and come back as the plain Python type."""

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(0, id="zero"),
            pytest.param(-7, id="negative-int"),
            pytest.param(2**64 - 1, id="max-uint64"),
            pytest.param(-(2**63), id="min-int64"),
            pytest.param(0.25, id="float"),
            pytest.param(-0.0, id="negative-zero"),
            pytest.param(math.inf, id="inf"),
            pytest.param(-math.inf, id="minus-inf"),
            pytest.param(True, id="true"),
            pytest.param(False, id="false"),
            pytest.param("", id="empty-str"),
            pytest.param("good 👍", id="unicode-str"),
            pytest.param("s" * MAX_STR_LEN, id="longest-str"),
        ],
    )
    def test_returns_a_plain_value_with_its_type(self, value: int | float | bool | str) -> None:
        accepted = check_value(NAME, value)

        assert (type(value), value) == (type(accepted), accepted)

    def test_keeps_nan(self) -> None:
        accepted = check_value(NAME, math.nan)

        assert float is type(accepted)
        assert isinstance(accepted, float)
        assert math.isnan(accepted)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(np.float32(0.5), 0.5, id="float32"),
            pytest.param(np.float64(0.25), 0.25, id="float64"),
            pytest.param(np.float16(-2.0), -2.0, id="float16"),
            pytest.param(np.int64(-3), -3, id="int64"),
            pytest.param(np.int8(5), 5, id="int8"),
            pytest.param(np.uint64(2**64 - 1), 2**64 - 1, id="uint64-max"),
            pytest.param(np.bool_(True), True, id="bool_-true"),
            pytest.param(np.bool_(False), False, id="bool_-false"),
            pytest.param(np.array(2.5), 2.5, id="0d-float-array"),
            pytest.param(np.array(4, dtype=np.int32), 4, id="0d-int-array"),
            pytest.param(np.array(True), True, id="0d-bool-array"),
            pytest.param(np.float32(np.inf), math.inf, id="float32-inf"),
            pytest.param(np.str_("adam"), "adam", id="str_"),
        ],
    )
    def test_turns_a_numpy_scalar_into_the_python_value(
        self, value: object, expected: int | float | bool | str
    ) -> None:
        accepted = check_value(NAME, value)

        assert (type(expected), expected) == (type(accepted), accepted)

    def test_turns_a_numpy_nan_into_a_python_nan(self) -> None:
        accepted = check_value(NAME, np.float32("nan"))

        assert float is type(accepted)
        assert isinstance(accepted, float)
        assert math.isnan(accepted)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param([1.0], id="list"),
            pytest.param((1.0,), id="tuple"),
            pytest.param({"a": 1.0}, id="dict"),
            pytest.param({1.0}, id="set"),
            pytest.param(None, id="none"),
            pytest.param(b"1.0", id="bytes"),
            pytest.param(Decimal("1.5"), id="decimal"),
            pytest.param(1 + 2j, id="complex"),
            pytest.param(object(), id="object"),
            pytest.param(np.array([1.0, 2.0]), id="1d-array"),
            pytest.param(np.array([1.0]), id="1-element-1d-array"),
            pytest.param(np.complex64(1), id="numpy-complex"),
            pytest.param(np.datetime64("2024-01-01"), id="numpy-datetime"),
        ],
    )
    def test_refuses_an_unsupported_type_naming_the_metric(self, value: object) -> None:
        with pytest.raises(TypeError, match=NAMED):
            check_value(NAME, value)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(2**64, id="2**64"),
            pytest.param(-(2**63) - 1, id="below-int64"),
            pytest.param(10**100, id="googol"),
            pytest.param(np.array(2**64 - 1, dtype=object) * 2, id="object-array-big-int"),
            pytest.param("s" * (MAX_STR_LEN + 1), id="str-too-long"),
            pytest.param("bad \ud800", id="lone-surrogate"),
        ],
    )
    def test_refuses_an_out_of_range_value_naming_the_metric(self, value: object) -> None:
        with pytest.raises(InvalidValueError, match=NAMED):
            check_value(NAME, value)


class TestCheckStep:
    """A step is a non-negative int of at most 64 bits; numpy ints pass, bool and float do not."""

    @pytest.mark.parametrize(
        ("step", "expected"),
        [
            pytest.param(0, 0, id="zero"),
            pytest.param(12, 12, id="int"),
            pytest.param(2**64 - 1, 2**64 - 1, id="max"),
            pytest.param(np.int64(3), 3, id="numpy-int64"),
            pytest.param(np.uint8(200), 200, id="numpy-uint8"),
            pytest.param(np.array(9), 9, id="0d-int-array"),
        ],
    )
    def test_returns_a_plain_int(self, step: object, expected: int) -> None:
        accepted = check_step(NAME, step)

        assert (int, expected) == (type(accepted), accepted)

    @pytest.mark.parametrize(
        "step",
        [
            pytest.param(True, id="true"),
            pytest.param(False, id="false"),
            pytest.param(1.0, id="float"),
            pytest.param(math.nan, id="nan"),
            pytest.param("3", id="str"),
            pytest.param(None, id="none"),
            pytest.param(np.float64(2.0), id="numpy-float"),
            pytest.param(np.bool_(True), id="numpy-bool"),
            pytest.param(np.array(1.5), id="0d-float-array"),
        ],
    )
    def test_refuses_a_non_int_with_type_error_naming_the_metric(self, step: object) -> None:
        with pytest.raises(TypeError, match=NAMED):
            check_step(NAME, step)

    @pytest.mark.parametrize(
        "step",
        [
            pytest.param(-1, id="minus-one"),
            pytest.param(np.int64(-5), id="numpy-negative"),
            pytest.param(2**64, id="2**64"),
        ],
    )
    def test_refuses_a_step_out_of_range_naming_the_metric(self, step: object) -> None:
        with pytest.raises(InvalidValueError, match=NAMED):
            check_step(NAME, step)


class TestCheckValues:
    """``log_list`` takes a list, tuple or 1-d array of valid values and returns a plain list."""

    def test_accepts_a_list_of_mixed_values(self) -> None:
        values = [1, 0.5, True, "a"]

        accepted = check_values(NAME, values)

        assert [(type(v), v) for v in values] == [(type(v), v) for v in accepted]

    def test_accepts_a_tuple(self) -> None:
        accepted = check_values(NAME, (0.6, 0.7))

        assert [0.6, 0.7] == accepted

    def test_accepts_an_empty_list(self) -> None:
        accepted = check_values(NAME, [])

        assert [] == accepted

    def test_accepts_a_list_of_any_length(self) -> None:
        values = [0.5] * (2 * MAX_LIST_LEN)  # sent in pieces: no limit but memory

        accepted = check_values(NAME, values)

        assert values == accepted

    @pytest.mark.parametrize(
        ("array", "expected"),
        [
            pytest.param(np.array([0.5, 1.5], dtype=np.float32), [0.5, 1.5], id="float32"),
            pytest.param(np.array([1, 2, 3], dtype=np.int64), [1, 2, 3], id="int64"),
            pytest.param(np.array([True, False]), [True, False], id="bool"),
            pytest.param(np.arange(3), [0, 1, 2], id="arange"),
        ],
    )
    def test_turns_a_1d_array_into_a_list_of_python_values(self, array: object, expected: list[object]) -> None:
        accepted = check_values(NAME, array)

        assert [(type(v), v) for v in expected] == [(type(v), v) for v in accepted]

    def test_turns_numpy_scalars_in_a_list_into_python_values(self) -> None:
        accepted = check_values(NAME, [np.float32(0.5), np.int64(2), np.bool_(True)])

        assert [(float, 0.5), (int, 2), (bool, True)] == [(type(v), v) for v in accepted]

    def test_keeps_nan_and_inf(self) -> None:
        accepted = check_values(NAME, np.array([np.nan, np.inf, -np.inf]))

        assert isinstance(accepted[0], float)
        assert math.isnan(accepted[0])
        assert [math.inf, -math.inf] == accepted[1:]

    @pytest.mark.parametrize(
        "values",
        [
            pytest.param("0.1, 0.2", id="str"),
            pytest.param(b"\x01\x02", id="bytes"),
            pytest.param({"a": 1}, id="dict"),
            pytest.param(0.5, id="scalar"),
            pytest.param(None, id="none"),
            pytest.param((x for x in [1, 2]), id="generator"),
            pytest.param(np.zeros((2, 2)), id="2d-array"),
            pytest.param(np.float64(1.0), id="numpy-scalar"),
            pytest.param([1, [2]], id="nested-list"),
            pytest.param([1, None], id="none-element"),
            pytest.param([1, {"a": 1}], id="dict-element"),
        ],
    )
    def test_refuses_what_is_not_a_flat_list_of_values_naming_the_metric(self, values: object) -> None:
        with pytest.raises(TypeError, match=NAMED):
            check_values(NAME, values)

    @pytest.mark.parametrize(
        "values",
        [
            pytest.param([1, 2**64], id="big-int-element"),
            pytest.param(["ok", "\udcff"], id="surrogate-element"),
        ],
    )
    def test_refuses_out_of_range_values_naming_the_metric(self, values: object) -> None:
        with pytest.raises(InvalidValueError, match=NAMED):
            check_values(NAME, values)


class TestCheckRow:
    """``log_row`` takes at least one column, each a valid name with a valid value."""

    def test_returns_the_row_with_python_values(self) -> None:
        accepted = check_row(NAME, {"x": 1, "y": np.float32(0.5), "ok": True, "note": "n"})

        assert {"x": (int, 1), "y": (float, 0.5), "ok": (bool, True), "note": (str, "n")} == {
            k: (type(v), v) for k, v in accepted.items()
        }

    def test_refuses_an_empty_row_naming_the_metric(self) -> None:
        with pytest.raises(InvalidValueError, match=NAMED):
            check_row(NAME, {})

    @pytest.mark.parametrize(
        "row",
        [
            pytest.param({"": 1}, id="empty-column-name"),
            pytest.param({"c" * (MAX_NAME_LEN + 1): 1}, id="long-column-name"),
            pytest.param({"\ud800": 1}, id="surrogate-column-name"),
            pytest.param({"x": 2**64}, id="big-int"),
        ],
    )
    def test_refuses_a_bad_column_naming_the_metric(self, row: dict[str, object]) -> None:
        with pytest.raises(ValueError, match=NAMED):
            check_row(NAME, row)

    @pytest.mark.parametrize(
        "row",
        [
            pytest.param({"x": [1]}, id="list-value"),
            pytest.param({"x": None}, id="none-value"),
            pytest.param({1: 1}, id="int-column-name"),
        ],
    )
    def test_refuses_a_column_of_the_wrong_type_naming_the_metric(self, row: dict[str, object]) -> None:
        with pytest.raises(TypeError, match=NAMED):
            check_row(NAME, row)


class TestCheckTable:
    """``log_table`` takes a non-empty dict of column name to lists of one length."""

    def test_returns_the_columns_as_lists_of_python_values(self) -> None:
        accepted = check_table(NAME, {"angle": (0, 1), "sine": np.array([0.0, 0.84], dtype=np.float32)})

        assert {"angle": [(int, 0), (int, 1)], "sine": [(float, 0.0), (float, float(np.float32(0.84)))]} == {
            col: [(type(v), v) for v in values] for col, values in accepted.items()
        }

    def test_accepts_a_table_of_any_number_of_rows(self) -> None:
        rows = 2 * MAX_TABLE_CELLS  # sent in pieces of rows: no limit but memory

        accepted = check_table(NAME, {"a": [0] * rows, "b": [1] * rows})

        assert [rows, rows] == [len(col) for col in accepted.values()]

    @pytest.mark.parametrize(
        "table",
        [
            pytest.param({"angle": [0, 1], "sine": [0.0]}, id="ragged"),
            pytest.param({"a": [], "b": [1]}, id="ragged-empty"),
            pytest.param({}, id="no-columns"),
            pytest.param({"": [1]}, id="empty-column-name"),
            pytest.param({"a": [2**64]}, id="big-int"),
            pytest.param({f"c{i}": ["ok", "w" * MAX_STR_LEN] for i in range(16)}, id="a-row-wider-than-an-entry"),
        ],
    )
    def test_refuses_a_malformed_table_naming_the_metric(self, table: object) -> None:
        with pytest.raises(ValueError, match=NAMED):
            check_table(NAME, table)

    @pytest.mark.parametrize(
        "table",
        [
            pytest.param([[0, 1], [0.0, 0.84]], id="list-of-lists"),
            pytest.param("angle,sine", id="str"),
            pytest.param(None, id="none"),
            pytest.param(np.zeros((2, 2)), id="2d-array"),
            pytest.param({"a": 1}, id="scalar-column"),
            pytest.param({"a": "abc"}, id="str-column"),
            pytest.param({"a": [[1]]}, id="nested-cell"),
            pytest.param({1: [1]}, id="int-column-name"),
        ],
    )
    def test_refuses_a_table_of_the_wrong_type_naming_the_metric(self, table: object) -> None:
        with pytest.raises(TypeError, match=NAMED):
            check_table(NAME, table)


class TestCheckStrMap:
    """Tags and properties map names to str; numbers become str, None becomes "", anything else is refused."""

    def test_returns_str_values(self) -> None:
        accepted = check_str_map("tag", {"a": "x", "b": 1, "c": 0.5, "d": True, "e": None, "标签": "值"})

        assert {"a": "x", "b": "1", "c": "0.5", "d": "True", "e": "", "标签": "值"} == accepted

    def test_accepts_an_empty_map(self) -> None:
        accepted = check_str_map("property", {})

        assert {} == accepted

    @pytest.mark.parametrize(
        ("mapping", "text"),
        [
            pytest.param({"selected": {"a": 1}}, "tag 'selected'", id="dict-value"),
            pytest.param({"selected": [1]}, "tag 'selected'", id="list-value"),
            pytest.param({"selected": b"yes"}, "tag 'selected'", id="bytes-value"),
            pytest.param({1: "yes"}, "tag name", id="int-key"),
            pytest.param([("selected", "yes")], "tags must be a dict", id="not-a-dict"),
        ],
    )
    def test_refuses_the_wrong_type(self, mapping: object, text: str) -> None:
        with pytest.raises(TypeError, match=text):
            check_str_map("tag", mapping)

    @pytest.mark.parametrize(
        ("mapping", "text"),
        [
            pytest.param({"": "x"}, "tag name ''", id="empty-key"),
            pytest.param({"k" * (MAX_NAME_LEN + 1): "x"}, "tag name 'kkk", id="long-key"),
            pytest.param({"selected": "v" * (MAX_STR_LEN + 1)}, "tag 'selected'", id="long-value"),
            pytest.param({"selected": "\ud800"}, "tag 'selected'", id="surrogate-value"),
        ],
    )
    def test_refuses_a_bad_name_or_value(self, mapping: object, text: str) -> None:
        with pytest.raises(ValueError, match=text):
            check_str_map("tag", mapping)


class TestCheckFileName:
    """A run file name is a relative POSIX path that stays inside the run's folder."""

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("outputs/model.pkl", id="nested"),
            pytest.param("model.pkl", id="flat"),
            pytest.param("模型/权重 ✓.bin", id="unicode"),
            pytest.param("outputs/.hidden", id="dotfile"),
            pytest.param("a..b/c...d", id="dots-inside-parts"),
            pytest.param("f" * MAX_FILE_NAME_LEN, id="longest"),
        ],
    )
    def test_accepts_a_relative_path_unchanged(self, name: str) -> None:
        accepted = check_file_name(name)

        assert name == accepted

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("", id="empty"),
            pytest.param("/etc/passwd", id="absolute"),
            pytest.param("//server/share", id="double-slash-absolute"),
            pytest.param("..", id="dotdot"),
            pytest.param("../x", id="leading-dotdot"),
            pytest.param("a/../b", id="inner-dotdot"),
            pytest.param("a/..", id="trailing-dotdot"),
            pytest.param("./a", id="dot"),
            pytest.param("a//b", id="empty-part"),
            pytest.param("a/", id="trailing-slash"),
            pytest.param("a\x00b", id="nul"),
            pytest.param("a\nb", id="newline"),
            pytest.param("a\x7fb", id="del"),
            pytest.param("..\\x", id="backslash"),
            pytest.param("a\\b", id="backslash-inside"),
            pytest.param("f" * (MAX_FILE_NAME_LEN + 1), id="too-long"),
            pytest.param("x\ud800", id="lone-surrogate"),
        ],
    )
    def test_refuses_a_path_that_could_leave_the_run_folder(self, name: str) -> None:
        with pytest.raises(InvalidNameError, match=re.escape(repr(name)[:20])):
            check_file_name(name)

    @pytest.mark.parametrize("name", [None, b"model.pkl", 1])
    def test_refuses_a_non_str_with_type_error(self, name: object) -> None:
        with pytest.raises(TypeError, match="file name must be a str"):
            check_file_name(name)
