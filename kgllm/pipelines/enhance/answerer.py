"""``GenerationAnswerer``: retrieved facts injected into a prompt, the answer written by a model that cites them.

Answering is two steps around the model call, so that a streaming caller can run the same two
steps around a token stream:

- :meth:`GenerationAnswerer.prepare`: fuse the retrieved facts (:mod:`.retrieval`), keep as many
  as the model's context holds (best first; the question is never cut), number them and fill the
  template. A reasoner's walk is one numbered line, from the question's entity to its answers, the
  nodes each step reaches listed together: ``[1] Chad > neighbor of > Niger, Libya > located in >
  Western Africa, Northern Africa.`` (``<`` where facts are walked against their direction:
  ``Chad < neighbor of < Libya`` is "Libya neighbor of Chad");
- :meth:`GenerationAnswerer.finish`: read the answer's items and ``[n]`` citations back, map the
  cited facts to triples (and to paths from the question's entities where retrieved facts chain),
  and link each named item to an entity.

When retrieval finds nothing, the answerer says so and does not call the model, unless
``closed_book=True``: then the model answers from what it learnt alone, and the answer is marked
``metadata["closed_book"] = True``, with no evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from kgllm.exceptions import InputError, ModelOutputError
from kgllm.graph.base import GraphStore
from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.pipelines.base import Answerer
from kgllm.pipelines.enhance.claims import ClaimChecker, ClaimStatus
from kgllm.pipelines.enhance.prompt import (
    INSTRUCTED_TEMPLATE,
    NO_ANSWER,
    AnswerItem,
    CitationGrammar,
    ParsedAnswer,
    PromptTemplate,
    number_facts,
    parse_answer,
)
from kgllm.pipelines.enhance.retrieval import FUSION_OPTIONS, FusionConfig, FusionRetriever, RankedFact, Retrieved
from kgllm.retrieval.retriever import KGRetriever, walks_from
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple

CLOSED_BOOK_TEMPLATE = PromptTemplate("Question: {question}\nAnswer:")
"""No facts: the question as kgllm's own model is trained on it."""

SOURCE = "generate"
GENERATE_OPTIONS = FUSION_OPTIONS | {
    "closed_book",
    "max_new_tokens",
    "context_tokens",
    "constrained",
    "strict",
    "time_limit",
}
CHARS_PER_TOKEN = 4
"""Estimate of a token's length for models whose tokenizer is not local (a served model)."""


@dataclass
class PreparedPrompt:
    """What :meth:`GenerationAnswerer.prepare` built: the numbered facts, the prompt and its limits.

    ``refusal`` is set (and ``prompt`` empty) when there is nothing to generate from.
    """

    question: str
    facts: list[RankedFact]
    fact_texts: list[str]
    prompt: str
    config: GenerationConfig
    retrieved: Retrieved | None = None
    closed_book: bool = False
    trimmed: int = 0
    """Facts retrieved but left out to fit the model's context."""
    refusal: str | None = None
    prompt_tokens: int = 0
    model: str = ""
    """Name of the model the prompt is for."""
    constraint: CitationGrammar | None = None
    """For a local model: the answer is held to names of the numbered facts' entities, each citing its fact."""
    strict: bool = False
    """Refuse an answer with a claim or a name that the graph does not support, instead of flagging it."""
    started: float = field(default_factory=time.perf_counter)
    deadline: float | None = None
    """``time.perf_counter()`` past which the answer is cut (from the ``time_limit`` option)."""

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline


class GenerationAnswerer:
    """Answers in the model's words from numbered graph facts, citing them as ``[n]``.

    ``lm`` is any :class:`~kgllm.llm.base.LanguageModel`, or a function of this answerer that returns
    one on first use (kgllm's reader model is trained, the first time it is needed, on the prompts
    this answerer builds). ``template`` must take ``facts`` and ``question``;
    :data:`~kgllm.pipelines.enhance.prompt.INSTRUCTED_TEMPLATE` suits instruction-following models,
    :data:`~kgllm.pipelines.enhance.prompt.READER_TEMPLATE` kgllm's own. ``context_tokens`` bounds
    prompt plus answer (default: the model's position limit for a local model, else no bound but
    ``k``). ``paths`` (a relation-path answerer) adds the facts of the paths it walks to the fused
    lists.

    Example::

        answerer = GenerationAnswerer(store, retriever, lm)
        answer = answerer.answer("Tell me about Chad")
        answer.metadata["facts"], answer.metadata["citations"]
    """

    def __init__(
        self,
        store: GraphStore,
        retriever: KGRetriever,
        lm: LanguageModel | Callable[[GenerationAnswerer], LanguageModel] | None,
        template: PromptTemplate = INSTRUCTED_TEMPLATE,
        fusion: FusionConfig | None = None,
        max_new_tokens: int = 160,
        context_tokens: int | None = None,
        paths: Answerer | None = None,
    ):
        if set(template.inputs) != {"facts", "question"}:
            raise InputError(f"the answer template must take facts and question, it takes {template.inputs}")
        self.store = store
        self.retriever = retriever
        self._lm = lm
        self.template = template
        self.fusion = fusion or FusionConfig()
        self.max_new_tokens = max_new_tokens
        self.context_tokens = context_tokens
        self.paths = paths
        self._claims: ClaimChecker | None = None

    @property
    def lm(self) -> LanguageModel:
        """The model (loaded on first use when given as a function)."""
        if self._lm is None:
            raise InputError("generate mode needs a language model; connect with use_model=True or pass model=...")
        if not isinstance(self._lm, LanguageModel):
            self._lm = self._lm(self)
        return self._lm

    def with_model(self, lm: LanguageModel) -> GenerationAnswerer:
        """An answerer that retrieves, fits and numbers facts as this one does, writing with ``lm``."""
        return GenerationAnswerer(
            self.store,
            self.retriever,
            lm,
            self.template,
            self.fusion,
            self.max_new_tokens,
            self.context_tokens,
            self.paths,
        )

    # ------------------------------------------------------------------ the three steps
    def answer(self, question: str, **options: Any) -> Answer:
        """Retrieve, inject, generate, cite: ``prepare`` -> ``lm.generate`` -> ``finish``.

        ``options``: any :class:`~kgllm.pipelines.enhance.retrieval.FusionConfig` field (``k``,
        ``hops``, ``rewrites``, ...), ``closed_book``, ``max_new_tokens``, ``context_tokens`` and
        ``constrained`` (a local model writes only names of the numbered facts' entities, each citing
        a fact that holds it; default: on for models that support constraints) and ``time_limit``
        (seconds for retrieval and generation; an answer not written in time is refused, with
        ``metadata["cut"]``).
        """
        prepared = self.prepare(question, **options)
        if prepared.refusal is not None or prepared.expired():
            return self.finish(prepared, "")
        generated = self.lm.generate([prepared.prompt], prepared.config, constraint=prepared.constraint)
        return self.finish(prepared, generated[0][0])

    def stream(self, question: str, **options: Any) -> Iterator[str | Answer]:
        """As :meth:`answer`, handing out the text as the model writes it, then the answer:
        ``prepare`` -> ``lm.stream`` -> ``finish``."""
        prepared = self.prepare(question, **options)
        pieces: list[str] = []
        if prepared.refusal is None and not prepared.expired():
            for piece in self.lm.stream(prepared.prompt, prepared.config, constraint=prepared.constraint):
                pieces.append(piece)
                yield piece
        yield self.finish(prepared, "".join(pieces))

    def prepare(self, question: str, **options: Any) -> PreparedPrompt:
        """The numbered facts and the prompt for ``question`` (see :meth:`answer` for ``options``)."""
        unknown = sorted(set(options) - GENERATE_OPTIONS)
        if unknown:
            raise InputError(f"unknown generate option(s) {unknown}; known: {sorted(GENERATE_OPTIONS)}")
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        started = time.perf_counter()
        time_limit = options.pop("time_limit", None)
        deadline = started + float(time_limit) if time_limit is not None else None
        closed_book = bool(options.pop("closed_book", False))
        strict = bool(options.pop("strict", False))
        constrained = bool(options.pop("constrained", True))
        context_option = options.pop("context_tokens", self.context_tokens)
        max_new_option = options.pop("max_new_tokens", None)
        if closed_book:
            config = GenerationConfig(
                max_new_tokens=max_new_option or self.max_new_tokens, stop=("\n",), max_seconds=_left(deadline)
            )
            prompt = CLOSED_BOOK_TEMPLATE.format(question=question.strip())
            return PreparedPrompt(
                question,
                [],
                [],
                prompt,
                config,
                closed_book=True,
                model=self.lm.name,
                strict=strict,
                started=started,
                deadline=deadline,
            )
        retrieved = self._fusion_retriever().retrieve(question, **options)
        if not retrieved.facts:  # said before any model is loaded
            refusal = "no fact in the graph bears on this question" + (
                "" if retrieved.links else " (it names nothing the graph knows)"
            )
            return PreparedPrompt(question, [], [], "", GenerationConfig(), retrieved, refusal=refusal, started=started)
        if deadline is not None and time.perf_counter() >= deadline:  # no time left to write: finish cuts it
            return PreparedPrompt(
                question, [], [], "", GenerationConfig(), retrieved, started=started, deadline=deadline
            )
        context = context_option or self._model_context()
        # a small context keeps two thirds of itself for the facts, less where a walk's answers need more:
        # a cited walk is named whole, so its longest list gets room, up to half the context
        max_new = min(self.max_new_tokens, context // 3 if context else self.max_new_tokens)
        whole_walk = self._walk_answer_tokens(retrieved.facts)
        max_new = int(max_new_option or max(max_new, min(whole_walk, context // 2) if context else whole_walk))
        config = GenerationConfig(max_new_tokens=max_new, stop=("\n",), max_seconds=_left(deadline))
        texts = self._verbalize(retrieved.facts)
        kept, tokens = self._fit(question.strip(), texts, context, max_new)
        if not kept:
            refusal = f"none of the retrieved facts fits the model's context of {context} tokens beside the question"
            return PreparedPrompt(question, [], [], "", config, retrieved, refusal=refusal, started=started)
        prompt = self.template.format(facts=number_facts(texts[:kept]), question=question.strip())
        constraint = self._grammar(retrieved.facts[:kept]) if constrained and self.lm.supports_constraints else None
        return PreparedPrompt(
            question,
            retrieved.facts[:kept],
            texts[:kept],
            prompt,
            config,
            retrieved,
            trimmed=len(texts) - kept,
            prompt_tokens=tokens,
            model=self.lm.name,
            constraint=constraint,
            strict=strict,
            started=started,
            deadline=deadline,
        )

    def finish(self, prepared: PreparedPrompt, generated: str) -> Answer:
        """The answer for what the model generated from ``prepared`` (its items, cited facts, entities)."""
        metadata: dict[str, Any] = {
            "mode": SOURCE,
            "facts": [
                _fact_record(n, f, text)
                for n, (f, text) in enumerate(zip(prepared.facts, prepared.fact_texts, strict=True), 1)
            ],
            "trimmed_facts": prepared.trimmed,
            "prompt_tokens": prepared.prompt_tokens,
        }
        if prepared.retrieved is not None and prepared.retrieved.rewrites:
            metadata["rewrites"] = prepared.retrieved.rewrites
        if prepared.refusal is not None:
            return self._refusal(prepared, prepared.refusal, metadata)
        if prepared.expired():
            metadata["cut"] = True
            limit = (prepared.deadline or 0.0) - prepared.started
            return self._refusal(
                prepared, f"its time budget of {limit:.3g} s ran out before the answer was written", metadata
            )
        metadata["model"] = prepared.model
        metadata["generated"] = generated
        parsed = parse_answer(generated)
        if prepared.closed_book:
            return self._closed_book(prepared, parsed, generated, metadata)
        if parsed.refused:
            return self._refusal(prepared, "the retrieved facts do not answer it", metadata)
        if prepared.constraint is not None:
            parsed, generated = self._without_cut_item(prepared, parsed, generated, metadata)
        return self._cited(prepared, parsed, generated, metadata)

    def _without_cut_item(
        self, prepared: PreparedPrompt, parsed: ParsedAnswer, generated: str, metadata: dict
    ) -> tuple[ParsedAnswer, str]:
        """The answer without its last item when the token budget ran out inside it (``[4] Alg``): under
        the grammar every other item is whole. ``metadata["cut_items"]`` names what was left out."""
        last = parsed.items[-1] if parsed.items else None
        metadata["cut_items"] = []
        if last is None or self._whole(prepared, last):
            return parsed, generated
        metadata["cut_items"] = [last.name]
        return ParsedAnswer(parsed.items[:-1], False), generated[: generated.rfind("[")].rstrip(" ,")

    def _whole(self, prepared: PreparedPrompt, item: AnswerItem) -> bool:
        """Whether ``item`` names an entity of the numbered item it cites, as the grammar completes one."""
        n = item.citations[0] if len(item.citations) == 1 else 0
        if not 1 <= n <= len(prepared.facts):
            return False
        return any(self.store.label(node).casefold() == item.name.casefold() for node in prepared.facts[n - 1].answers)

    # ------------------------------------------------------------------ answers
    def _cited(self, prepared: PreparedPrompt, parsed: ParsedAnswer, generated: str, metadata: dict) -> Answer:
        n_facts = len(prepared.facts)
        citations = [n for n in parsed.citations if 1 <= n <= n_facts]
        if not citations:
            raise ModelOutputError(
                f"the model's answer cites none of the {n_facts} numbered facts: {generated.strip()[:200]!r}"
            )
        labels = self._labels({node for f in prepared.facts for t in f.triples for node in (t.head, t.tail)})
        entities, supported, uncited = [], 0, []
        for item in parsed.items:
            cited = [t for n in item.citations if 1 <= n <= n_facts for t in prepared.facts[n - 1].triples]
            entity = self._entity(item.name, cited, labels)
            if entity is None:
                uncited.append(item.name)
                continue
            entities.append(entity)
            supported += any(entity.id in (t.head, t.tail) for t in cited)
        metadata.update(
            citations=citations,
            items=[{"name": i.name, "citations": list(i.citations)} for i in parsed.items],
            unsupported_names=uncited,
            found=True,
        )
        named = {e.id for e in entities}
        cited_facts = [_named_part(prepared.facts[n - 1], named) for n in citations]
        triples = list(dict.fromkeys(t for fact in cited_facts for t in fact.triples))
        evidence = Evidence(
            triples=triples, paths=self._paths(prepared, cited_facts), score=prepared.facts[0].score, source=SOURCE
        )
        entities = list({e.id: e for e in entities}.values())
        answer_labels = self._labels({node for t in triples for node in (t.head, t.relation, t.tail)})
        confidence = supported / len(parsed.items) if parsed.items else 0.0
        if self._flag_claims(generated, metadata) and prepared.strict:
            return self._refusal(prepared, "its answer says what the graph does not support (strict mode)", metadata)
        return self._done(prepared, generated.strip(), entities, evidence, confidence, answer_labels, metadata)

    def _closed_book(self, prepared: PreparedPrompt, parsed: ParsedAnswer, generated: str, metadata: dict) -> Answer:
        entities = [e for e in (self._entity(item.name, [], {}) for item in parsed.items) if e is not None]
        metadata.update(closed_book=True, found=bool(entities), citations=[])
        text = f"{generated.strip()} (closed-book: from the model's memory, not from graph facts)"
        return self._done(prepared, text, entities, Evidence(source=f"{SOURCE}:closed-book"), 0.0, {}, metadata)

    def _refusal(self, prepared: PreparedPrompt, reason: str, metadata: dict) -> Answer:
        metadata.update(found=False, reason=reason, citations=[])
        text = f"I cannot answer this from the graph: {reason}."
        return self._done(prepared, text, [], Evidence(source=f"{SOURCE}:refused"), 0.0, {}, metadata)

    def _done(self, prepared: PreparedPrompt, text, entities, evidence, confidence, labels, metadata) -> Answer:
        metadata["seconds"] = round(time.perf_counter() - prepared.started, 4)
        return Answer(prepared.question, text, entities, evidence, confidence, labels, metadata)

    # ------------------------------------------------------------------ helpers
    def _flag_claims(self, generated: str, metadata: dict) -> bool:
        """Check the answer's claims against the graph into ``metadata`` (``claims``, and
        ``unsupported_claims``: those read as facts that the graph does not hold); True when the
        answer has such a claim or names something no cited fact holds. A bare list of names has no
        claim to read: its names are checked through their citations."""
        if self._claims is None:
            self._claims = ClaimChecker(self.store, self.retriever)
        report = self._claims.check(generated)
        metadata["claims"] = report.to_dict()
        unsupported = [c.text for c in report.claims if c.triples and c.status is not ClaimStatus.SUPPORTED]
        metadata["unsupported_claims"] = unsupported
        return bool(unsupported or metadata.get("unsupported_names"))

    def _entity(self, name: str, cited: list[Triple], labels: dict[str, str]) -> Entity | None:
        """The entity an answer item names: one of its cited facts' ends, else any numbered fact's, else
        the graph's entity of exactly that name."""
        wanted = name.strip().casefold()
        if not wanted:
            return None
        for node in [n for t in cited for n in (t.head, t.tail)] + list(labels):
            if labels.get(node, "").casefold() == wanted:
                return self.store.entity(node) or Entity(node, labels[node])
        matches = [link for link in self.retriever.linker.link(name) if link.method == "exact"]
        exact = [m.entity for m in matches if m.entity.label.casefold() == wanted]
        return exact[0] if exact else None

    def _paths(self, prepared: PreparedPrompt, cited: list[RankedFact]) -> list[GraphPath]:
        """For each cited item, its paths, or the walk from a question entity through numbered facts
        that ends with its fact."""
        walks: dict[Triple, tuple[str, tuple[Triple, ...]]] = {}
        if any(not fact.paths for fact in cited):  # a fact apart needs the walk that reaches it
            seeds = prepared.retrieved.seeds if prepared.retrieved else []
            walks = walks_from(seeds, [t for f in prepared.facts for t in f.triples])
        paths = []
        for fact in cited:
            walked = fact.paths or [GraphPath(*walks[fact.triple])]
            paths += [GraphPath(start=p.start, triples=p.triples, score=fact.score) for p in walked]
        return list({(p.start, p.triples): p for p in paths}.values())

    def _grammar(self, facts: list[RankedFact]) -> CitationGrammar:
        """Items ``" [n] <entity>"`` for what the numbered items answer (each entity named once, a fact
        cited once, a walk once for each of its answers), the separator and the refusal.

        Where the reasoner's walks are shown, they are its reading of the question: the answer names
        their answers, not the ends of facts apart (which would mix in another reading), and does not
        refuse (the reasoner refuses a question it cannot map, and then shows no walk). A walk, once
        cited, is cited for every entity it reaches: its answers are one set, and a subset would
        answer a question nobody asked. Otherwise any end of a fact may be named, or the answer may
        refuse."""
        tokenizer = self.lm.tokenizer  # type: ignore[attr-defined]  # local models have one
        walks = any(f.paths for f in facts)
        ends = [(n, node) for n, f in enumerate(facts, 1) if f.paths or not walks for node in f.answers]
        labels = self._labels({node for _, node in ends})
        items = [f" [{n}] {labels[node]}" for n, node in ends]
        encoded = tokenizer([*items, ",", " " + NO_ANSWER], add_special_tokens=False)["input_ids"]
        groups = [(node,) if facts[n - 1].paths else (node, n) for n, node in ends]
        bundles = [n if facts[n - 1].paths else None for n, _ in ends]
        refusal = None if walks else encoded[-1]
        return CitationGrammar(
            encoded[:-2], encoded[-2], refusal, tokenizer.eos_token_id, groups=groups, bundles=bundles
        )

    def _walk_answer_tokens(self, facts: list[RankedFact]) -> int:
        """Tokens of the longest answer that names a whole walk (``" [n] <entity>"`` items, a separator each)."""
        walks = [(n, f) for n, f in enumerate(facts, 1) if f.paths]
        labels = self._labels({node for _, f in walks for node in f.answers})
        lists = [[f" [{n}] {labels[node]}," for node in f.answers] for n, f in walks]
        return max((sum(self.count_tokens(items)) for items in lists), default=0)

    def _verbalize(self, facts: list[RankedFact]) -> list[str]:
        labels = self._labels({node for f in facts for t in f.triples for node in (t.head, t.relation, t.tail)})
        return [_walk_text(f.paths, labels) if f.paths else _fact_text(f.triple, labels) for f in facts]

    def _labels(self, nodes: set[str]) -> dict[str, str]:
        return {node: self.store.label(node) for node in sorted(nodes)}

    def _fit(self, question: str, texts: list[str], context: int | None, max_new: int) -> tuple[int, int]:
        """How many facts (best first) fit the context beside the question and the answer, and the prompt's
        token count. The question is never cut: if it alone does not fit, that is an error."""
        lines = number_facts(texts).split("\n")
        empty = self.count_tokens([self.template.format(facts="", question=question)])[0]
        if context is None:
            return len(texts), empty + sum(self.count_tokens(lines))
        room = context - max_new - empty
        if room < 0:
            raise InputError(
                f"the question and its answer ({empty} + {max_new} tokens) do not fit the model's context "
                f"of {context} tokens"
            )
        used, kept = 0, 0
        for cost in self.count_tokens(lines):
            if used + cost + 1 > room:  # +1: the newline between facts
                break
            used, kept = used + cost + 1, kept + 1
        return kept, empty + used

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text for the model (an estimate from its length for a model without a local tokenizer)."""
        tokenizer = getattr(self.lm, "tokenizer", None)
        if tokenizer is None:
            return [len(text) // CHARS_PER_TOKEN + 1 for text in texts]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _model_context(self) -> int | None:
        model = getattr(self.lm, "model", None)
        return getattr(getattr(model, "config", None), "max_position_embeddings", None)

    def _fusion_retriever(self) -> FusionRetriever:
        """Fusion over the shared retriever; the model (for rewrites) only when there is one."""
        return FusionRetriever(self.retriever, self.lm if self._lm is not None else None, self.fusion, self.paths)


def _fact_text(t: Triple, labels: dict[str, str]) -> str:
    return f"{labels[t.head]} {labels[t.relation]} {labels[t.tail]}"


def _walk_text(paths: tuple[GraphPath, ...], labels: dict[str, str]) -> str:
    """``Chad > neighbor of > Niger, Libya > located in > Western Africa``: the paths of one walk, in
    its order, the nodes each step reaches listed together (``<`` for facts walked against their
    direction), so the answers they reach are always the last names."""
    first = paths[0]
    steps = list(zip(*(p.nodes for p in paths), strict=True))  # the nodes of every path at each step
    parts = [", ".join(labels[node] for node in dict.fromkeys(steps[0]))]
    for t, node, reached in zip(first.triples, first.nodes[1:], steps[1:], strict=True):
        arrow = ">" if t.tail == node else "<"
        parts += [arrow, labels[t.relation], arrow, ", ".join(labels[n] for n in dict.fromkeys(reached))]
    return " ".join(parts)


def _named_part(fact: RankedFact, named: set[str]) -> RankedFact:
    """A cited reasoner walk as far as the answer uses it: its paths to the ``named`` entities (all of
    them when it names none); a fact as it is."""
    chosen = tuple(p for p in fact.paths if p.end in named)
    return replace(fact, paths=chosen) if chosen else fact


def _fact_record(n: int, fact: RankedFact, text: str) -> dict[str, Any]:
    """A numbered item as the answer's metadata lists it: ``triple`` is its (first path's) last fact,
    ``paths`` (for a reasoner's walk) its paths: ``[{"start": node, "triples": [[h, r, t], ...]}]``."""
    record: dict[str, Any] = {"n": n, "fact": text, "triple": fact.triple.as_list()}
    if fact.paths:
        record["paths"] = [{"start": p.start, "triples": [t.as_list() for t in p.triples]} for p in fact.paths]
    return record


def _left(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline); at least a millisecond, as a bound must be positive."""
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
