"""A session: one store, its retriever and language model, and the answerers built over them."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any

from kgllm.exceptions import InputError
from kgllm.graph import GraphStore
from kgllm.llm import LanguageModel
from kgllm.pipelines.base import Answerer, StreamingAnswerer
from kgllm.pipelines.enhance import READER_TEMPLATE, GenerationAnswerer
from kgllm.pipelines.enhance.claims import ClaimChecker, ClaimReport
from kgllm.pipelines.programs import ProgramAnswerer, route
from kgllm.pipelines.programs.answerer import PROGRAM_OPTIONS
from kgllm.pipelines.synergize import PathReasoner, ReasonerConfig
from kgllm.retrieval.retriever import KGRetriever
from kgllm.settings import Settings
from kgllm.types import Answer, Entity, Evidence, Triple

log = logging.getLogger(__name__)

MAX_QUESTION_ENTITIES = 8  # more than any program combines, or a path search can follow in a time budget

# the garbage collector's generation thresholds once warmed up (Python's: 700, 10, 10): young
# collections every 50,000 new objects, old ones rarely, so a long search is not stopped for them
GC_THRESHOLDS = (50_000, 20, 100)


class Session:
    """A store, its retriever and a language model, with the answerers built over them.

    ``answerers`` maps a mode name to an :class:`~kgllm.pipelines.base.Answerer`; ``"paths"``
    (relation-path reasoning), ``"programs"`` (query programs: counts, yes/no, set operations,
    superlatives, comparisons) and ``"generate"`` (retrieved facts injected into the prompt, the
    answer written by the model with ``[n]`` citations) are always there. Generate mode writes with
    ``reader`` and :data:`~kgllm.pipelines.enhance.READER_TEMPLATE` when given (a function of the
    answerer returning kgllm's own reader model, loaded on first use), else with ``lm`` and the
    instruction template.
    A ``planner`` (``kgllm train planner``) ranks the path reasoner's plans in place of ``lm``.
    """

    def __init__(
        self,
        store: GraphStore,
        retriever: KGRetriever,
        lm: LanguageModel | None,
        settings: Settings,
        reasoner_config: ReasonerConfig | None = None,
        reader: Callable[[GenerationAnswerer], LanguageModel] | None = None,
        planner: LanguageModel | None = None,
    ):
        self.store = store
        self.retriever = retriever
        self.lm = lm
        self.settings = settings
        self.reasoner = PathReasoner(store, retriever, planner or lm, reasoner_config or reasoner_config_from(settings))
        self.answerers: dict[str, Answerer] = {
            "paths": self.reasoner,
            "programs": ProgramAnswerer(store, retriever),
            "generate": (
                GenerationAnswerer(store, retriever, reader, template=READER_TEMPLATE, paths=self.reasoner)
                if reader is not None
                else GenerationAnswerer(store, retriever, lm, paths=self.reasoner)
            ),
        }
        self._claim_checker: ClaimChecker | None = None

    def warm_up(self) -> int:
        """Get a long-lived process ready for many questions; returns the relation-path phrases encoded.

        Builds the label index, encodes the relation-path phrases of a few entities of each class
        (:meth:`PathReasoner.warm_up`), then keeps everything loaded so far out of the garbage
        collector's walks and collects less often: a full collection holds the interpreter while it
        visits every object, and with a graph of a million triples loaded eight of them took 0.5 s
        each, about a third of a hundred questions' time.
        """
        self.retriever.label_index  # noqa: B018 - built here, not by the first question
        self.retriever.encoder.encode_query("warm up")
        started = time.perf_counter()
        phrases = self.reasoner.warm_up()
        log.info("encoded %d relation-path phrases in %.1f s", phrases, time.perf_counter() - started)
        gc.collect()
        gc.freeze()  # loaded once and kept: never garbage
        gc.set_threshold(*GC_THRESHOLDS)
        return phrases

    def ask(self, question: str, mode: str = "auto", **options: Any) -> Answer:
        """Answer ``question`` from the graph, with the evidence that supports the answer.

        ``mode`` picks the answerer (``"auto"``: :func:`~kgllm.pipelines.programs.route` sends
        counts, yes/no, set operations, superlatives and comparisons to ``"programs"`` and
        relation chains to ``"paths"``; or one of :attr:`answerers`);
        ``options`` are that answerer's per-call settings, e.g. ``max_hops=3`` or ``beam_width=5``.

        Example: ``session.ask("Which countries border Chad?", max_hops=1)``.
        """
        if mode == "auto":
            return self._ask_auto(question, **options)
        if mode not in self.answerers:
            raise InputError(
                f"unknown answer mode {mode!r}; choose auto or one of: {', '.join(sorted(self.answerers))}"
            )
        return self.answerers[mode].answer(question, **options)

    def ask_stream(self, question: str, mode: str = "auto", **options: Any) -> Iterator[str | Answer]:
        """As :meth:`ask`, handing out the answer as it is written: text deltas (strings) while the
        answerer of ``mode`` writes (when it can stream, :class:`~kgllm.pipelines.base.StreamingAnswerer`),
        then the final :class:`~kgllm.types.Answer`. An answerer that cannot stream yields the Answer only.
        Closing the iterator stops the work.

        Example::

            for item in session.ask_stream("Tell me about Chad", mode="generate"):
                print(item if isinstance(item, str) else "\\n" + str(item.evidence.triples), end="")
        """
        answerer = self.answerers.get(mode)
        if isinstance(answerer, StreamingAnswerer):
            yield from answerer.stream(question, **options)
        else:
            yield self.ask(question, mode, **options)

    def _ask_auto(self, question: str, **options: Any) -> Answer:
        """Counts, yes/no, set operations, superlatives and comparisons go to programs, chains to paths.

        Each answerer gets the options it knows (a limit of the other one does not apply to it); an
        option neither knows is an error. A list question that mentions several entities (no shape
        cue) is a program too: a path from one of them would leave the others out, so when the
        program parser declines it, the answer is its refusal. A question that names more than
        ``MAX_QUESTION_ENTITIES`` entities is refused at once: no program combines that many, and a
        path search from only some of them would answer a different question.
        """
        path_options = {f.name for f in fields(ReasonerConfig)}
        unknown = sorted(set(options) - path_options - PROGRAM_OPTIONS)
        if unknown:
            raise InputError(f"unknown option(s) {unknown}; known: {sorted(path_options | PROGRAM_OPTIONS)}")
        mode = route(question)
        links = self.retriever.link(question)
        if len(links) > MAX_QUESTION_ENTITIES:
            return _too_many_entities(question, [link.entity for link in links])
        if mode == "paths":
            mode = route(question, len(links))
        programs = self.answerers.get("programs")
        if mode == "paths" and isinstance(programs, ProgramAnswerer):
            # a chain search ignores a word it cannot follow: "landlocked" in "Which African countries are landlocked?"
            refusal = programs.unmapped_modifier_refusal(question)
            if refusal is not None:
                return refusal
        known = PROGRAM_OPTIONS if mode == "programs" else path_options
        return self.answerers[mode].answer(question, **{k: v for k, v in options.items() if k in known})

    @property
    def claim_checker(self) -> ClaimChecker:
        """The checker of claims against this session's graph (built on first use, rebuilt after :meth:`add`)."""
        if self._claim_checker is None:
            self._claim_checker = ClaimChecker(self.store, self.retriever)
        return self._claim_checker

    def check(self, text: str) -> ClaimReport:
        """Each claim of ``text`` marked supported, contradicted or not in the graph, with its evidence.

        Example: ``session.check("Chad borders Niger and lies in Western Africa.").claims[1].status``.
        """
        return self.claim_checker.check(text)

    def add(self, triples: Iterable[Triple], entities: Iterable[Entity] = ()) -> int:
        """Add facts to the store and bring the indexes in step; returns the number of new triples."""
        added = self.store.add(triples, entities)
        self.retriever.refresh()
        self._claim_checker = None  # what is single-valued, and which names exist, may have changed
        return added

    def close(self) -> None:
        """Close the store (and its server connection)."""
        self.store.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _too_many_entities(question: str, entities: list[Entity]) -> Answer:
    named = ", ".join(e.label for e in entities[:5])
    reason = (
        f"the question names {len(entities)} entities of the graph ({named}, ...), and kgllm answers questions "
        f"about at most {MAX_QUESTION_ENTITIES}; ask about fewer at a time"
    )
    metadata = {"found": False, "reason": reason, "entities_named": len(entities)}
    text = f"I cannot answer this from the graph: {reason}."
    return Answer(question, text, [], Evidence(source="auto:refused"), 0.0, {}, metadata)


def reasoner_config_from(settings: Settings) -> ReasonerConfig:
    """The path reasoner's limits and weights as the settings give them."""
    return ReasonerConfig(
        max_hops=settings.max_hops,
        max_fanout=settings.max_fanout,
        lm_weight=settings.lm_weight,
        beam_width=settings.beam_width,
    )
