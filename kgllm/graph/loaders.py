"""Read triples from files (TSV, CSV with a header, RDF) and write them back out.

A file is parsed and checked in full before anything reaches a store, so a bad file
leaves the store untouched. Every refusal names the file, the line and the reason:
a syntax error in any format, text that is not UTF-8, and control characters (NUL and
the other C0/C1 controls but tab and line breaks), which are refused anywhere in a file.

Literal-valued statements in RDF (``ex:chad ex:population 17``) are attributes: kept by
stores that hold them (the rdflib store keeps them as literal triples, which readers of
relations skip) and reported, never silently dropped, by the others. Statements about
blank nodes cannot be named in a store; they are counted and reported as skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from rdflib import RDF, RDFS, SKOS, XSD, BNode, Graph, Literal, URIRef
from rdflib.term import Node

from kgllm.cache import atomic_write
from kgllm.exceptions import InputError, ParseError
from kgllm.graph.base import GraphStore
from kgllm.graph.rdflib_store import (
    DEFAULT_BASE,
    LABEL_PREDICATES,
    NON_RELATIONS,
    RDF_FORMATS,
    Attribute,
    to_iri,
)
from kgllm.types import Entity, Triple

log = logging.getLogger(__name__)

CSV_COLUMNS = {
    "head": ("head", "subject", "source", "h", "s"),
    "relation": ("relation", "predicate", "type", "r", "p"),
    "tail": ("tail", "object", "target", "t", "o"),
}
NAME_PREDICATES = (*LABEL_PREDICATES, SKOS.altLabel)
# C0 controls but tab, line feed and carriage return; DEL; C1 controls.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
CONTROL_BYTES = re.compile(b"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CONTROL_IN_VALUE = CONTROL  # literal values may hold tabs and line breaks (escaped in the file)
CONTROL_IN_IRI = re.compile("[\x00-\x20\x7f-\x9f]")
FORMAT_NAMES = {"json-ld": "JSON-LD", "turtle": "Turtle", "nt": "N-Triples", "xml": "RDF/XML", "trig": "TriG"}
NTRIPLES = ("nt", "ntriples", "nt11")
LOAD_BATCH = 50_000
"""Lines a load reads, and a streaming store writes, at a time."""
TEXT_RDF_FORMATS = ("turtle", "nt", "n3", "json-ld", "trig", "nquads", "ntriples", "nt11", "ttl")


class _AttributeStore(Protocol):
    """A store whose ``supports_attributes`` is true: its ``add`` also takes literal-valued statements."""

    def add(
        self,
        triples: Iterable[Triple],
        entities: Iterable[Entity] = ...,
        batch_size: int = ...,
        attributes: Iterable[Attribute] = ...,
    ) -> int: ...


@dataclass
class GraphData:
    """What a file holds: relation triples, entity descriptions (labels, aliases, types),
    attributes (literal-valued statements) and the count of statements that could not be kept."""

    triples: list[Triple] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    skipped: int = 0
    """Statements no store can hold: about blank nodes, labels past the one kept, a class or name of the wrong kind."""


@dataclass
class _Tally:
    """What a streamed load has read so far, in numbers (the batches themselves are gone)."""

    triples: int = 0
    entities: int = 0
    attributes: int = 0
    skipped: int = 0
    first_attribute: Attribute | None = None


@dataclass(frozen=True)
class LoadReport:
    """What a load did: new triples, and what the file held besides relation triples."""

    path: Path
    new_triples: int
    triples: int
    entities: int
    attributes: int
    attributes_dropped: int
    skipped: int
    seconds: float

    @property
    def triples_per_second(self) -> float:
        return self.triples / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """``loaded 3 new triples (2 attributes kept, 1 statement skipped) from kg.ttl in 0.1 s (30 triples/s)``."""
        extra = []
        if self.attributes:
            extra.append(f"{self.attributes} literal-valued attributes kept")
        if self.attributes_dropped:
            extra.append(f"{self.attributes_dropped} literal-valued attributes not loaded (the store holds none)")
        if self.skipped:
            extra.append(f"{self.skipped} statements skipped (blank nodes, extra labels)")
        detail = f" ({'; '.join(extra)})" if extra else ""
        return (
            f"loaded {self.new_triples} new triples{detail} from {self.path} "
            f"in {self.seconds:.1f} s ({self.triples_per_second:,.0f} triples/s)"
        )


def file_format(path: Path, format: str | None = None) -> str:
    if format:
        return format.lower()
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in RDF_FORMATS:
        return RDF_FORMATS[suffix]
    raise InputError(
        f"{path}: cannot tell the format from the suffix; pass a format (tsv, csv, turtle, nt, json-ld, xml)"
    )


def read_file(path: str | os.PathLike, format: str | None = None, base: str = DEFAULT_BASE) -> GraphData:
    """Parse and check a triples file in full. Plain names in TSV/CSV become IRIs in ``base``.

    Raises :class:`~kgllm.exceptions.ParseError` naming the file, the line and the reason
    when the file does not parse or holds control characters.
    """
    whole = GraphData()
    for batch in read_batches(path, format, base):
        whole.triples += batch.triples
        whole.entities += batch.entities
        whole.attributes += batch.attributes
        whole.skipped += batch.skipped
    return whole


def read_batches(
    path: str | os.PathLike, format: str | None = None, base: str = DEFAULT_BASE, batch_size: int = LOAD_BATCH
) -> Iterator[GraphData]:
    """The file's statements, ``batch_size`` lines at a time, checked as :func:`read_file` checks them.

    TSV, CSV and N-Triples are read line by line, so memory holds one batch; other RDF
    syntaxes are parsed whole and come as one batch. A bad line raises when it is reached,
    after the batches before it: a caller that writes batches must be able to undo them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    fmt = file_format(path, format)
    if fmt == "tsv":
        yield from _batched(_read_tsv(path, base), batch_size)
    elif fmt == "csv":
        yield from _batched(_read_csv(path, base), batch_size)
    elif fmt in NTRIPLES:
        yield from _read_ntriples(path, batch_size)
    else:
        yield _read_rdf(path, fmt)


def load(
    store: GraphStore,
    path: str | os.PathLike,
    format: str | None = None,
    base: str = DEFAULT_BASE,
    batch_size: int = LOAD_BATCH,
) -> int:
    """Add ``path`` to ``store`` in one all-or-nothing write; returns the number of new triples."""
    return load_report(store, path, format, base, batch_size).new_triples


def load_report(
    store: GraphStore,
    path: str | os.PathLike,
    format: str | None = None,
    base: str = DEFAULT_BASE,
    batch_size: int = LOAD_BATCH,
) -> LoadReport:
    """As :func:`load`, and say what was kept: triples, attributes, skipped statements, triples/s.

    A store that can write batches as one undoable write (``add_batches``) gets the file a
    batch at a time; the others get it whole, parsed and checked before anything is written.
    Attributes go to stores with ``supports_attributes`` in the same write as the triples;
    other stores get the triples, and the attributes are reported as not loaded.
    """
    path = Path(path)
    started = time.perf_counter()
    keeps_attributes = getattr(store, "supports_attributes", False)
    tally = _Tally()

    def counted(batches: Iterable[GraphData]) -> Iterator[tuple[list[Triple], list[Entity], list[Attribute]]]:
        for batch in batches:
            tally.skipped += batch.skipped
            tally.triples += len(batch.triples)
            tally.entities += len(batch.entities)
            tally.attributes += len(batch.attributes)
            if not keeps_attributes and batch.attributes and tally.first_attribute is None:
                tally.first_attribute = batch.attributes[0]
            yield batch.triples, batch.entities, batch.attributes if keeps_attributes else []

    batches = counted(read_batches(path, format, base, batch_size))
    if hasattr(store, "add_batches"):
        new = store.add_batches(batches)
    else:
        triples, entities, attributes = [], [], []
        for t, e, a in batches:
            triples += t
            entities += e
            attributes += a
        if keeps_attributes:
            new = cast(_AttributeStore, store).add(triples, entities, batch_size=batch_size, attributes=attributes)
        else:
            new = store.add(triples, entities, batch_size=batch_size)
    if tally.first_attribute is not None:
        s, p, o = tally.first_attribute
        log.warning(
            "%s: %d literal-valued statements not loaded (e.g. %s %s %r): the %s store holds relations "
            "between entities only",
            path,
            tally.attributes,
            s,
            p,
            str(o),
            store.name,
        )
    if tally.skipped:
        log.warning(
            "%s: %d statements skipped: about blank nodes (no id to store) or labels beyond one per entity",
            path,
            tally.skipped,
        )
    return LoadReport(
        path=path,
        new_triples=new,
        triples=tally.triples,
        entities=tally.entities,
        attributes=tally.attributes if keeps_attributes else 0,
        attributes_dropped=0 if keeps_attributes else tally.attributes,
        skipped=tally.skipped,
        seconds=time.perf_counter() - started,
    )


def _minted(parts: Iterable[str], base: str) -> Triple:
    return Triple(*(str(to_iri(p, base)) for p in parts))


def _batched(triples: Iterable[Triple], batch_size: int) -> Iterator[GraphData]:
    batch = GraphData()
    for t in triples:
        batch.triples.append(t)
        if len(batch.triples) >= batch_size:
            yield batch
            batch = GraphData()
    if batch.triples:
        yield batch


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file, one line in memory at a time; refused at the first line
    that is not UTF-8 or holds a control character."""
    with open(path, "rb") as source:
        for number, raw in enumerate(source, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ParseError(f"not UTF-8 text ({exc.reason})", path=str(path), line=number) from exc
            found = CONTROL.search(line)
            if found:
                _refuse_control(path, line, found.start(), ord(found.group()), first_line=number)
            yield number, line


def _read_tsv(path: Path, base: str) -> Iterator[Triple]:
    for number, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 3 or not all(parts):
            raise ParseError(
                f"expected 3 non-empty tab-separated fields, found {len(parts)}: {line[:80]!r}",
                path=str(path),
                line=number,
            )
        yield _minted(parts, base)


def _read_csv(path: Path, base: str) -> Iterator[Triple]:
    reader = csv.reader((line for _, line in _lines(path)), strict=True)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        columns = {
            role: next((header.index(n) for n in names if n in header), None) for role, names in CSV_COLUMNS.items()
        }
        missing = [role for role, index in columns.items() if index is None]
        if missing:
            raise ParseError(
                f"header {header} lacks column(s) {missing} (e.g. head,relation,tail)", path=str(path), line=1
            )
        column_of = {role: index for role, index in columns.items() if index is not None}  # every role, now
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            try:
                parts = [row[column_of[role]].strip() for role in ("head", "relation", "tail")]
            except IndexError:
                parts = []
            if len(parts) != 3 or not all(parts):
                raise ParseError(
                    f"expected head, relation and tail values, got {row!r}", path=str(path), line=reader.line_num
                )
            yield _minted(parts, base)
    except csv.Error as exc:
        raise ParseError(f"not valid CSV ({exc})", path=str(path), line=reader.line_num) from None


def _read_ntriples(path: Path, batch_size: int) -> Iterator[GraphData]:
    """N-Triples a batch of lines at a time (a statement is one line), each batch checked as a whole file is."""
    lines: list[str] = []
    first = 1
    for number, line in _lines(path):
        lines.append(line)
        if len(lines) >= batch_size:
            yield _ntriples_batch(path, lines, first)
            lines, first = [], number + 1
    if lines:
        yield _ntriples_batch(path, lines, first)


def _ntriples_batch(path: Path, lines: list[str], first: int) -> GraphData:
    """Parse N-Triples ``lines`` (the file's from line ``first`` on) with Oxigraph's parser, then check them.

    A batch that does not parse is read again line by line to name the first bad line as rdflib does.
    """
    import pyoxigraph as ox

    text = "".join(lines)
    statements: list[tuple[Node, Node, Node]] = []
    try:
        for t in ox.parse(text.encode("utf-8"), format=ox.RdfFormat.N_TRIPLES):
            statements.append((_rdflib_term(t.subject), _rdflib_term(t.predicate), _rdflib_term(t.object)))
    except SyntaxError as exc:
        line, reason = _ntriples_error(text, "nt") or (exc.lineno or 1, f"bad syntax: {exc}")
        raise ParseError(reason, path=str(path), line=first + line - 1) from exc
    return _graph_data(statements, path)


def _rdflib_term(term) -> Node:
    """An Oxigraph term as rdflib reads it from N-Triples (a plain string literal has no datatype)."""
    import pyoxigraph as ox

    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        return BNode(term.value)
    if term.language:
        return Literal(term.value, lang=term.language)
    datatype = term.datatype.value
    return Literal(term.value, datatype=None if datatype == str(XSD.string) else URIRef(datatype))


def syntax_error(exc: BaseException, text: str | None = None, fmt: str = "") -> tuple[int | None, str]:
    """``(line, reason)`` of an RDF parser's exception (line None where the parser gives none)."""
    why = getattr(exc, "_why", None)
    if why is not None and hasattr(exc, "lines"):  # Turtle, TriG, N3 (rdflib's notation3 parser)
        source, position = getattr(exc, "_str", None), getattr(exc, "_i", None)
        if isinstance(source, bytes):
            source = source.decode("utf-8", errors="replace")  # the position counts characters, not bytes
        if isinstance(source, str) and isinstance(position, int):  # its own line count can run one ahead
            return source[:position].count("\n") + 1, f"bad syntax: {why}"
        return exc.lines + 1, f"bad syntax: {why}"
    if hasattr(exc, "getLineNumber") and hasattr(exc, "getMessage"):  # RDF/XML (SAX)
        return exc.getLineNumber(), f"not valid XML: {exc.getMessage()}"
    if isinstance(exc, json.JSONDecodeError):
        return exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})"
    if text is not None and fmt in ("nt", "ntriples", "nt11", "nquads"):
        found = _ntriples_error(text, fmt)
        if found:
            return found
    message = " ".join(str(exc).split())
    name = FORMAT_NAMES.get(fmt, fmt or "RDF")
    if isinstance(exc, (AttributeError, TypeError, KeyError, IndexError, ValueError)):  # the parser tripped over it
        return None, f"not valid {name} ({type(exc).__name__}: {message})"
    return None, f"not valid {name}: {message or type(exc).__name__}"


def _ntriples_error(text: str, fmt: str) -> tuple[int, str] | None:
    """The first line of an N-Triples / N-Quads text that does not parse, and why (rdflib names no line)."""
    from rdflib import Dataset
    from rdflib.plugins.parsers.nquads import NQuadsParser
    from rdflib.plugins.parsers.ntriples import ParseError as NTError
    from rdflib.plugins.parsers.ntriples import W3CNTriplesParser

    # rdflib types a parser's sink as its own sink classes; any object with triple() (or a
    # Dataset, as NQuadsParser.parse itself sets) serves
    parser = NQuadsParser() if fmt == "nquads" else W3CNTriplesParser(sink=_NoSink())  # type: ignore[arg-type]
    if fmt == "nquads":
        parser.sink = Dataset(default_union=True)  # type: ignore[assignment]
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        parser.line = line
        try:
            parser.parseline()
        except NTError as exc:
            return number, _ntriples_reason(parser, exc)
    return None


def _ntriples_reason(parser, exc: Exception) -> str:
    """Why a line of N-Triples did not parse, in words rather than the parser's regular expressions."""
    from rdflib.plugins.parsers.ntriples import r_tail, r_wspaces

    message = str(exc)
    if r_tail.pattern in message:
        return f"bad syntax: expected ' .' to end the statement, found {parser.line[:40]!r}"
    if r_wspaces.pattern in message:
        return f"bad syntax: expected whitespace between terms, found {parser.line[:40]!r}"
    return f"bad syntax: {message}"


class _NoSink:
    """Where the line-by-line N-Triples check sends its triples: nowhere."""

    def triple(self, *_: object) -> None:
        pass


def _read_rdf(path: Path, fmt: str) -> GraphData:
    graph = Graph()
    text = None
    try:
        if fmt in TEXT_RDF_FORMATS:
            text = _read_text(path)
            if fmt == "json-ld":
                json.loads(text)  # a JSON syntax error, with its line, before the JSON-LD processor
            graph.parse(data=text, format=fmt, publicID=path.resolve().as_uri())
        else:  # RDF/XML may declare its own encoding: check the bytes, let the parser decode
            _check_bytes(path)
            graph.parse(path, format=fmt)
    except ParseError:
        raise
    except Exception as exc:  # rdflib raises many types; all mean the file did not parse
        line, reason = syntax_error(exc, text, fmt)
        raise ParseError(reason, path=str(path), line=line) from exc
    return _graph_data(graph, path)


def _graph_data(statements: Iterable[tuple[Node, Node, Node]], path: Path) -> GraphData:
    """Sort RDF statements (an rdflib graph, or any iterable of them) into triples, entities and attributes."""
    data = GraphData()
    names: dict[URIRef, dict[Node, list[Node]]] = {}  # a described node's labels, aliases and classes
    for s, p, o in dict.fromkeys(statements):  # each statement once, as in a graph
        _check_terms(path, s, p, o)
        if not isinstance(s, URIRef) or not isinstance(o, (URIRef, Literal)):
            data.skipped += 1
        elif p in NAME_PREDICATES or p == RDF.type:
            if isinstance(o, Literal) == (p != RDF.type):
                names.setdefault(s, {}).setdefault(p, []).append(o)
            else:
                data.skipped += 1
        elif isinstance(o, Literal):
            if p in NON_RELATIONS and p != RDFS.comment:
                data.skipped += 1  # kgllm's own bookkeeping on a non-blank node: not a fact
            else:
                data.attributes.append((str(s), str(p), o))
        elif p in NON_RELATIONS:
            data.skipped += 1
        else:
            data.triples.append(Triple(str(s), str(p), str(o)))
    for node in sorted(names):
        values = names[node]
        labels = [str(v) for lp in LABEL_PREDICATES for v in values.get(lp, ())]
        data.skipped += max(0, len(set(labels)) - 1)  # an entity has one label; the others would be lost unsaid
        data.entities.append(
            Entity(
                id=str(node),
                label=labels[0] if labels else "",
                aliases=tuple(sorted(str(a) for a in values.get(SKOS.altLabel, ()))),
                types=tuple(sorted(str(c) for c in values.get(RDF.type, ()))),
            )
        )
    return data


def _check_terms(path: Path, *terms) -> None:
    """Refuse control characters that escapes (``\\u0000``) put into IRIs or literal values."""
    for term in terms:
        pattern = CONTROL_IN_IRI if isinstance(term, URIRef) else CONTROL_IN_VALUE
        if isinstance(term, (URIRef, Literal)) and (found := pattern.search(str(term))):
            kind = "IRI" if isinstance(term, URIRef) else "literal"
            raise ParseError(
                f"{kind} {str(term)[:60]!r} holds the control character U+{ord(found.group()):04X}", path=str(path)
            )


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, refused (with its line) when not UTF-8 or holding a control character."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ParseError(f"not UTF-8 text ({exc.reason})", path=str(path), line=line) from exc
    found = CONTROL.search(text)
    if found:
        _refuse_control(path, text, found.start(), ord(found.group()))
    return text


def _check_bytes(path: Path) -> None:
    """Refuse control characters in a file that may declare its own encoding (RDF/XML)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # another declared encoding: its ASCII range is what can be checked
        found_byte = CONTROL_BYTES.search(raw)
        if found_byte:
            _refuse_control(path, raw.decode("latin-1"), found_byte.start(), found_byte.group()[0])
        return
    found = CONTROL.search(text)
    if found:
        _refuse_control(path, text, found.start(), ord(found.group()))


def _refuse_control(path: Path, text: str, position: int, code: int, first_line: int = 1) -> None:
    """Refuse the control character at ``position`` of ``text``, whose first line is ``first_line`` of the file."""
    line = text.count("\n", 0, position) + first_line
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    what = "NUL byte (binary file, not text)" if code == 0 else f"control character U+{code:04X}"
    raise ParseError(f"{what} at column {column}", path=str(path), line=line)


def write_tsv(triples: Iterable[Triple], path: str | os.PathLike) -> Path:
    """Write ``head<TAB>relation<TAB>tail`` lines atomically."""
    path = Path(path)
    with atomic_write(path) as out:
        for t in triples:
            out.write(f"{t.head}\t{t.relation}\t{t.tail}\n")
    return path
