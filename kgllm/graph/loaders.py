"""Read triples from files (TSV, CSV with a header, RDF) and write them back out.

A file is parsed in full before anything reaches a store, so a malformed line
(reported with the file and line number) leaves the store untouched.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rdflib import RDF, SKOS, Graph, URIRef

from kgllm.exceptions import InputError, ParseError
from kgllm.graph.base import GraphStore
from kgllm.graph.rdflib_store import DEFAULT_BASE, LABEL_PREDICATES, NON_RELATIONS, RDF_FORMATS, to_iri
from kgllm.types import Entity, Triple

CSV_COLUMNS = {
    "head": ("head", "subject", "source", "h", "s"),
    "relation": ("relation", "predicate", "type", "r", "p"),
    "tail": ("tail", "object", "target", "t", "o"),
}


@dataclass
class GraphData:
    """What a file holds: relation triples and entity descriptions (labels, aliases, types)."""

    triples: list[Triple] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)


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
    """Parse a triples file. Plain names in TSV/CSV become IRIs in ``base``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    fmt = file_format(path, format)
    if fmt == "tsv":
        return _read_tsv(path, base)
    if fmt == "csv":
        return _read_csv(path, base)
    return _read_rdf(path, fmt)


def load(
    store: GraphStore,
    path: str | os.PathLike,
    format: str | None = None,
    base: str = DEFAULT_BASE,
    batch_size: int = 1000,
) -> int:
    """Parse ``path`` in full, then add it to ``store``; returns the number of new triples."""
    data = read_file(path, format, base)
    return store.add(data.triples, data.entities, batch_size=batch_size)


def _minted(parts: Iterable[str], base: str) -> Triple:
    return Triple(*(str(to_iri(p, base)) for p in parts))


def _read_tsv(path: Path, base: str) -> GraphData:
    data = GraphData()
    for number, line in enumerate(_read_text(path).splitlines(), 1):
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
        data.triples.append(_minted(parts, base))
    return data


def _read_csv(path: Path, base: str) -> GraphData:
    data = GraphData()
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    columns = {role: next((header.index(n) for n in names if n in header), None) for role, names in CSV_COLUMNS.items()}
    missing = [role for role, index in columns.items() if index is None]
    if missing:
        raise ParseError(f"header {header} lacks column(s) {missing} (e.g. head,relation,tail)", path=str(path), line=1)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        try:
            parts = [row[columns[role]].strip() for role in ("head", "relation", "tail")]
        except IndexError:
            parts = []
        if len(parts) != 3 or not all(parts):
            raise ParseError(
                f"expected head, relation and tail values, got {row!r}", path=str(path), line=reader.line_num
            )
        data.triples.append(_minted(parts, base))
    return data


def _read_rdf(path: Path, fmt: str) -> GraphData:
    graph = Graph()
    try:
        graph.parse(path, format=fmt)
    except Exception as exc:  # rdflib raises many types; all mean the file did not parse
        raise ParseError(
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, path=str(path)
        ) from exc
    data = GraphData()
    described: set[URIRef] = set()
    for s, p, o in graph:
        if not isinstance(s, URIRef):
            continue
        if p in NON_RELATIONS:
            described.add(s)
        elif isinstance(o, URIRef):
            data.triples.append(Triple(str(s), str(p), str(o)))
    for node in sorted(described):
        label = next((str(graph.value(node, lp)) for lp in LABEL_PREDICATES if graph.value(node, lp) is not None), "")
        data.entities.append(
            Entity(
                id=str(node),
                label=label,
                aliases=tuple(sorted(str(a) for a in graph.objects(node, SKOS.altLabel))),
                types=tuple(sorted(str(c) for c in graph.objects(node, RDF.type) if isinstance(c, URIRef))),
            )
        )
    return data


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise ParseError("binary file, not text", path=str(path))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ParseError(f"not UTF-8 text ({exc.reason})", path=str(path), line=line) from exc


def write_tsv(triples: Iterable[Triple], path: str | os.PathLike) -> Path:
    """Write ``head<TAB>relation<TAB>tail`` lines atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for t in triples:
            out.write(f"{t.head}\t{t.relation}\t{t.tail}\n")
    os.replace(tmp, path)
    return path
