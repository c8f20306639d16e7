"""The benchmark suite's table: one row per measure, medians with min-max and ratios.

A row holds what runstream measured and, beside it, what it is compared with (the
floor: a bare append, raw Redis; or a peer: MLflow, W&B), each a list of the figures
of every repeat.  The table is printed and written as markdown (the README links it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

__all__ = ["Row", "markdown", "replace_section", "text"]


@dataclass
class Row:
    """One measure: ``values`` per repeat in ``unit``; ``against`` label -> values per repeat.

    Ratios are runstream's median over the other's: for a cost (``lower_is_better``:
    ns per call, ms) "0.01x the cost of", for a rate (points/s) "3x the rate of".
    """

    section: str
    name: str
    unit: str
    values: list[float]
    against: dict[str, list[float]] = field(default_factory=dict)
    lower_is_better: bool = True
    target: str = ""
    shown: str = ""  # instead of median (min-max): e.g. "p50 / p99 / max" of one set of samples
    met: bool | None = None  # the target met (None: no target)
    profile: str = ""  # what bench.profiles runs to show where the time goes when the target is missed
    note: str = ""  # said under the section: what bounds its measures, how to read them

    def median(self) -> float:
        return statistics.median(self.values)

    def ratio(self, label: str) -> float:
        other = statistics.median(self.against[label])
        return self.median() / other if other else float("nan")


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _spread(values: list[float]) -> str:
    return f"{_number(statistics.median(values))} ({_number(min(values))}-{_number(max(values))})"


def _times(ratio: float) -> str:
    """A ratio as "2.10x", or "1/1,730x" when far below one (easier to read than 0.000578x)."""
    return f"1/{1 / ratio:,.0f}x" if 0 < ratio < 0.1 else f"{_number(ratio)}x"


def _comparisons(row: Row) -> str:
    reading = "the cost of" if row.lower_is_better else "the rate of"
    return "; ".join(
        f"{_times(row.ratio(label))} {reading} {label} [{_spread(values)}]" for label, values in row.against.items()
    )


def text(rows: list[Row]) -> str:
    """The table for a terminal."""
    lines, section = [], ""
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(f"\n{section}")
        target = f"   target {row.target}{'' if row.met is not False else '  MISSED'}" if row.target else ""
        lines.append(f"  {row.name:<60} {row.shown or _spread(row.values):>30} {row.unit:<9}{target}")
        if row.against:
            lines.append(f"  {'':<60} {_comparisons(row)}")
        if row.note:
            lines.append(f"  {row.note}")
    return "\n".join(lines)


def _table_line(row: Row) -> str:
    measured = f"{row.shown or _spread(row.values)} {row.unit}"
    target = f"{row.target}{' (missed)' if row.met is False else ''}" if row.target else "-"
    return f"| {row.section} | {row.name} | {measured} | {_comparisons(row) or '-'} | {target} |"


def _note_line(row: Row) -> str:
    return f"- {row.section}: {row.note}"


def markdown(rows: list[Row], header: str) -> str:
    """The table as markdown, under ``header`` (machine, date, command); the sections' notes below it."""
    lines = [
        header,
        "",
        "| section | measure | runstream: median (min-max) | compared with | target |",
        "|---|---|---|---|---|",
        *(_table_line(row) for row in rows),
    ]
    notes = [_note_line(row) for row in rows if row.note]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def replace_section(document: str, rows: list[Row]) -> str:
    """``document`` (a :func:`markdown` table) with the rows and notes of ``rows``' section replaced by these.

    A section is known by its title up to the first colon ("7. Redis Cluster"), so that
    rows measured at other sizes replace it too; a section not yet there is added last.
    """
    key = rows[0].section.partition(":")[0]
    lines = [line for line in document.splitlines() if not line.startswith((f"| {key}", f"- {key}"))]
    end = max(i for i, line in enumerate(lines) if line.startswith("|")) + 1
    rest = lines[end:]
    while rest and not rest[-1].strip():
        rest.pop()
    notes = [_note_line(row) for row in rows if row.note]
    if notes and not rest:
        rest = [""]
    return "\n".join(lines[:end] + [_table_line(row) for row in rows] + rest + notes) + "\n"
