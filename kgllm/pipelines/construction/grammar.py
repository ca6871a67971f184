"""Constrained decoding to a triple list: the model can only write ``s | r | o ; s | r | o <eos>``.

The output is a sequence of pieces, each tokenized on its own (with a leading space)
and followed by a separator: subject ``" |"``, relation ``" |"``, object ``" ;"`` or
EOS. Subjects and objects are spans of the source text (a prefix trie of every
word n-gram), relations are the schema's names (a trie) or, without a schema, any
short text. A grammar is a :class:`~kgllm.llm.base.Constraint` on generation; ``parse``
reads a finished output back into triples. Training targets are written by
``target_text`` in the same pieces, so what the model learns is what the grammar
lets it write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

MID_SEP = " |"
TRIPLE_SEP = " ;"
MAX_SPAN_WORDS = 8
MAX_RELATION_TOKENS = 12
_WORD = re.compile(r"\w[\w'’&/.,:+-]*\w|\w")
_END = -1  # trie key marking a complete piece

#: A prefix trie of token ids: token -> subtrie, and ``_END -> True`` where a piece is complete.
Trie = dict[int, Any]


@dataclass(frozen=True, slots=True)
class Piece:
    """One decoded element: its text and where its tokens sit in the output."""

    text: str
    start: int
    end: int


def text_spans(text: str, max_words: int = MAX_SPAN_WORDS) -> set[str]:
    """Every run of up to ``max_words`` words of ``text`` as it is written there (trailing dot or comma dropped too)."""
    words = list(_WORD.finditer(text))
    spans = set()
    for i, first in enumerate(words):
        for last in words[i : i + max_words]:
            span = text[first.start() : last.end()]
            spans.add(span)
            spans.add(span.rstrip(".,:"))
    spans.discard("")
    return spans


def piece_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]


def target_text(triples: Sequence[tuple[str, str, str]]) -> str:
    """The training target for ``triples``: pieces and separators as the grammar reads them."""
    return TRIPLE_SEP.join(f" {s.strip()}{MID_SEP} {r.strip()}{MID_SEP} {o.strip()}" for s, r, o in triples)


def _trie(sequences: Iterable[list[int]]) -> Trie:
    root: Trie = {}
    for ids in sequences:
        node = root
        for token in ids:
            node = node.setdefault(token, {})
        node[_END] = True
    return root


class TripleGrammar:
    """The token-level grammar of one output: entity spans from ``text``, relations from ``relations`` (None: free)."""

    def __init__(self, tokenizer, text: str, relations: Sequence[str] | None = None, max_triples: int = 8):
        self.eos = tokenizer.eos_token_id
        self.mid = tokenizer(MID_SEP, add_special_tokens=False)["input_ids"]
        self.next = tokenizer(TRIPLE_SEP, add_special_tokens=False)["input_ids"]
        self.max_triples = max_triples
        spans = [piece_ids(tokenizer, s) for s in text_spans(text)]
        self.subjects = _trie(ids + self.mid for ids in spans)
        self.objects = _trie([*(ids + self.next for ids in spans), *(ids + [self.eos] for ids in spans)])
        self.relations = _trie(piece_ids(tokenizer, r) + self.mid for r in relations) if relations else None
        special = set(tokenizer.all_special_ids)
        self.free_tokens = [i for i in range(len(tokenizer)) if i not in special and i != self.mid[-1]]
        self.blank = {i for i in self.free_tokens if not tokenizer.decode([i]).strip()}
        self.tokenizer = tokenizer

    # The output is walked from its start at every step: outputs are short, and a walk
    # from scratch cannot drift out of step with what generate() did.
    def _walk(self, generated: Sequence[int]) -> tuple[int, Trie | list[int], list[Piece], bool, int]:
        """(slot 0/1/2, trie node or free-text tokens, complete pieces, finished, where the slot began)."""
        node: Trie | list[int] = self.subjects
        pieces: list[Piece] = []
        slot, start = 0, 0
        for position, token in enumerate(generated):
            if slot == 1 and self.relations is None:
                # a free relation: node is the list of its tokens so far
                node = cast(list[int], node)
                node.append(token)
                if node[-len(self.mid) :] == self.mid:
                    pieces.append(
                        Piece(self._text(generated[start : position + 1 - len(self.mid)]), start, position + 1)
                    )
                    slot, node, start = 2, self.objects, position + 1
                continue
            child = cast(Trie, node).get(token)  # a trie node everywhere but in a free relation
            if child is None:  # generate() only picks allowed tokens; anything else ends the walk
                return slot, {}, pieces, True, start
            node = child
            if _END in node and len(node) == 1:
                sep = len(self.mid) if slot < 2 else (len(self.next) if token != self.eos else 1)
                pieces.append(Piece(self._text(generated[start : position + 1 - sep]), start, position + 1))
                if token == self.eos:
                    return slot, {}, pieces, True, start
                slot, start = (slot + 1) % 3, position + 1
                free: list[int] = []
                node = (self.subjects, free if self.relations is None else self.relations, self.objects)[slot]
        return slot, node, pieces, False, start

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids)).strip()

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """Token ids that may come next after ``generated`` (never empty)."""
        slot, node, pieces, finished, start = self._walk(generated)
        if finished:
            return [self.eos]
        if isinstance(node, list):
            return self._free(node)
        options = [t for t in node if t != _END]
        if slot == 2:
            if len(pieces) // 3 + 1 >= self.max_triples:
                options = [t for t in options if t != self.next[0]] or options
            subject = pieces[-2]
            if list(generated[start:]) == list(generated[subject.start : subject.end - len(self.mid)]):
                # the object has spelt out the subject: it may go on, not stop (no fact about itself)
                options = [t for t in options if t not in (self.next[0], self.eos)] or options
        return options or [self.eos]

    def prefix_allowed_tokens(self, batch_id: int, generated: Sequence[int]) -> list[int]:
        """The :class:`~kgllm.llm.base.Constraint` method: :meth:`allowed` (one grammar serves one prompt)."""
        return self.allowed(generated)

    def _free(self, relation: list[int]) -> list[int]:
        """Next tokens of a free relation: any text, ended by the separator (which it cannot contain)."""
        opened = self.mid[:-1]  # the separator's tokens but its last, which free text never holds
        words = relation[: len(relation) - len(opened)]
        can_close = relation[len(words) :] == opened and any(t not in self.blank for t in words)
        if len(relation) >= MAX_RELATION_TOKENS and not any(t not in self.blank for t in relation):
            return [t for t in self.free_tokens if t not in self.blank]
        if len(relation) >= MAX_RELATION_TOKENS:  # long enough: write the separator out
            done = next(k for k in range(len(opened), -1, -1) if relation[len(relation) - k :] == opened[:k] or k == 0)
            return [self.mid[-1]] if can_close else [opened[done]]
        return [*self.free_tokens, self.mid[-1]] if can_close else self.free_tokens

    def parse(self, generated: Sequence[int]) -> list[tuple[tuple[str, str, str], int, int]]:
        """The complete triples of an output, each with the token range it spans."""
        pieces = self._walk(generated)[2]
        return [((s.text, r.text, o.text), s.start, o.end) for s, r, o in zip(pieces[0::3], pieces[1::3], pieces[2::3])]
