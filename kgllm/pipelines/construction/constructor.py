"""Documents in, resolved triples with provenance out: the ``kgllm extract`` pipeline.

Each document is read (and refused with a one-line reason when empty, binary,
too large or not text), split into chunks of whole sentences, run through the
extractor, resolved (entities and relations) and written with
:meth:`GraphStore.add_derived` under one source id per document version::

    /abs/path/report.txt@<content hash>-<output hash>

A version that yields no triple is kept as a bare source mark
(:meth:`GraphStore.record_source`), so a document whose content is already
stored is skipped whether it gave facts or not. A changed document (or a
changed resolution) is written as a new version first, then its older versions
are removed with :meth:`GraphStore.remove_source`, which deletes the triples only
they supported; each step is atomic, so the store never holds half of a document.
Merges of mentions into other entities are appended to a JSON-lines log.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kgllm.exceptions import InputError, KGLLMError, ParseError
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import normalize
from kgllm.pipelines.construction.extraction import Extractor, RawTriple
from kgllm.pipelines.construction.resolution import EntityResolver, Merge, RelationNormalizer, ResolverConfig
from kgllm.retrieval.encoder import Encoder
from kgllm.types import Entity, Provenance, Triple

MAX_BYTES = 2_000_000
CHUNK_CHARS = 300
MIN_SCORE = 0.2
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n")
_ENGLISH = frozenset(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "a",
        "an",
        "for",
        "on",
        "with",
        "by",
        "as",
        "at",
        "from",
        "that",
        "which",
        "it",
        "are",
        "were",
        "his",
        "her",
    ]
)


@dataclass
class Schema:
    """Relation names the extractor may write, and the classes of their subjects and objects."""

    relations: list[str]
    domains: dict[str, str] = field(default_factory=dict)  # relation -> class of its subject
    ranges: dict[str, str] = field(default_factory=dict)  # relation -> class of its object


@dataclass
class DocumentResult:
    """What happened to one document: written (or would be), unchanged, deleted or failed."""

    path: str
    status: str  # "added" | "would add" | "no triples" | "unchanged" | "deleted" | "failed"
    source: str = ""
    added: list[Triple] = field(default_factory=list)
    removed: list[Triple] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    new_relations: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str = ""
    chunks: int = 0
    # a dry run's facts, for review: (triple, provenance, the text of its span), and the new entities they name
    proposed: list[tuple[Triple, Provenance, str]] = field(default_factory=list)
    new_entities: list[Entity] = field(default_factory=list)


def read_schema(path: str | Path) -> Schema:
    """A schema file: YAML or JSON ``relations: [name, or {name, head, tail}]``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the schema: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ParseError(
            f"schema does not parse: {str(exc).splitlines()[0]}",
            path=str(path),
            line=line + 1 if line is not None else None,
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("relations"), list) or not data["relations"]:
        raise ParseError("a schema needs a non-empty list 'relations' (names, or {name, head, tail})", path=str(path))
    schema = Schema([])
    for item in data["relations"]:
        spec = {"name": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            raise ParseError(f"not a relation: {item!r}; write a name or {{name, head, tail}}", path=str(path))
        schema.relations.append(spec["name"].strip())
        if spec.get("head"):
            schema.domains[spec["name"].strip()] = str(spec["head"])
        if spec.get("tail"):
            schema.ranges[spec["name"].strip()] = str(spec["tail"])
    return schema


def read_document(path: str | Path, max_bytes: int = MAX_BYTES) -> str:
    """The text of a document, or InputError saying why it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{path}: too large ({size:,} bytes; the limit is {max_bytes:,}); split it")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if b"\0" in data[:8192]:
        raise InputError(f"{path}: binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise InputError(f"{path}: empty document")
    return text


def looks_english(text: str) -> bool:
    """False for text of some length where common English words are rare (the adapter learned English)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    return len(words) < 20 or sum(w in _ENGLISH for w in words) / len(words) >= 0.05


def chunk_spans(text: str, max_chars: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """(start, end) of chunks of whole sentences up to ``max_chars`` (a longer sentence is its own chunk)."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append((start, match.start()))
        start = match.end()
    sentences.append((start, len(text)))
    chunks: list[tuple[int, int]] = []
    for s, e in sentences:
        if not text[s:e].strip():
            continue
        if chunks and e - chunks[-1][0] <= max_chars:
            chunks[-1] = (chunks[-1][0], e)
        else:
            chunks.append((s, e))
    return chunks


def mention_span(chunk: str, offset: int, raw: RawTriple) -> tuple[int, int]:
    """Characters from the subject to the object where the chunk writes them (the chunk when not found)."""
    lower = chunk.lower()
    found = [(i, i + len(m)) for m in (raw.subject, raw.object) if (i := lower.find(m.lower())) >= 0]
    if not found:
        return offset, offset + len(chunk)
    return offset + min(s for s, _ in found), offset + max(e for _, e in found)


class KGConstructor:
    """Extracts documents into a store: resolution, provenance, versions, deletes."""

    def __init__(
        self,
        store: GraphStore,
        extractor: Extractor,
        encoder: Encoder | None = None,
        schema: Schema | None = None,
        resolver_config: ResolverConfig | None = None,
        merge_log: Path | None = None,
        min_score: float = MIN_SCORE,
        max_bytes: int = MAX_BYTES,
        chunk_chars: int = CHUNK_CHARS,
    ):
        self.store = store
        self.extractor = extractor
        self.encoder = encoder
        self.schema = schema
        self.resolver_config = resolver_config or ResolverConfig()
        self.merge_log = merge_log
        self.min_score = min_score
        self.max_bytes = max_bytes
        self.chunk_chars = chunk_chars
        if merge_log is not None:
            self.resolver_config.keep_apart |= kept_apart(merge_log)

    # ------------------------------------------------------------ documents
    def run(
        self, paths: Sequence[str | Path], write: bool = True, force: bool = False, progress: bool = True
    ) -> list[DocumentResult]:
        """Extract each document in turn; a failed document is reported and the batch goes on."""
        from tqdm.auto import tqdm

        results = []
        for path in tqdm(paths, desc="extracting", unit="doc", disable=not progress or len(paths) < 2):
            try:
                results.append(self.extract_document(path, write, force))
            except KGLLMError as exc:
                results.append(DocumentResult(str(path), "failed", error=" ".join(str(exc).split())))
        return results

    def extract_document(self, path: str | Path, write: bool = True, force: bool = False) -> DocumentResult:
        """Extract one document; with ``write`` its new version replaces the older ones (``force``: even unchanged)."""
        text = read_document(path, self.max_bytes)
        doc_id = document_id(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        versions = self.store.sources(doc_id + "@")
        if not force and any(v.startswith(f"{doc_id}@{digest}-") for v in versions):
            return DocumentResult(str(path), "unchanged", source=next(v for v in versions if f"@{digest}-" in v))
        result = DocumentResult(str(path), "would add")
        if not looks_english(text):
            result.skipped.append("the text does not look like English; the extraction adapter was trained on English")
        spans = chunk_spans(text, self.chunk_chars)
        result.chunks = len(spans)
        raws = self.extractor.extract([text[s:e] for s, e in spans])
        triples, records, entities = self._resolve(text, spans, raws, result)
        result.source = f"{doc_id}@{digest}-{_output_digest(triples)}"
        records = [Provenance(result.source, r.method, r.model, r.score, r.created, r.span) for r in records]
        result.added = [t for t in dict.fromkeys(triples) if not self._stored(t)]
        if not write:
            result.proposed = [(t, r, text[r.span[0] : r.span[1]] if r.span else "") for t, r in zip(triples, records)]
            result.new_entities = entities
        else:
            self.store.add_derived(triples, records, entities)
            if not triples:  # no record would name the source, and the next run would read it again
                self.store.record_source(result.source)
            for old in versions:
                if old != result.source:
                    result.removed += self.store.remove_source(old)
            result.status = "added" if triples else "no triples"
            self._log_merges(result)
        return result

    def _stored(self, triple: Triple) -> bool:
        return any(True for _ in self.store.triples(triple.head, triple.relation, triple.tail))

    # ------------------------------------------------------------ resolution
    def _resolve(
        self, text: str, spans: list[tuple[int, int]], raws: list[list[RawTriple]], result: DocumentResult
    ) -> tuple[list[Triple], list[Provenance], list[Entity]]:
        kept = []
        for (start, end), chunk_triples in zip(spans, raws):
            for raw in chunk_triples:
                if raw.score < self.min_score:
                    result.skipped.append(f"score {raw.score:.2f} below {self.min_score}: {_show(raw)}")
                elif normalize(raw.subject) == normalize(raw.object):
                    result.skipped.append(f"subject and object are the same: {_show(raw)}")
                else:
                    kept.append((raw, mention_span(text[start:end], start, raw)))
        resolver = EntityResolver(self.store, self.encoder, self.resolver_config)
        where = resolver.resolve([m for raw, _ in kept for m in (raw.subject, raw.object)])
        normalizer = RelationNormalizer(self.store, self.encoder)
        relations = {r: normalizer.normalize(r) for r in dict.fromkeys(raw.relation for raw, _ in kept)}
        minted = {rid for rid, method, _ in relations.values() if method == "new"}
        triples: list[Triple] = []
        records: list[Provenance] = []
        entities: dict[str, tuple[str, set[str], set[str]]] = {}
        for raw, span in kept:
            head, tail = where[raw.subject], where[raw.object]
            if head.entity == tail.entity:
                result.skipped.append(f"subject and object resolve to one entity: {_show(raw)}")
                continue
            relation = relations[raw.relation][0]
            result.merges += [n.merge for n in (head, tail) if n.merge is not None and n.merge not in result.merges]
            triples.append(Triple(head.entity, relation, tail.entity))
            records.append(Provenance("", "extracted", self.extractor.name, round(raw.score, 4), span=span))
            domains, ranges = (self.schema.domains, self.schema.ranges) if self.schema else ({}, {})
            for node, mention, cls in (
                (head, raw.subject, self._class(raw.relation, domains)),
                (tail, raw.object, self._class(raw.relation, ranges)),
            ):
                _, aliases, types = entities.setdefault(node.entity, (node.label, set(), set()))
                aliases.add(mention)
                types.update([cls] if cls else [])
        result.new_relations = sorted(minted & {t.relation for t in triples})
        described = [
            Entity(i, label, tuple(sorted(aliases - {label})), tuple(sorted(types)))
            for i, (label, aliases, types) in entities.items()
        ]
        return triples, records, [e for e in described if self.store.entity(e.id) is None]

    @staticmethod
    def _class(relation: str, classes: dict[str, str]) -> str | None:
        """The schema's class for one end of a relation (None without a schema or class)."""
        name = classes.get(relation)
        return _class_id(name) if name else None

    def _log_merges(self, result: DocumentResult) -> None:
        if self.merge_log is None or not result.merges:
            return
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self.merge_log.parent.mkdir(parents=True, exist_ok=True)
        with self.merge_log.open("a", encoding="utf-8") as log:
            for merge in result.merges:
                log.write(json.dumps({"time": created, "source": result.source, **asdict(merge)}) + "\n")


def document_id(path: str | Path) -> str:
    return str(Path(path).resolve())


def delete_document(store: GraphStore, path: str | Path) -> DocumentResult:
    """Remove every version of a document and the triples only it supported (the file may be gone)."""
    removed = [t for source in store.sources(document_id(path) + "@") for t in store.remove_source(source)]
    return DocumentResult(str(path), "deleted", removed=removed)


def kept_apart(merge_log: Path) -> set[tuple[str, str]]:
    """(normalized mention, entity) pairs a merge log says must not merge again."""
    if not merge_log.is_file():
        return set()
    pairs = set()
    for line in merge_log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("undo"):
            pairs.add((normalize(entry["mention"]), entry["entity"]))
    return pairs


def undo_merges(merge_log: Path, mention: str) -> list[dict]:
    """Log that ``mention`` must stay apart from every entity it was merged into; the merges undone."""
    if not merge_log.is_file():
        return []
    entries = [json.loads(line) for line in merge_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    merged = {
        (e["entity"], e["source"]): e
        for e in entries
        if not e.get("undo") and normalize(e["mention"]) == normalize(mention)
    }
    undone = {e["entity"] for e in entries if e.get("undo") and normalize(e["mention"]) == normalize(mention)}
    new = [e for e in merged.values() if e["entity"] not in undone]
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with merge_log.open("a", encoding="utf-8") as log:
        for entity in dict.fromkeys(e["entity"] for e in new):
            log.write(json.dumps({"time": created, "undo": True, "mention": mention, "entity": entity}) + "\n")
    return new


def _class_id(name: str) -> str:
    from kgllm.graph.rdflib_store import to_iri

    return str(to_iri(name))


def _output_digest(triples: Iterable[Triple]) -> str:
    lines = sorted(f"{t.head}\t{t.relation}\t{t.tail}" for t in triples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:8]


def _show(raw: RawTriple) -> str:
    return f"({raw.subject} | {raw.relation} | {raw.object})"
