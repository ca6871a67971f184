"""WebNLG in JSON lines (``{"triples": [[s, r, o], ...], "texts": [...]}``): reading and training pairs.

Entity names are DBpedia local names (``Aaron_S._Daggett``); they are read with
spaces for underscores. For extraction training the subject and object of each
triple are aligned to the text the example pairs them with (the closest span,
fuzzy), because the decoder only writes spans of the text; a triple whose
entities cannot be found there is left out of that example's target.

For verbalization the texts are delexicalized: each entity's mention becomes a
placeholder (``ENT1``, ``ENT2``, ... in order of first appearance in the triples), so
a small model learns how relations are phrased and copies no names; the names go
back in after generation (:func:`relexicalize`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz, process

from kgllm.exceptions import ParseError
from kgllm.pipelines.construction.grammar import text_spans

ALIGN_MIN_SCORE = 85
_PLACEHOLDER = re.compile(r"ENT(\d+)")


@dataclass(frozen=True, slots=True)
class Example:
    """One WebNLG entry: its triples (readable names) and every reference text."""

    id: str
    triples: tuple[tuple[str, str, str], ...]
    texts: tuple[str, ...]


def entity_name(name: str) -> str:
    return name.replace("_", " ").strip().strip('"')


def read_webnlg(path: str | Path, limit: int | None = None) -> list[Example]:
    """The entries of a WebNLG JSON-lines file (the first ``limit`` when given)."""
    examples = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                triples = tuple((entity_name(s), r, entity_name(o)) for s, r, o in row["triples"])
                examples.append(Example(str(row.get("eid", number)), triples, tuple(row["texts"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise ParseError(f"not a WebNLG entry ({exc})", path=str(path), line=number) from None
            if limit is not None and len(examples) >= limit:
                break
    return examples


def webnlg_graph(path: str | Path):
    """The triples of a WebNLG file as an in-memory graph (ids minted from the names, labels readable)."""
    from kgllm.graph.rdflib_store import RDFLibStore, to_iri
    from kgllm.types import Entity, Triple

    examples = read_webnlg(path)
    names = {n for e in examples for s, _, o in e.triples for n in (s, o)}
    store = RDFLibStore()
    store.add(
        {Triple(str(to_iri(s)), str(to_iri(r)), str(to_iri(o))) for e in examples for s, r, o in e.triples},
        [Entity(str(to_iri(n)), n) for n in sorted(names)],
    )
    return store


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def relation_vocabulary(examples: list[Example]) -> list[str]:
    return sorted({r for e in examples for _, r, _ in e.triples})


def align(name: str, text: str, spans: list[str] | None = None) -> str | None:
    """``name`` as ``text`` writes it: itself when present, else the closest span (or None)."""
    if name.lower() in text.lower():
        start = text.lower().index(name.lower())
        return text[start : start + len(name)]
    match = process.extractOne(name, spans or sorted(text_spans(text)), scorer=fuzz.ratio, score_cutoff=ALIGN_MIN_SCORE)
    return match[0] if match else None


def aligned_triples(example: Example, text: str) -> list[tuple[str, str, str]]:
    """The example's triples with entities written as in ``text``; unalignable ones left out."""
    spans = sorted(text_spans(text))
    found = []
    for s, r, o in example.triples:
        subject, obj = align(s, text, spans), align(o, text, spans)
        if subject and obj:
            found.append((subject, r, obj))
    return found


def placeholder(index: int) -> str:
    return f"ENT{index + 1}"


def entity_order(triples: Sequence[tuple[str, str, str]]) -> list[str]:
    """The entities of ``triples`` in order of first appearance (placeholder ``i`` stands for item ``i``)."""
    return list(dict.fromkeys(name for s, _, o in triples for name in (s, o)))


def delexicalized_triples(triples: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    index = {name: placeholder(i) for i, name in enumerate(entity_order(triples))}
    return [(index[s], r, index[o]) for s, r, o in triples]


def delexicalize(triples: Sequence[tuple[str, str, str]], text: str) -> str | None:
    """``text`` with every entity's mention replaced by its placeholder; None when one is not
    found (a partly delexicalized text would teach the model to write names it never sees)."""
    names = entity_order(triples)
    for i in sorted(range(len(names)), key=lambda i: -len(names[i])):  # "Battle of X" before "X"
        mention = align(names[i], text)
        if mention is None or _PLACEHOLDER.search(mention):
            return None
        text = text.replace(mention, placeholder(i))
    return text


def placeholders_in(text: str) -> set[str]:
    return {m[0] for m in _PLACEHOLDER.finditer(text)}


def relexicalize(text: str, triples: Sequence[tuple[str, str, str]]) -> str:
    """The placeholders of a generated ``text`` replaced by the names of ``triples``' entities."""
    names = entity_order(triples)
    return _PLACEHOLDER.sub(lambda m: names[int(m[1]) - 1] if 0 < int(m[1]) <= len(names) else m[0], text)


def pretraining_texts(path: str | Path) -> list[str]:
    """The base model's corpus: every reference text of the file, and its delexicalized form when it has one."""
    texts = []
    for example in read_webnlg(path):
        for text in example.texts:
            texts.append(text)
            if (delexicalized := delexicalize(example.triples, text)) is not None:
                texts.append(delexicalized)
    return texts
