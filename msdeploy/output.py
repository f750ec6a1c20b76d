"""Terminal output helpers shared by the commands (rich tables on stdout, messages on stderr)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (CI logs, files) gets a wide fixed width: rich's 80-column default would cut numbers.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, log_path=False)  # progress lines read as a tool's, not a debug log


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Sequence[int] = (),
    caption: str | None = None,
) -> None:
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    console.print(table)


def print_markdown_table(table) -> None:
    """A runtime.tables.Table in the terminal: the same rows its Markdown holds, numbers right-aligned."""
    print_table(table.title, table.columns, table.rows, right=table.numeric_columns(), caption=table.note or None)


@contextlib.contextmanager
def progress_status(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr; the yielded callback updates it and logs each step with a timestamp."""
    with err_console.status(label) as status:

        def report(message: str) -> None:
            status.update(message)
            err_console.log(message)

        yield report


@contextlib.contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; the yielded callback sets (completed, optional status text, and
    optionally a new total when the work turns out longer)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(label, total=total, status="")

        def update(completed: int, status: str = "", total: int | None = None) -> None:
            progress.update(task, completed=completed, status=status, total=total)

        yield update
