"""The search filter and sort syntax over runs: MLflow's ``search_runs`` syntax, plus min/max.

A filter is clauses joined by ``and`` (any case), each ``<what> <op> <value>``:

    metrics.loss < 0.1                the metric's last value
    min(metrics.loss) <= 0.05         its least (max(...): its greatest; last(...))
    params.lr = 0.01                  a property (``params`` and ``properties`` are one)
    tags.model = 'cnn'                a tag; ``tags.model != 'cnn'`` holds for runs without it too
    attributes.status = 'Completed'   status, name (display name), experiment, run_id,
                                      parent_id, created, started, ended, duration (s)

``<op>`` is one of ``= == != < <= > >=`` (``LIKE`` and ``ILIKE`` for text, with ``%`` and
``_``); a value is a number or a quoted string.  ``<what> IS NULL`` and ``IS NOT NULL``
ask whether a run has it at all.  A name with other characters goes in
backticks: ``metrics.`val/loss` < 1``.  Numbers compare as numbers (a parameter
logged as the text "0.01" equals 0.01); a run without the metric, tag or parameter
named matches no clause about it but ``!=``.

A sort key is ``<what> [ASC|DESC]`` (``metrics.loss DESC``, ``attributes.created``);
runs without the value sort last.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final

__all__ = ["Clause", "FilterError", "SortKey", "matcher", "parse_filter", "parse_order_by"]

ENTITIES: Final = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "properties": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
ATTRIBUTES: Final = frozenset(
    {"status", "name", "experiment", "run_id", "parent_id", "created", "started", "ended", "duration"}
)
_AGGREGATES: Final = frozenset({"last", "min", "max"})
_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | '(?P<single>(?:[^'\\]|\\.)*)'
      | "(?P<double>(?:[^"\\]|\\.)*)"
      | `(?P<quoted>[^`]*)`
      | (?P<op><=|>=|!=|==|=|<|>)
      | (?P<punct>[().,])
      | (?P<word>[A-Za-z_][A-Za-z0-9_\-]*)
    )""",
    re.VERBOSE,
)


_NONE: Final[Mapping[str, Any]] = {}


class FilterError(ValueError):
    """A filter or sort key that does not parse: the message says where and what was expected."""


@dataclass(frozen=True, slots=True)
class Field:
    """What a clause or a sort key reads of a run: (entity, key, aggregate)."""

    entity: str
    key: str
    aggregate: str = "last"

    def of(self, summary: Mapping[str, Any]) -> Any:
        """The value in a run's summary (:mod:`.summaries`), or None."""
        if self.entity == "metrics":
            stats = summary.get("metrics", {}).get(self.key)
            return None if stats is None else stats[self.aggregate]
        if self.entity == "attributes":
            return summary.get(self.key)
        return summary.get(self.entity, {}).get(self.key)


@dataclass(frozen=True, slots=True)
class Clause:
    field: Field
    op: str
    value: float | str
    #: The clause made into one test, once (a search runs it on every run: 10,000 of them).
    _test: Callable[[Mapping[str, Any]], bool] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_test", _test_of(self))

    def holds(self, summary: Mapping[str, Any]) -> bool:
        return self._test(summary)


def _reader_of(field: Field) -> Callable[[Mapping[str, Any]], Any]:
    """:meth:`Field.of`, its branch taken once."""
    entity, key, aggregate = field.entity, field.key, field.aggregate
    if entity == "metrics":

        def metric(summary: Mapping[str, Any]) -> Any:
            stats = summary.get("metrics", _NONE).get(key)
            return None if stats is None else stats[aggregate]

        return metric
    if entity == "attributes":
        return lambda summary: summary.get(key)
    return lambda summary: summary.get(entity, _NONE).get(key)


def matcher(clauses: list[Clause]) -> Callable[[Mapping[str, Any]], bool]:
    """One test that holds for a summary where every clause does."""
    tests = [clause._test for clause in clauses]
    if not tests:
        return lambda summary: True
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:  # the usual search: a metric and a tag
        first, second = tests
        return lambda summary: first(summary) and second(summary)
    return lambda summary: all(test(summary) for test in tests)


def _test_of(clause: Clause) -> Callable[[Mapping[str, Any]], bool]:
    """What :meth:`Clause.holds` asks, with what can be settled once settled: the field's
    reader, and a number to compare a run's number with straight away."""
    of, op, value = _reader_of(clause.field), clause.op, clause.value
    if op in ("is null", "is not null"):
        null = op == "is null"
        return lambda summary: (of(summary) is None) == null
    compare, quick, number = _COMPARE[op], _NUMERIC.get(op), _number(value)
    absent = op == "!="
    if quick is None or number is None or math.isnan(number):

        def test(summary: Mapping[str, Any]) -> bool:
            found = of(summary)
            return absent if found is None else compare(found, value)

        return test

    def numeric(summary: Mapping[str, Any]) -> bool:
        found = of(summary)
        if found is None:
            return absent
        if type(found) is float or type(found) is int:  # not bool, not text: compare's path for them
            found = float(found)
            return found == found and quick(found, number)  # NaN matches nothing
        return compare(found, value)

    return numeric


@dataclass(frozen=True, slots=True)
class SortKey:
    field: Field
    descending: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(test: Callable[[Any, Any], bool]) -> Callable[[Any, float | str], bool]:
    """``test`` on numbers when both sides are numbers (text that reads as one included), else on text."""

    def compare(found: Any, value: float | str) -> bool:
        a, b = _number(found), _number(value)
        if a is not None and b is not None:
            return not (math.isnan(a) or math.isnan(b)) and test(a, b)
        return test(str(found), str(value))

    return compare


def _like(case: bool) -> Callable[[Any, float | str], bool]:
    def like(found: Any, value: float | str) -> bool:
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(value))
        return re.fullmatch(pattern, str(found), 0 if case else re.IGNORECASE) is not None

    return like


_NUMERIC: Final[dict[str, Callable[[float, float], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_COMPARE: Final[dict[str, Callable[[Any, float | str], bool]]] = {
    "=": _compare(lambda a, b: a == b),
    "!=": _compare(lambda a, b: a != b),
    "<": _compare(lambda a, b: a < b),
    "<=": _compare(lambda a, b: a <= b),
    ">": _compare(lambda a, b: a > b),
    ">=": _compare(lambda a, b: a >= b),
    "like": _like(case=True),
    "ilike": _like(case=False),
}


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str, int]] = []
        at = 0
        while at < len(text):
            if text[at:].strip() == "":
                break
            match = _TOKEN.match(text, at)
            if match is None or match.end() == at:
                raise FilterError(f"cannot read {text[at:].strip()[:20]!r} at character {at + 1} of {text!r}")
            kind = match.lastgroup or ""
            value, start = match.group(kind), match.start(kind)
            if kind in ("single", "double"):
                kind, value = "string", re.sub(r"\\(.)", r"\1", value)
            self.items.append((kind, value, start))
            at = match.end()
        self.at = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.at] if self.at < len(self.items) else None

    def take(self, what: str) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise FilterError(f"{what} expected at the end of {self.text!r}")
        self.at += 1
        return token

    def expect(self, kind: str, value: str | None, what: str) -> None:
        token = self.take(what)
        if token[0] != kind or (value is not None and token[1].lower() != value):
            raise FilterError(f"{what} expected at character {token[2] + 1} of {self.text!r}, not {token[1]!r}")


def _field(tokens: _Tokens) -> Field:
    kind, word, at = tokens.take("a metric, param, tag or attribute")
    aggregate = "last"
    if kind == "word" and word.lower() in _AGGREGATES and (nxt := tokens.peek()) is not None and nxt[1] == "(":
        tokens.take("(")
        inner = _field(tokens)
        tokens.expect("punct", ")", "')'")
        if inner.entity != "metrics":
            raise FilterError(f"{word}(...) applies to metrics only, not {inner.entity} (character {at + 1})")
        return Field("metrics", inner.key, word.lower())
    entity = ENTITIES.get(word.lower()) if kind == "word" else None
    if entity is None:
        raise FilterError(
            f"metrics., params., tags. or attributes. expected at character {at + 1} of {tokens.text!r}, not {word!r}"
        )
    tokens.expect("punct", ".", f"'.' after {word!r}")
    key_kind, key, key_at = tokens.take(f"a name after {word}.")
    if key_kind not in ("word", "quoted"):
        raise FilterError(f"a name expected after {word}. at character {key_at + 1} (use `backticks` for others)")
    if entity == "attributes":
        key = {"start_time": "started", "end_time": "ended", "run_name": "name", "id": "run_id"}.get(key, key)
        if key not in ATTRIBUTES:
            raise FilterError(f"no attribute {key!r}: one of {', '.join(sorted(ATTRIBUTES))}")
    return Field(entity, key, aggregate)


def parse_filter(text: str | None) -> list[Clause]:
    """The clauses of ``text`` (all must hold); [] for an empty filter.

    Raises:
        FilterError: it does not parse.
    """
    if not text or not text.strip():
        return []
    tokens, clauses = _Tokens(text), []
    while True:
        field = _field(tokens)
        kind, op, at = tokens.take("a comparison")
        if kind == "word" and op.lower() == "is":
            clauses.append(_null_test(tokens, field))
        elif kind == "op" or (kind == "word" and op.lower() in ("like", "ilike")):
            clauses.append(_compared(tokens, field, op.lower()))
        else:
            raise FilterError(f"a comparison (= != < <= > >= LIKE IS) expected at character {at + 1}, not {op!r}")
        if tokens.peek() is None:
            return clauses
        tokens.expect("word", "and", "'and'")


def _null_test(tokens: _Tokens, field: Field) -> Clause:
    """``IS NULL`` or ``IS NOT NULL``, after the IS."""
    negated = (token := tokens.peek()) is not None and token[1].lower() == "not"
    if negated:
        tokens.take("NOT")
    tokens.expect("word", "null", "NULL after IS [NOT]")
    return Clause(field, "is not null" if negated else "is null", "")


def _compared(tokens: _Tokens, field: Field, op: str) -> Clause:
    value_kind, value, value_at = tokens.take("a value")
    if value_kind == "number":
        return Clause(field, "=" if op == "==" else op, float(value))
    if value_kind == "string":
        return Clause(field, "=" if op == "==" else op, value)
    raise FilterError(f"a number or a 'quoted' value expected at character {value_at + 1}, not {value!r}")


def parse_order_by(keys: list[str] | str | None) -> list[SortKey]:
    """Sort keys from ``["metrics.loss ASC", ...]`` (or one string, keys split by commas)."""
    if not keys:
        return []
    items = [part for key in ([keys] if isinstance(keys, str) else keys) for part in key.split(",") if part.strip()]
    found = []
    for item in items:
        tokens = _Tokens(item)
        field = _field(tokens)
        descending = False
        if (token := tokens.peek()) is not None:
            direction = tokens.take("ASC or DESC")[1].lower()
            if direction not in ("asc", "desc") or tokens.peek() is not None:
                raise FilterError(f"ASC or DESC expected after the sort key in {item!r}, not {token[1]!r}")
            descending = direction == "desc"
        found.append(SortKey(field, descending))
    return found
