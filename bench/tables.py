"""One Markdown table renderer for every benchmark: rows (dicts) and a column spec in, lines out.

    table(rows, [Column("configuration", "name", left=True), Column("req/s", "rps", ".2f")])

A column takes its value from a row key or a function of the row, and shows it with a format
spec or a function of the value; a missing value (None) shows as an em dash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

MISSING = "—"


@dataclass(frozen=True)
class Column:
    title: str
    value: str | Callable[[dict], object]  # a row key, or a function of the row
    fmt: str | Callable[[object], str] = ""  # a format spec, or a function of the value
    left: bool = False  # text left-aligned; figures right-aligned

    def cell(self, row: dict) -> str:
        value = self.value(row) if callable(self.value) else row.get(self.value)
        if value is None:
            return MISSING
        return self.fmt(value) if callable(self.fmt) else format(value, self.fmt)


def table(rows: Iterable[dict], columns: Sequence[Column]) -> list[str]:
    """The Markdown lines of a table: header, alignment row, one line per row."""
    lines = [_line(c.title for c in columns), _line("---" if c.left else "---:" for c in columns)]
    lines += [_line(c.cell(row) for c in columns) for row in rows]
    return lines


def _line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def times(value: float) -> str:
    """A ratio: 1.25 -> '1.25x'."""
    return f"{value:.2f}x"


def mib(value: float) -> str:
    return f"{value:.0f} MiB"
