"""Markdown tables: built once as (title, columns, rows, note), rendered to the terminal and to
Markdown from the same rows, so the two never disagree. Numeric columns are right-aligned."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?(x|%|M)?( \([\d.]+x\))?$")
_NO_NUMBER = ("-", "not run", "not measured")  # cells that may stand in a numeric column


def cell(value: float | None, spec: str) -> str:
    """A number for a table cell: "-" when there is none, "inf" for an infinite one."""
    return "-" if value is None else "inf" if value == float("inf") else format(value, spec)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def numeric_columns(self) -> list[int]:
        """Columns whose cells are all numbers (or "-" / "not run"): right-aligned."""
        return [
            i
            for i in range(len(self.columns))
            if self.rows and all(_NUMBER.match(row[i]) or row[i] in _NO_NUMBER for row in self.rows)
        ]

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        right = set(self.numeric_columns())
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(self.columns))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)
