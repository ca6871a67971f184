"""The rich consoles the command line prints with."""

from __future__ import annotations

from rich.console import Console

# Lines written to a pipe or a file are never wrapped: whatever reads them gets each answer,
# fact and table row whole. A table is only as wide as its content, so this width is a bound.
PIPE_WIDTH = 10_000


def make_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that wraps to the terminal's width, and not at all when
    the stream is not a terminal."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.soft_wrap = True
        console.width = PIPE_WIDTH
    return console
