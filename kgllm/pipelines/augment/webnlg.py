"""WebNLG in JSON lines (``{"triples": [[s, r, o], ...], "texts": [...]}``): reading and training pairs.

Entity names are DBpedia local names (``Aaron_S._Daggett``); they are read with
spaces for underscores. For extraction training the subject and object of each
triple are aligned to the text the example pairs them with (the closest span,
fuzzy), because the decoder only writes spans of the text; a triple whose
entities cannot be found there is left out of that example's target.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz, process

from kgllm.exceptions import ParseError
from kgllm.pipelines.augment.triple_grammar import text_spans

ALIGN_MIN_SCORE = 85


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
    store.add({Triple(str(to_iri(s)), str(to_iri(r)), str(to_iri(o))) for e in examples for s, r, o in e.triples},
              [Entity(str(to_iri(n)), n) for n in sorted(names)])
    return store


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def relation_vocabulary(examples: list[Example]) -> list[str]:
    return sorted({r for e in examples for _, r, _ in e.triples})


def align(name: str, text: str, spans: list[str] | None = None) -> str | None:
    """``name`` as ``text`` writes it: itself when present, else the closest span (or None)."""
    if name.lower() in text.lower():
        start = text.lower().index(name.lower())
        return text[start:start + len(name)]
    match = process.extractOne(name, spans or sorted(text_spans(text)), scorer=fuzz.ratio,
                               score_cutoff=ALIGN_MIN_SCORE)
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
