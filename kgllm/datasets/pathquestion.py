"""PathQuestion (Zhou et al., 2018): ``question<TAB>answers<TAB>gold path`` a line.

The answer column is ``a(a/b/)`` in PathQuestion and a plain answer in some copies; the path
column is ``subject#relation#entity#...#<end>#answer`` in PathQuestion and the same without
``#<end>#answer`` in PathQuestion-Large. Both are read here into one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgllm.exceptions import ParseError

END = "#<end>#"


@dataclass(frozen=True)
class PathQuestionItem:
    """One question, its gold answers and its gold path (entities and relations alternating)."""

    question: str
    answers: frozenset[str]
    path: tuple[str, ...] = ()

    @property
    def relations(self) -> tuple[str, ...]:
        return self.path[1::2]

    @property
    def entities(self) -> tuple[str, ...]:
        return self.path[0::2]


def parse_line(line: str, number: int = 0, source: str | None = None) -> PathQuestionItem:
    """One line; a line that is not ``question<TAB>answers[<TAB>path]`` raises :class:`ParseError`."""
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise ParseError("expected question<TAB>answer(a1/a2/)<TAB>path", path=source, line=number or None)
    answer = parts[1].strip()
    if "(" in answer and answer.endswith(")"):
        answers = frozenset(a for a in answer[answer.index("(") + 1 : -1].split("/") if a)
    else:
        answers = frozenset({answer})
    path: tuple[str, ...] = ()
    if len(parts) >= 3 and parts[2].strip():
        names = parts[2].strip().split(END)[0].split("#")
        if len(names) < 3 or len(names) % 2 == 0 or not all(names):
            raise ParseError(
                "the path must be subject#relation#entity[#relation#entity...]", path=source, line=number or None
            )
        path = tuple(names)
    return PathQuestionItem(parts[0].strip(), answers, path)


def read_pathquestion(path: str | Path) -> list[PathQuestionItem]:
    """Every question of a PathQuestion or PathQuestion-Large file."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            items.append(parse_line(line, number, str(path)))
    return items
