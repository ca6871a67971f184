"""Injection: numbered facts in a prompt template, and the ``[n]`` citations read back from the answer.

A :class:`PromptTemplate` declares its inputs (the ``{names}`` in its text) and refuses to format
without one of them. The facts go in numbered, ``[1] Chad neighbor of Libya.``, best first; the
model answers on one line, each name after the fact it cites: ``[1] Libya, [3] Niger``. Choosing a
line first and then copying its name is what a small model can learn; naming first competes with
what it remembers. :func:`parse_answer` reads the items of that line (a name and the facts it
cites) back, in either order.

Example::

    prompt = READER_TEMPLATE.format(facts=number_facts(["Chad neighbor of Libya"]), question="Who borders Chad?")
    parse_answer(" [1] Libya")   # ParsedAnswer(items=[AnswerItem(name="Libya", citations=(1,))], refused=False)
"""

from __future__ import annotations

import re
import string
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from kgllm.exceptions import InputError

NO_ANSWER = "The facts do not say."
"""What a reader writes when no numbered fact answers the question."""


class PromptInputError(InputError):
    """A prompt template was formatted without one of its declared inputs (or with one it lacks)."""


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with named ``{inputs}``; :meth:`format` fails naming any input that is missing.

    Example::

        PromptTemplate("Facts:\\n{facts}\\nQuestion: {question}\\nAnswer:").inputs  # ("facts", "question")
    """

    text: str

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input names, in order of first use."""
        names = (field for _, field, _, _ in string.Formatter().parse(self.text) if field is not None)
        return tuple(dict.fromkeys(names))

    def __post_init__(self) -> None:
        for name in self.inputs:
            if not name.isidentifier():
                raise InputError(f"prompt template inputs must be plain names, got {{{name}}}")

    def format(self, **values: str) -> str:
        missing = [name for name in self.inputs if name not in values]
        if missing:
            raise PromptInputError(f"the prompt template needs {', '.join(missing)}; given: {sorted(values) or 'none'}")
        unknown = sorted(set(values) - set(self.inputs))
        if unknown:
            raise PromptInputError(f"the prompt template has no input {', '.join(unknown)}; it takes {self.inputs}")
        return self.text.format(**values)


READER_TEMPLATE = PromptTemplate("Facts:\n{facts}\nQuestion: {question}\nAnswer:")
"""The bare layout kgllm's own model is trained to read (:mod:`kgllm.pipelines.enhance.reading`)."""

INSTRUCTED_TEMPLATE = PromptTemplate(
    "Answer the question using only the numbered facts. Write each answer after the number of the "
    "fact that supports it, on one line, e.g. '[1] Libya, [3] Niger'. If the facts do not answer the "
    f"question, write exactly: {NO_ANSWER}\n\n"
    "Facts:\n{facts}\n\nQuestion: {question}\nAnswer:"
)
"""For instruction-following models (a served model, a local Hugging Face chat model)."""


def number_facts(facts: Sequence[str]) -> str:
    """``[1] first fact.`` one a line, numbered from 1 in the given order."""
    return "\n".join(f"[{i}] {fact.rstrip('.')}." for i, fact in enumerate(facts, 1))


@dataclass(frozen=True, slots=True)
class AnswerItem:
    """One thing the answer names, and the numbers of the facts cited for it."""

    name: str
    citations: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """The items of an answer line; ``refused`` when the model wrote that the facts do not say."""

    items: list[AnswerItem]
    refused: bool

    @property
    def citations(self) -> list[int]:
        """Every cited fact number, in order of first citation."""
        return list(dict.fromkeys(n for item in self.items for n in item.citations))


_CITATIONS = re.compile(r"((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)")


def parse_answer(text: str) -> ParsedAnswer:
    """The named items and their ``[n]`` citations in an answer, the citations before the names
    (``[3][5] Bosnia and Herzegovina, [2, 4] Niger``) or after them (``Libya [1], Niger [3] and Mali [2, 4]``).

    An answer that starts with a citation cites before its names. ``[2, 4]`` and ``[2][4]`` both cite
    two facts. Names listed without a citation (``Libya, Niger [3]``: Libya) are items that cite
    nothing. Names keep their inner "and" (Bosnia and Herzegovina); an "and" that joins two items is dropped.
    """
    body = text.strip()
    if body.startswith(NO_ANSWER.rstrip(".")):
        return ParsedAnswer([], True)
    pieces = _CITATIONS.split(body)  # text, citations, text, citations, ..., text
    cited = [tuple(int(n) for n in re.findall(r"\d+", c)) for c in pieces[1::2]]
    names = [[name for name in map(_clean, re.split(r"[,;]", piece)) if name] for piece in pieces[::2]]
    items: list[AnswerItem] = []
    if not names[0] and cited:  # "[1] Libya, Chad, [3] Niger": each citation names the text after it
        for citations, after in zip(cited, names[1:], strict=True):
            items.append(AnswerItem(after[0] if after else "", citations))
            items.extend(AnswerItem(name, ()) for name in after[1:])
        return ParsedAnswer(items, False)
    for before, citations in zip(names, [*cited, ()], strict=True):  # "Libya, Niger [3]"
        items.extend(AnswerItem(name, ()) for name in before[:-1])
        if before or citations:
            items.append(AnswerItem(before[-1] if before else "", citations))
    return ParsedAnswer(items, False)


def _clean(name: str) -> str:
    """A name without the "and" / "or" that joined it to the item before or after."""
    return re.sub(r"^(?:and|or)\s+|\s+(?:and|or)$", "", name.strip(" .:\t")).strip()


class CitationGrammar:
    """Constrained decoding of an answer line: :data:`NO_ANSWER`, or items ``" [<n>] <name>"`` joined by
    ``","``, where each item is one the caller allows (an entity of fact ``n``), each at most once.
    ``refusal=None`` leaves the refusal out: the answer must name at least one item.

    Items are given as token ids, each encoded on its own (its leading space included), so the
    model writes each name as that encoding; after an item comes the separator or the end.
    ``groups`` (the keys of each item, e.g. the entity it names and the number it cites) bars the
    other items that share a key once one is written, so an answer names each entity once and
    cites each numbered fact once. ``bundles`` (one key or ``None`` per item) makes items that share a
    key come as a whole: once one is written, the answer names the others still open before it may
    end or go on to another item, so an answer citing a walk names every entity the walk reaches.
    A :class:`~kgllm.llm.base.Constraint` for local models.
    """

    _END = -1

    def __init__(
        self,
        items: Sequence[Sequence[int]],
        separator: Sequence[int],
        refusal: Sequence[int] | None,
        eos_id: int,
        groups: Sequence[Sequence[Hashable]] | None = None,
        bundles: Sequence[Hashable | None] | None = None,
    ):
        if not items:
            raise InputError("a citation grammar needs at least one item")
        for name, given in (("group", groups), ("bundle", bundles)):
            if given is not None and len(given) != len(items):
                raise InputError(f"a citation grammar needs one {name} per item, got {len(given)} for {len(items)}")
        self.items = [tuple(ids) for ids in items] + ([tuple(refusal)] if refusal is not None else [])
        self.refusal = len(items)  # the refusal's index (one past the items when there is none)
        keys = [tuple(k) for k in groups] if groups is not None else [(i,) for i in range(len(items))]
        members: dict[Hashable, set[int]] = {}
        for index, item_keys in enumerate(keys):
            for key in item_keys:
                members.setdefault(key, set()).add(index)
        self.group = [{i for key in item_keys for i in members[key]} | {index} for index, item_keys in enumerate(keys)]
        together: dict[Hashable, set[int]] = {}
        for index, bundle in enumerate(bundles or ()):
            if bundle is not None:
                together.setdefault(bundle, set()).add(index)
        self.bundle_of = [together[b] if b is not None else set() for b in (bundles or [None] * len(items))]
        self.bundle_of.append(set())  # the refusal's
        self.separator = tuple(separator)
        self.eos_id = eos_id
        self.root: dict[int, Any] = {}
        self.below: dict[int, set[int]] = {}  # id(node) -> items in its subtree
        for index, ids in enumerate(self.items):
            node = self.root
            self.below.setdefault(id(node), set()).add(index)
            for token in ids:
                node = node.setdefault(token, {})
                self.below.setdefault(id(node), set()).add(index)
            node[self._END] = index

    def prefix_allowed_tokens(self, batch_id: int, generated: Sequence[int]) -> list[int]:
        node: dict[int, Any] | None = self.root
        used: set[int] = set()  # items written, and the items of their groups
        bundle: set[int] = set()  # the open bundle's items still to write
        separator_left = 0  # separator tokens still to come after a finished item
        for token in generated:
            if token == self.eos_id:
                return [self.eos_id]
            if separator_left:
                separator_left -= 1
                node = self.root if separator_left == 0 else None
                continue
            assert node is not None
            if token not in node and self._END in node:  # an item ended ("Guinea", not "Guinea-Bissau")
                used, bundle = self._finish(node[self._END], used, bundle)
                separator_left = len(self.separator) - 1
                node = self.root if separator_left == 0 else None
                continue
            node = node.get(token)
            if node is None:
                return [self.eos_id]
            if node.get(self._END) == self.refusal:
                return [self.eos_id]
        if separator_left:
            return [self.separator[len(self.separator) - separator_left]]
        assert node is not None
        barred = used | ({self.refusal} if used else set())

        def open_items(items: set[int]) -> set[int]:
            return (items & bundle if bundle else items) - barred

        allowed = [t for t, child in node.items() if t != self._END and open_items(self.below[id(child)])]
        if self._END in node and open_items({node[self._END]}):  # the item may end here
            after, left = self._finish(node[self._END], used, bundle)
            if left or len(after) < self.refusal:
                allowed.append(self.separator[0])
            if not left:
                allowed.append(self.eos_id)
        return list(dict.fromkeys(allowed)) or [self.eos_id]

    def _finish(self, item: int, used: set[int], bundle: set[int]) -> tuple[set[int], set[int]]:
        """``used`` and the open bundle once ``item`` is written."""
        used = used | self.group[item]
        return used, (bundle or self.bundle_of[item]) - used
