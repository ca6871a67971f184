"""Text to SPARQL or Cypher with a user's own model, checked before it runs, query programs as the fallback.

A stronger model than kgllm's own (a local Hugging Face directory, or any OpenAI-compatible
server through :class:`~kgllm.llm.openai_compat.OpenAICompatibleLM`) is prompted with the
graph's schema (relations and classes with their ids and names, and how the store lays them
out) and asked for one query in the store's language: SPARQL on the rdflib store, Cypher on
the Neo4j store. Before it runs, the query must parse and only read
(:func:`~kgllm.graph.queries.prepare_sparql`: no update, ``SERVICE`` or ``FROM``;
:func:`~kgllm.graph.queries.check_cypher`: no write clause, procedure call or file load, and
no unbounded variable-length path); a query without a ``LIMIT`` gets one. The store runs it
read-only under a time limit and a row limit. A query that is refused, fails or runs past a
limit is not answered from: the question goes to the fallback answerer (query programs), and
the answer's metadata says what the model wrote and why it was not used.

Example::

    lm = OpenAICompatibleLM("http://127.0.0.1:8000/v1")
    answerer = TextToQueryAnswerer(store, lm, fallback=ProgramAnswerer(store, retriever))
    answerer.answer("Which countries border Chad?").metadata["generated_query"]
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from kgllm.exceptions import GraphStoreError, InputError, ModelError, QueryLimitError, QueryRefusedError
from kgllm.graph.base import GraphStore
from kgllm.graph.queries import check_cypher, prepare_sparql
from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.pipelines.base import Answerer
from kgllm.pipelines.programs.compiler import QueryLanguage
from kgllm.pipelines.programs.schema import Schema
from kgllm.types import Answer, Evidence

SOURCE = "text-to-query"
# an answer read from rows a model's query returned has no calibrated confidence: it is shown
# as an answer, but below the programs' and reasoner's confident range
GENERATED_CONFIDENCE = 0.5
TEXT_TO_QUERY_OPTIONS = frozenset({"time_limit", "max_rows"})

_LAYOUTS: dict[QueryLanguage, str] = {
    "sparql": (
        "The graph is RDF. Each fact is a triple <head> <relation> <tail> between IRIs; an entity's "
        "class is rdf:type <class>; its name is rdfs:label. Write one SPARQL SELECT query."
    ),
    "cypher": (
        "The graph is in Neo4j. Every entity is a node (:Entity {id, label, types}) where types is a "
        "list of class ids; every fact is a relationship (:Entity)-[:REL {id: relation id}]->(:Entity). "
        "Write one read-only Cypher query that RETURNs the answer."
    ),
}
_FENCE = re.compile(r"```(?:[a-zA-Z]+)?\s*(.*?)```", re.DOTALL)
_LIMIT = re.compile(r"\bLIMIT\s+\d+\s*;?\s*$", re.IGNORECASE)
# a variable-length path with no upper bound, or one above MAX_PATH_LENGTH, can walk the whole graph
_VARIABLE_LENGTH = re.compile(r"\*\s*(\d*)\s*(\.\.\s*(\d*))?\s*\]")
MAX_PATH_LENGTH = 4


@dataclass(frozen=True)
class TextToQueryConfig:
    """Bounds of a generated query: rows returned, seconds run, tokens the model may write."""

    max_rows: int = 100
    time_limit: float = 10.0
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.time_limit <= 0 or self.max_new_tokens < 1:
            raise InputError("max_rows, time_limit and max_new_tokens must be positive")


def language_of(store: GraphStore) -> QueryLanguage:
    """The query language a model writes for ``store``."""
    if store.supports_cypher:
        return "cypher"
    if store.supports_sparql:
        return "sparql"
    raise GraphStoreError(f"the {store.name} store runs no query language; text-to-query needs SPARQL or Cypher")


def checked_query(text: str, language: QueryLanguage, max_rows: int) -> str:
    """``text`` as it will run: one read-only query, with a ``LIMIT`` when it had none.

    Raises :class:`QueryRefusedError` with the reason otherwise.
    """
    if language == "sparql":
        query = prepare_sparql(text)
        if query.algebra.name != "SelectQuery":
            raise QueryRefusedError(f"only SELECT queries are run, not {query.algebra.name.removesuffix('Query')}")
        return text if _LIMIT.search(text) else f"{text.rstrip()}\nLIMIT {max_rows}"
    text = text.strip().rstrip(";")
    check_cypher(text)
    for found in _VARIABLE_LENGTH.finditer(text):
        low, has_range, high = found.group(1), found.group(2), found.group(3)
        upper = high if has_range else low
        if not upper or int(upper) > MAX_PATH_LENGTH:
            raise QueryRefusedError(
                f"the Cypher query walks paths of unbounded length ({found.group(0)}); at most {MAX_PATH_LENGTH} hops"
            )
    return text if _LIMIT.search(text) else f"{text}\nLIMIT {max_rows}"


def extract_query(generated: str) -> str:
    """The query in a model's reply: the first fenced block, else the whole reply."""
    fenced = _FENCE.search(generated)
    return (fenced.group(1) if fenced else generated).strip()


class TextToQuery:
    """Prompts ``lm`` with the schema of ``store`` and returns the query it writes (not yet checked)."""

    def __init__(self, store: GraphStore, lm: LanguageModel, config: TextToQueryConfig | None = None):
        self.store = store
        self.lm = lm
        self.config = config or TextToQueryConfig()
        self.language = language_of(store)
        self._schema: Schema | None = None

    @property
    def schema(self) -> Schema:
        if self._schema is None:
            self._schema = Schema.from_store(self.store)
        return self._schema

    def prompt(self, question: str) -> str:
        relations = "\n".join(
            f"- {r.id}: {', '.join(r.names)}" for r in sorted(self.schema.relations.values(), key=lambda r: r.id)
        )
        classes = "\n".join(
            f"- {c.id}: {', '.join(c.names)} ({c.size} entities)"
            for c in sorted(self.schema.classes.values(), key=lambda c: c.id)
        )
        return (
            f"{_LAYOUTS[self.language]}\n\nRelations (id: names):\n{relations}\n\nClasses (id: names):\n{classes}\n\n"
            "Find entities by their label, ignoring case. Answer with the query only, in a fenced code block.\n\n"
            f"Question: {question}\n"
        )

    def generate(self, question: str) -> str:
        config = GenerationConfig(max_new_tokens=self.config.max_new_tokens, stop=())
        (reply,) = self.lm.generate([self.prompt(question)], config)[0]
        return extract_query(reply)


class TextToQueryAnswerer:
    """An :class:`~kgllm.pipelines.base.Answerer` that answers from the rows of a model-written query.

    Whatever is not answered that way (a query refused, failed, too slow or too broad, or no
    rows) is answered by ``fallback``, usually a :class:`~.answerer.ProgramAnswerer`; its answer
    carries ``metadata["generated_query"]`` and ``metadata["generated_query_refused"]``.
    """

    def __init__(
        self, store: GraphStore, lm: LanguageModel, fallback: Answerer, config: TextToQueryConfig | None = None
    ):
        self.store = store
        self.writer = TextToQuery(store, lm, config)
        self.fallback = fallback

    def answer(self, question: str, **options: Any) -> Answer:
        """Answer ``question``; ``options``: ``max_rows`` and ``time_limit`` of the generated query."""
        unknown = sorted(set(options) - TEXT_TO_QUERY_OPTIONS)
        if unknown:
            raise InputError(f"unknown text-to-query option(s) {unknown}; known: {sorted(TEXT_TO_QUERY_OPTIONS)}")
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        config = self.writer.config
        max_rows = options.get("max_rows", config.max_rows)
        time_limit = options.get("time_limit", config.time_limit)
        started = time.perf_counter()
        generated = ""
        try:
            generated = self.writer.generate(question)
            text = checked_query(generated, self.writer.language, max_rows)
            rows = self.store.read_query(text, time_limit=time_limit, max_rows=max_rows)
            if not rows:
                raise QueryRefusedError("the query returned no rows")
        except (QueryRefusedError, QueryLimitError, GraphStoreError, ModelError) as error:
            answer = self.fallback.answer(question)
            answer.metadata.update(generated_query=generated, generated_query_refused=str(error))
            return answer
        answer = self._answer(question, text, rows)
        answer.metadata["seconds"] = round(time.perf_counter() - started, 4)
        return answer

    def _answer(self, question: str, text: str, rows: list[dict[str, Any]]) -> Answer:
        values = list(dict.fromkeys(v for row in rows for v in row.values() if v is not None))
        entities = [e for e in (self.store.entity(v) for v in values if isinstance(v, str)) if e is not None]
        known = {e.id: e for e in entities}
        shown = [known[v].label if v in known else str(v) for v in values]
        metadata = {
            "found": True,
            "engine": self.writer.language,
            "generated_query": text,
            "rows": len(rows),
            "query": {"language": self.writer.language, "text": text, "parameters": {}, "ran": True},
        }
        labels = {e.id: e.label for e in entities}
        evidence = Evidence(source=f"{SOURCE}:{self.writer.language}")
        return Answer(question, ", ".join(shown) + ".", entities, evidence, GENERATED_CONFIDENCE, labels, metadata)


__all__ = [
    "TextToQuery",
    "TextToQueryAnswerer",
    "TextToQueryConfig",
    "checked_query",
    "extract_query",
    "language_of",
]
