"""Tables for benchmark results: rich on the terminal, Markdown for the README."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kgllm.cli.output import make_console


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1): the smallest value at least ``q`` of the values
    reach, so p95 of 20 timings is the 19th, not the slowest. 0.0 for no values."""
    if not values:
        return 0.0
    return sorted(values)[max(math.ceil(q * len(values)), 1) - 1]


def print_table(rows: list[dict[str, str]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("set", "mode", "store", "operation") else "right")
    for row in rows:
        table.add_row(*row.values())
    (console or make_console()).print(table)


def markdown(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row[c] for c in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def save_markdown(rows: list[dict[str, str]], path: Path, title: str, command: str, notes: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"## {title}\n\n`{command}`\n\n{markdown(rows)}" + (f"\n{notes}\n" if notes else ""), encoding="utf-8"
    )
    return path
