"""An MCP (Model Context Protocol) server over a kgllm session, so agents can use the graph as tools.

Tools: ``ask`` (an answer with the graph paths behind it), ``search`` (entities by name, closest
facts), ``entity`` (names, classes and facts of one entity, with provenance for derived facts),
``neighbours`` (the facts around an entity, optionally of one relation) and ``complete``
(predicted missing heads or tails, KG completion). Every tool returns one JSON object; a bad
input (an empty question, an unknown entity) is a tool error that says what to send instead.

Completion never trains inside a tool call, which takes minutes on a CPU: the server uses the
completer cached for this graph and configuration, trained by ``kgllm mcp --train-completion``
before it serves (or by ``kgllm complete`` with the same ``--scorers`` and ``--kge-seconds``);
without one, ``complete`` answers at once with an error saying how to train it.

Example::

    session = kgllm.connect(use_model=False)
    tools = GraphTools(session)                   # the tools as plain methods
    tools.ask("Which countries border Chad?")["entities"]
    serve(create_server(tools), "stdio")          # what `kgllm mcp` does

Needs the MCP SDK: ``pip install "kgllm[mcp]"``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import Field
from rapidfuzz.distance import DamerauLevenshtein

from kgllm.exceptions import ConfigurationError, EntityNotFoundError, InputError, KGLLMError, MissingDependencyError
from kgllm.graph.labels import normalize
from kgllm.retrieval.linking import entity_of_label_key, fold
from kgllm.server.graph import answer_json, entity_json
from kgllm.server.limits import MAX_QUESTION_CHARS, MAX_RESULTS
from kgllm.session import Session
from kgllm.types import Entity, Triple

if TYPE_CHECKING:
    from kgllm.pipelines.completion.completer import Completer
    from kgllm.pipelines.completion.jobs import KnownAnswers, NameResolver

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError('kgllm.integrations.mcp needs the MCP SDK: pip install "kgllm[mcp]"') from exc

log = logging.getLogger(__name__)

TRANSPORTS = ("stdio", "http")
HTTP_PATH = "/mcp"
CLOSEST = 5  # names offered when an entity is not found
DEFAULT_SCORERS = ("rules", "lm", "encoder")  # as `kgllm complete`
DEFAULT_KGE_SECONDS = 60.0

_T = TypeVar("_T")


def completion_config(scorers: Iterable[str] = DEFAULT_SCORERS, kge_seconds: float = DEFAULT_KGE_SECONDS):
    """The ``CompletionConfig`` that ``kgllm complete --scorers ... --kge-seconds ...`` trains,
    so the two share one cached completer."""
    from kgllm.pipelines.completion.completer import CompletionConfig
    from kgllm.pipelines.completion.kge import KGEConfig

    return CompletionConfig(kge=KGEConfig(seconds=kge_seconds), scorers=tuple(scorers))


class GraphTools:
    """What the MCP tools do, over one session, as plain methods returning JSON-ready dicts.

    Calls are serialized by a lock (stores, indexes and models are not all thread-safe).
    Errors are :class:`~kgllm.exceptions.KGLLMError`: ``InputError`` for a bad argument,
    ``EntityNotFoundError`` naming the closest entities, ``ConfigurationError`` when
    completion has no trained model. ``completion`` is the ``CompletionConfig`` of ``complete``
    (default: :func:`completion_config`).
    """

    def __init__(self, session: Session, completion=None):
        self.session = session
        self.store = session.store
        self.completion_config = completion if completion is not None else completion_config()
        self.lock = threading.Lock()
        self._completion: tuple[Completer, KnownAnswers, NameResolver] | None = None

    # ------------------------------------------------------------------ tools
    def ask(self, question: str, max_hops: int | None = None, max_paths: int = 20) -> dict[str, Any]:
        """The answer, its entities, confidence and evidence paths (as labelled facts); ``found`` is
        False when the graph holds no answer (``facts`` are then the closest facts, as context)."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty; ask in plain language, e.g. 'Which countries border Chad?'")
        if len(question) > MAX_QUESTION_CHARS:
            raise InputError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        _check_range("max_hops", max_hops, 1, 4, optional=True)
        _check_range("max_paths", max_paths, 1, MAX_RESULTS)
        options: dict[str, Any] = {} if max_hops is None else {"max_hops": max_hops}
        with self.lock:
            answer = self.session.ask(question, **options)
        shaped = answer_json(answer, max_paths)
        shaped.pop("graph", None)  # nodes and edges for drawing; the paths say the same to an agent
        metadata = shaped.pop("metadata", {})
        return {
            "found": bool(answer.entities),
            **shaped,
            "plan": metadata.get("path", ""),
            "considered": metadata.get("considered", []),
        }

    def search(self, text: str, k: int = 10) -> dict[str, Any]:
        """Entities whose name contains ``text`` (then those with the most similar names), and the
        ``k`` facts closest to ``text``."""
        text = _check_text("text", text)
        _check_range("k", k, 1, MAX_RESULTS)
        with self.lock:
            named = self.store.search(text, k)
            similar = self._similar_entities(text, k - len(named), skip={e.id for e in named}) if len(named) < k else []
            facts = self.session.retriever.search_facts(text, k)
            return {
                "entities": [{**entity_json(e), "match": "name"} for e in named]
                + [{**entity_json(e), "match": "similar name", "score": round(s, 4)} for e, s in similar],
                "facts": [{**self._fact(t), "score": round(s, 4)} for t, s in facts],
            }

    def entity(self, name_or_id: str, limit: int = 50) -> dict[str, Any]:
        """One entity: id, label, other names, classes, and up to ``limit`` of its facts (both
        directions); a derived (predicted or extracted) fact comes with its provenance."""
        _check_range("limit", limit, 1, MAX_RESULTS)
        with self.lock:
            found = self._resolve(name_or_id)
            triples = self.store.neighbors(found.id, "both", limit=limit + 1)
            return {
                **entity_json(found),
                "type_labels": [self.store.label(t) for t in found.types],
                "facts": self._facts(triples[:limit]),
                "more": len(triples) > limit,
            }

    def neighbours(
        self,
        name_or_id: str,
        relation: str | None = None,
        direction: Literal["out", "in", "both"] = "both",
        limit: int = 50,
    ) -> dict[str, Any]:
        """The facts touching an entity, optionally only those of one relation (by label or id)."""
        _check_range("limit", limit, 1, MAX_RESULTS)
        if direction not in ("out", "in", "both"):
            raise InputError(f"direction must be 'out', 'in' or 'both', not {direction!r}")
        with self.lock:
            found = self._resolve(name_or_id)
            relation_id = None if relation is None or not relation.strip() else self._relation(relation, found.id)
            triples = self.store.neighbors(found.id, direction, relation=relation_id, limit=limit + 1)
            return {
                "entity": entity_json(found),
                "relation": None if relation_id is None else self.store.label(relation_id),
                "direction": direction,
                "facts": self._facts(triples[:limit]),
                "more": len(triples) > limit,
            }

    def complete(
        self, relation: str, head: str | None = None, tail: str | None = None, top_k: int = 10
    ) -> dict[str, Any]:
        """Predicted missing tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)``,
        best first, none already in the graph; nothing is written."""
        from kgllm.pipelines.completion.jobs import WILDCARD, predict_batch

        _check_range("top_k", top_k, 1, 100)
        head = None if head is None or head.strip() in ("", WILDCARD) else head
        tail = None if tail is None or tail.strip() in ("", WILDCARD) else tail
        if (head is None) == (tail is None):
            raise InputError("give exactly one of head and tail: the other is what is predicted")
        relation = _check_text("relation", relation)
        with self.lock:
            named = head if head is not None else tail
            assert named is not None  # exactly one of them is given (checked above)
            anchor = self._resolve(named)
            relation_id = self._relation(relation)
            completer, known, resolver = self._completer()
            fields = (anchor.id, relation_id, WILDCARD) if head is not None else (WILDCARD, relation_id, anchor.id)
            [record] = predict_batch([resolver.query(1, fields)], completer, known, top_k)
        if record.get("error"):
            raise InputError(f"cannot complete this query: {record['error']}")
        query = [anchor.label, self.store.label(relation_id), "?"]
        return {
            "model": completer.model_name,
            "query": query if head is not None else query[::-1],
            "predictions": [
                {
                    "fact": p["labels"],
                    "ids": [p["head"], p["relation"], p["tail"]],
                    "score": round(p["score"], 4),
                    "scores": p.get("provenance", {}).get("scores", {}),
                }
                for p in record["predictions"]
            ],
        }

    def train_completion(self, progress: bool = False) -> str:
        """Load this graph's completer, training and caching it first when none is cached; its name."""
        with self.lock:
            completer, _, _ = self._completer(train=True, progress=progress)
        return completer.model_name

    # -------------------------------------------------------------- internals
    def _completer(self, train: bool = False, progress: bool = False):
        from kgllm.pipelines.completion.jobs import KnownAnswers, NameResolver, cached_completer, is_completer_cached

        if self._completion is None:
            settings = self.session.settings
            if not train and not is_completer_cached(self.store, self.completion_config, settings):
                config = self.completion_config
                options = f"--scorers {','.join(config.scorers) or 'none'} --kge-seconds {config.kge.seconds:g}"
                raise ConfigurationError(
                    "no completion model is trained for this graph yet; training takes minutes, so a tool call "
                    "does not do it. Add --train-completion to the server's command and restart it "
                    f"(`kgllm mcp ... --train-completion {options}`: trains once before serving, then cached), "
                    "or train it with `kgllm complete` and the same --graph, --scorers and --kge-seconds"
                )
            completer = cached_completer(self.store, self.completion_config, settings, progress=progress)
            vocabulary = completer.kge.vocabulary
            self._completion = completer, KnownAnswers(self.store, vocabulary), NameResolver(self.store, vocabulary)
        return self._completion

    def _resolve(self, name_or_id: str) -> Entity:
        """The entity with this id, or the one entity with this label or alias."""
        name = _check_text("name_or_id", name_or_id)
        found = self.store.entity(name)
        if found is not None:
            return found
        matches = self.store.find_by_label(name)
        if len(matches) == 1:
            return matches[0]
        if matches:
            choices = "; ".join(f"{e.label} (id {e.id})" for e in matches[:CLOSEST])
            raise InputError(f"{name!r} names {len(matches)} entities: {choices}; pass one of the ids")
        closest = self._closest_names(name)
        hint = f"; closest names: {', '.join(closest)}" if closest else ""
        raise EntityNotFoundError(f"no entity named {name!r} in the graph{hint}")

    def _closest_names(self, name: str) -> list[str]:
        """Labels of the entities whose name contains ``name``, then of the nearest in the label index,
        spelling first ("Untied Kingdom" -> United Kingdom)."""
        named = self.store.search(name, CLOSEST)
        nearest = [e for e, _ in self._similar_entities(name, 4 * CLOSEST, skip={e.id for e in named})]
        key = fold(name)
        nearest.sort(key=lambda e: -max(DamerauLevenshtein.normalized_similarity(key, fold(n)) for n in _names(e)))
        return list(dict.fromkeys(e.label or e.id for e in [*named, *nearest]))[:CLOSEST]

    def _similar_entities(self, text: str, k: int, skip: set[str]) -> list[tuple[Entity, float]]:
        """Entities whose label or alias is nearest to ``text`` in the entity-label index."""
        index = self.session.retriever.label_index
        if not len(index):
            return []
        hits = index.search(self.session.retriever.encoder.encode([text]), 2 * k + len(skip))[0]  # aliases repeat
        found: dict[str, float] = {}
        for key, score in hits:
            entity_id = entity_of_label_key(key)
            if entity_id not in skip and entity_id not in found:
                found[entity_id] = score
        entities = [(self.store.entity(entity_id), score) for entity_id, score in found.items()]
        return [(e, s) for e, s in entities if e is not None][:k]

    def _relation(self, name: str, entity_id: str | None = None) -> str:
        """A relation id from its id, label or alias (case and spaces ignored); unknown: an error naming
        the relations to choose from."""
        relations = self.store.relations()
        if name in relations:
            return name
        key = _squashed(name)  # "friendOf" names "friend of"
        for relation in relations:
            described = self.store.describe(relation)
            if key in {_squashed(n) for n in (described.label, *described.aliases) if n}:
                return relation
        if entity_id is not None:
            relations = sorted({t.relation for t in self.store.neighbors(entity_id, "both")})
        choices = ", ".join(sorted({self.store.label(r) for r in relations}))
        where = "this entity's facts" if entity_id is not None else "the graph"
        raise InputError(f"unknown relation {name!r}; the relations of {where}: {choices}")

    def _facts(self, triples: list[Triple]) -> list[dict[str, Any]]:
        derived = bool(self.store.sources())  # only then can a fact be anything but asserted
        return [self._fact(t, derived and not self.store.is_asserted(t)) for t in triples]

    def _fact(self, triple: Triple, derived: bool = False) -> dict[str, Any]:
        label = self.store.label
        fact: dict[str, Any] = {
            "fact": [label(triple.head), label(triple.relation), label(triple.tail)],
            "ids": triple.as_list(),
        }
        if derived:
            fact["derived"] = True
            fact["provenance"] = [
                {
                    "source": p.source,
                    "method": p.method,
                    "model": p.model,
                    "score": p.score,
                    "created": p.created,
                    **({"span": list(p.span)} if p.span else {}),
                }
                for p in self.store.provenance(triple)
            ]
        return fact


def _squashed(name: str) -> str:
    return "".join(normalize(name).split())


def _names(entity: Entity) -> list[str]:
    return [n for n in (entity.label, *entity.aliases) if n] or [entity.id]


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} is empty")
    if len(value) > 2000:
        raise InputError(f"{name} is longer than 2000 characters")
    return value.strip()


def _check_range(name: str, value: int | None, low: int, high: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}, not {value!r}")


def _as_tool_error(call: Callable[[], _T]) -> _T:
    """Run a tool body; kgllm's own errors reach the agent as tool errors with their message."""
    try:
        return call()
    except KGLLMError as exc:
        raise ToolError(" ".join(str(exc).split())) from exc


INSTRUCTIONS = (
    "Tools over a knowledge graph. `ask` answers a question with the graph paths that support it; "
    "`search` finds entities by name and the facts closest to a text; `entity` and `neighbours` show an "
    "entity's facts (by name or id); `complete` predicts missing facts. Answers come only from the graph: "
    "when `ask` says found=false, the graph holds no answer."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Name = Annotated[str, Field(description="An entity's name (label or alias, any case) or its id (an IRI).")]
Limit = Annotated[int, Field(ge=1, le=MAX_RESULTS, description="Most facts returned.")]


def create_server(tools: GraphTools | Session, name: str = "kgllm") -> MCPServer:
    """The MCP server whose tools are ``tools`` (or :class:`GraphTools` over a session, with the
    default completion configuration). Run it with :func:`serve`."""
    from kgllm import __version__

    tools = tools if isinstance(tools, GraphTools) else GraphTools(tools)
    server = MCPServer(name, version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(annotations=READ_ONLY)
    def ask(
        question: Annotated[str, Field(description="A question in plain language.", max_length=MAX_QUESTION_CHARS)],
        max_hops: Annotated[
            int | None, Field(ge=1, le=4, description="Longest relation path followed (default: the server's).")
        ] = None,
    ) -> dict[str, Any]:
        """Answer a question from the knowledge graph. Returns `found`, the `answer` text, its `entities`,
        `confidence` (0-1), and `evidence`: the graph paths behind the answer, each a list of
        [head, relation, tail] facts. With found=false the graph holds no answer and `facts` are only
        the closest facts, as context."""
        return _as_tool_error(lambda: tools.ask(question, max_hops))

    @server.tool(annotations=READ_ONLY)
    def search(
        text: Annotated[str, Field(description="A name or a few words.", max_length=2000)],
        k: Annotated[int, Field(ge=1, le=MAX_RESULTS, description="Most entities and facts returned.")] = 10,
    ) -> dict[str, Any]:
        """Find entities by name (those whose name contains the text, then those with the most similar
        names) and the facts closest in meaning to the text."""
        return _as_tool_error(lambda: tools.search(text, k))

    @server.tool(annotations=READ_ONLY)
    def entity(name_or_id: Name, limit: Limit = 50) -> dict[str, Any]:
        """One entity: its id, label, other names (aliases), classes, and its facts in both directions.
        A derived fact (predicted or extracted, not asserted) comes with its provenance. An unknown name
        is an error that lists the closest names."""
        return _as_tool_error(lambda: tools.entity(name_or_id, limit))

    @server.tool(annotations=READ_ONLY)
    def neighbours(
        name_or_id: Name,
        relation: Annotated[
            str | None, Field(description="Only facts of this relation (its label, e.g. 'neighbor of', or id).")
        ] = None,
        direction: Annotated[
            Literal["out", "in", "both"],
            Field(description="'out': the entity is the head; 'in': the tail; 'both'."),
        ] = "both",
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """The facts adjacent to an entity, as [head, relation, tail] labels with their ids; `more` says
        whether the limit cut the list."""
        return _as_tool_error(lambda: tools.neighbours(name_or_id, relation, direction, limit))

    @server.tool(annotations=READ_ONLY)
    def complete(
        relation: Annotated[str, Field(description="The relation (label or id), e.g. 'neighbor of'.")],
        head: Annotated[str | None, Field(description="The known head; leave out to predict heads.")] = None,
        tail: Annotated[str | None, Field(description="The known tail; leave out to predict tails.")] = None,
        top_k: Annotated[int, Field(ge=1, le=100, description="Predictions returned.")] = 10,
    ) -> dict[str, Any]:
        """Predict missing facts (KG completion): the likeliest tails of (head, relation, ?) or heads of
        (?, relation, tail) that the graph does not already state, best first, with scores. Give
        exactly one of head and tail. Predictions are guesses from the graph's patterns, not facts.
        Fails at once with instructions when no completion model is trained for this graph."""
        return _as_tool_error(lambda: tools.complete(relation, head, tail, top_k))

    return server


def serve(
    server: MCPServer, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None
) -> None:
    """Serve until interrupted: over stdin/stdout (``"stdio"``), or streamable HTTP at
    ``http://host:port/mcp`` (``"http"``), where ``api_key`` makes every request need
    ``Authorization: Bearer <key>``."""
    if transport == "stdio":
        server.run("stdio")
        return
    if transport != "http":
        raise ConfigurationError(f"unknown MCP transport {transport!r}; choose {' or '.join(TRANSPORTS)}")
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    uvicorn.run(BearerKey(app, api_key) if api_key else app, host=host, port=port, log_level="warning")


class BearerKey:
    """ASGI middleware: an HTTP request without ``Authorization: Bearer <key>`` gets 401."""

    def __init__(self, app, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            sent = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(sent, self.expected):
                from starlette.responses import JSONResponse

                response = JSONResponse(
                    {"error": {"message": "missing or wrong API key: send 'Authorization: Bearer <key>'"}},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
