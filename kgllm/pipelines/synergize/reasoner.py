"""KG + LLM reasoning: plan a relation path, walk it on the graph, answer with the paths.

For each entity linked in the question, every relation path of up to
``max_hops`` steps that leaves it is enumerated on the graph, grouped by its
relation sequence and the class of the entities it ends in. Each such plan is
scored against the question by the sentence encoder (the question against a
verbalization of the plan), by explicit mentions of a class ("which
subregion"), and, when a language model is given, by the model's likelihood
of the plan after the question (``kgllm.llm.corpus`` trains exactly this).
The best plan's end entities are the answer; the walks that reach them are the
evidence. A question with no linked entity, or whose best plan scores below
``min_plan_similarity``, gets no answer: nothing is invented.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np

from kgllm.exceptions import InputError
from kgllm.graph.base import Direction, GraphStore
from kgllm.llm.base import LanguageModel
from kgllm.llm.corpus import Hop, clause, noun_chain, path_text, plan_prompt, plural
from kgllm.types import Answer, Entity, Evidence, GraphPath, Triple

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


@dataclass
class ReasonerConfig:
    """Limits and weights of the path reasoner."""

    max_hops: int = 2  # longest relation path
    max_fanout: int = 2000  # edges read from one entity per step (bounds hubs)
    max_walks: int = 50_000  # walks enumerated per topic entity (per plan the beam search walks again)
    # edges read at a partial plan's ends to find its next hops (beam search); a plan whose hops were
    # found on such a sample is walked again along its own relations once kept, so its answers are whole
    max_probe_edges: int = 2000
    # partial plans of one hop ranked in full (beam search); beyond it, first those from the best parents
    # whose last hop alone reads closest to the question: every plan ranked in full is a phrase to encode
    beam_candidates: int = 16
    beam_width: int = 0  # 0: rank every plan; else keep the best N partial plans at each hop
    max_topics: int = 3  # linked entities tried as the start of a path
    lm_weight: float = 0.005  # weight of the model's mean token log-likelihood of a plan
    use_model: bool = True  # False: rank with the encoder and the graph alone, even when a model is loaded
    class_bonus: float = 0.15  # for a plan ending in the class the question names
    hop_penalty: float = 0.05  # per hop more than the relation words in the question (at least one)
    short_hop_penalty: float = 0.15  # per hop fewer: a plan that stops early answers another question
    order_weight: float = 0.2  # for relations in the order of a possessive chain ("X's father's heir")
    relation_word_similarity: float = 0.5  # a question word this close to a relation name mentions it
    min_plan_similarity: float = 0.6  # below this the question is not about what the graph holds
    named_relation_allowance: float = 0.15  # ... lowered by this when the question names a relation
    temperature: float = 0.05  # softmax temperature turning plan scores into a confidence
    max_evidence_paths: int = 60
    related_facts: int = 5  # closest facts (FAISS) shown with a refusal, as context
    max_seconds: float = 0.0  # time budget of one answer (0: none); past it the search stops and says so

    def __post_init__(self) -> None:
        if not 1 <= self.max_hops <= 4:
            raise InputError("max_hops must be between 1 and 4")
        if min(self.max_fanout, self.max_walks, self.max_topics, self.max_probe_edges, self.beam_candidates) < 1:
            raise InputError("max_fanout, max_walks, max_topics, max_probe_edges and beam_candidates must be positive")
        if self.beam_width < 0:
            raise InputError("beam_width must be 0 (rank every plan) or positive")
        if not self.max_seconds >= 0:
            raise InputError("max_seconds must be 0 (no time budget) or positive")


@dataclass
class Plan:
    """A relation path from a topic entity, ending in entities of one class."""

    topic: Entity
    hops: tuple[Hop, ...]
    classes: tuple[str | None, ...]  # class of the node each hop reaches
    walks: list[GraphPath]
    link_score: float
    scores: dict[str, float] = field(default_factory=dict)
    probed: bool = False  # its walks are a sample: its hops were found on some of the edges they reach

    @property
    def score(self) -> float:
        return sum(self.scores.values())

    @property
    def answer_class(self) -> str | None:
        return self.classes[-1]

    @property
    def answers(self) -> list[str]:
        return list(dict.fromkeys(w.end for w in self.walks))


class SearchCut(Exception):
    """The search ran past its ``max_seconds`` budget (raised inside the reasoner, caught by ``answer``)."""


class PathReasoner:
    """Answers questions over a store by planning and walking relation paths."""

    _deadline: float | None = None  # monotonic time at which the search of the current call stops
    _next_pause: float = float("inf")  # monotonic time at which a long search next gives way
    _hubs: set[str] | None = None  # entities of the current call whose edges were cut to max_fanout

    def __init__(
        self, store: GraphStore, retriever, lm: LanguageModel | None = None, config: ReasonerConfig | None = None
    ):
        self.store = store
        self.retriever = retriever
        self.lm = lm
        self.config = config or ReasonerConfig()
        self._label = lru_cache(maxsize=200_000)(store.label)
        self._describe = lru_cache(maxsize=10_000)(store.describe)
        self._classes_of = lru_cache(maxsize=200_000)(store.classes_of)
        self._vectors: dict[str, np.ndarray] = {}  # plan phrases repeat across questions

    # ------------------------------------------------------------ public
    def answer(self, question: str, **options: Any) -> Answer:
        """Answer ``question`` by the best relation path from its entities, with every walk as evidence.

        ``options`` override fields of :class:`ReasonerConfig` for this call alone
        (``max_hops=3``, ``beam_width=5``, ...); an unknown name raises :class:`InputError`.
        """
        if options:
            return self.with_options(**options).answer(question)
        question = question.strip()
        if not question:
            raise InputError("the question is empty")
        started = time.perf_counter()
        if self._hubs is None:
            call = copy.copy(self)  # the hubs met and the deadline belong to this call; the caches stay shared
            call._hubs = set()
            if self.config.max_seconds:
                call._deadline = time.monotonic() + self.config.max_seconds
                call._next_pause = time.monotonic() + LONG_SEARCH_SECONDS
            return call.answer(question)
        links = self.retriever.link(question)[: self.config.max_topics]
        try:
            plans, named_relations = self.search(question, links)
        except SearchCut:
            plans, named_relations = None, 0
        best = plans[0] if plans else None
        # A question that names a relation of the graph may match its plan less closely.
        floor = self.config.min_plan_similarity - (self.config.named_relation_allowance if named_relations else 0)
        if plans is None:
            answer = self._cut(question, links)
        elif best is None or best.scores["encoder"] < floor:
            answer = self._not_found(question, links, best)
        else:
            answer = self._found(question, best, plans)
        answer.metadata["search"] = f"beam {self.config.beam_width}" if self.config.beam_width else "every plan"
        if self._hubs:  # the answer was searched on a sample of these entities' edges: say so
            answer.metadata["fanout_sampled"] = {
                "entities": sorted(self._label(hub) for hub in self._hubs),
                "edges read per entity": self.config.max_fanout,
            }
        answer.metadata["seconds"] = round(time.perf_counter() - started, 4)
        answer.metadata["model"] = getattr(self.lm, "name", None) if self.config.use_model else None
        return answer

    def warm_up(self, per_class: int = 3, seconds: float = 30.0) -> int:
        """Encode the plan phrases of the paths from a few entities of each class, so that the first
        questions about them do not wait for it (a phrase names its topic by a placeholder, so it
        serves every entity with those paths). Plans grow a hop at a time, found on at most
        ``max_probe_edges`` edges each as in the beam search, and each hop's phrases are encoded
        before the next is walked; stops after ``seconds``. Returns the phrases encoded."""
        call = copy.copy(self)  # a deadline of its own; the phrase cache stays shared
        call._deadline = time.monotonic() + seconds
        before = len(self._vectors)
        seen: Counter[str] = Counter()
        try:
            for entity in self.store.entities():
                call._check_time()
                kind = entity.types[0] if entity.types else ""
                if seen[kind] >= per_class:
                    continue
                seen[kind] += 1
                generation = [Plan(entity, (), (), [GraphPath(entity.id, ())], 1.0)]
                for _ in range(self.config.max_hops):
                    generation = [child for plan in generation for child in call._extend(plan)]
                    call._encode_cached([phrase for plan in generation for phrase in call.describe(plan, MASK)])
        except SearchCut:
            pass  # out of time: what was encoded so far is kept
        return len(self._vectors) - before

    def with_options(self, **options: Any) -> PathReasoner:
        """A reasoner with some settings changed, sharing this one's store, model and caches."""
        unknown = sorted(set(options) - {f.name for f in fields(ReasonerConfig)})
        if unknown:
            raise InputError(
                f"unknown reasoner option(s) {unknown}; known: {sorted(f.name for f in fields(ReasonerConfig))}"
            )
        clone = copy.copy(self)
        clone.config = replace(self.config, **options)
        return clone

    def search(self, question: str, links) -> tuple[list[Plan], int]:
        """The candidate plans from the linked entities, ranked best first, and how many words of the
        question name a relation. Every plan up to ``max_hops`` is ranked, or, with a ``beam_width``,
        only those grown from the best partial plans of each length; then a plan that disagrees with
        the best may keep walks found on a sample of the edges (``probed``)."""
        mentions = [link.mention for link in links]
        if self.config.beam_width:
            plans, named = self._beam_search(question, links, mentions)
        else:
            plans = [p for link in links for p in self.plans(link.entity, link.score)]
            named = self.rank(question, plans, mentions) if plans else 0
        plans.sort(key=lambda p: -p.score)
        return plans, named

    def plans(self, topic: Entity, link_score: float = 1.0) -> list[Plan]:
        """Every relation path from ``topic`` up to ``max_hops``, split by the classes of the nodes it passes."""
        grouped: dict[tuple[tuple[Hop, ...], tuple[str | None, ...]], list[GraphPath]] = defaultdict(list)
        for hops, walk in self._walks(topic.id):
            self._check_time()
            for classes in itertools.product(*((self._classes_of(n) or (None,)) for n in walk.nodes[1:])):
                grouped[(hops, classes)].append(walk)
        return [Plan(topic, hops, classes, walks, link_score) for (hops, classes), walks in grouped.items()]

    def rank(self, question: str, plans: list[Plan], mentions: list[str]) -> int:
        """Fill each plan's ``scores`` (encoder similarity, the classes the question names, the model);
        returns how many words of the question name a relation."""
        masked = _mask(question, mentions)
        phrases = [self.describe(p, MASK) for p in plans]
        unique = list(dict.fromkeys(t for variants in phrases for t in variants))
        vectors = dict(zip(unique, self._encode_cached(unique)))
        query = self.retriever.encoder.encode_query(masked)
        wanted, named = self._question_classes(masked, {c for p in plans for c in p.classes if c})
        mentions_count, hop_hint, chain = self._relation_mentions(
            masked, {h.relation for p in plans for h in p.hops}, named
        )
        bonus = self.config.class_bonus
        for plan, variants in zip(plans, phrases):
            plan.scores["encoder"] = max(float(vectors[t] @ query) for t in variants)
            plan.scores["link"] = 0.2 * (plan.link_score - 1.0)
            plan.scores["hops"] = self._hop_score(len(plan.hops), max(1, hop_hint))
            if wanted:
                plan.scores["answer class"] = bonus if plan.answer_class == wanted else -bonus
            if len(chain) > 1:
                plan.scores["order"] = self.config.order_weight * self._chain_order(chain, plan.hops)
            others = named - {wanted}
            if others:
                passed = set(plan.classes[:-1])
                plan.scores["classes"] = bonus / 2 * (len(others & passed) - len(others - passed))
        if self.lm is not None and self.config.use_model and self.config.lm_weight:
            self._rank_with_model(question, plans)
        return mentions_count

    def _hop_score(self, hops: int, hinted: int) -> float:
        if hops < hinted:
            return -self.config.short_hop_penalty * (hinted - hops)
        return -self.config.hop_penalty * (hops - hinted)

    def describe(self, plan: Plan, topic: str | None = None, max_variants: int = 12) -> list[str]:
        """The plan as noun phrases for the encoder to compare with the question, one per way of
        naming its relations: ``the subregions that the countries that border Chad are located in``;
        where every relation reads as a noun (``neighbor of``), also ``the neighbors of the neighbors of Chad``."""
        phrases = [plan.topic.label if topic is None else topic]
        for i, (hop, cls) in enumerate(zip(plan.hops, plan.classes)):
            noun = plural(self._describe(cls).label if cls else "thing")
            names = self._names(hop.relation)
            phrases = [
                clause(phrase, noun, name, hop.forward, plural_subject=i > 0) for phrase in phrases for name in names
            ][:max_variants]
        topic = plan.topic.label if topic is None else topic
        relations = [self._label(h.relation) for h in plan.hops]
        if chain := noun_chain(topic, relations):
            nouns = [plural(r[: -len(" of")]) for r in relations]
            phrases += [chain, f"{topic}'s " + "' ".join(nouns)]
        return phrases

    def _names(self, node: str) -> list[str]:
        entity = self._describe(node)
        return [entity.label, *entity.aliases]

    def _chain_order(self, chain: list[str], hops: tuple[Hop, ...]) -> float:
        """How well the plan's relations, taken forward, match the chained nouns in their order:
        the mean similarity of the i-th noun from the entity to the i-th relation's closest name."""
        pairs = list(zip(chain, hops))
        similarities = [
            max(float(self._encode_cached([word])[0] @ v) for v in self._encode_cached(self._names(hop.relation)))
            if hop.forward
            else 0.0
            for word, hop in pairs
        ]
        return sum(similarities) / len(pairs)

    def _relation_mentions(self, question: str, relations: set[str], classes: set[str]) -> tuple[int, int, list[str]]:
        """Hints of how many hops the question asks for: the relations it names (adjacent words of one
        relation's name are one: "people person profession"), and those together with the
        nouns chained to the entity by ``'s`` and ``of`` ("the sex of X's heir"); and the chained nouns
        in order from the entity outwards."""
        skip = {name.lower() for c in classes for name in self._names(c)} | WH_WORDS | STOP_WORDS | {MASK.lower()}
        tokens = _TOKEN.findall(question.lower().replace("’", "'"))
        content = [i for i, w in enumerate(tokens) if w[0] != "'" and w not in skip and plural(w) not in skip]
        names = [name for r in relations for name in self._names(r)]
        named: set[int] = set()
        if content and names:
            similarity = (
                np.stack(self._encode_cached([tokens[i] for i in content])) @ np.stack(self._encode_cached(names)).T
            )
            named = {
                i for i, best in zip(content, similarity.max(axis=1)) if best >= self.config.relation_word_similarity
            }
        chain = [i for i in _chained_nouns(tokens) if i in content]
        name_words = [set(_TOKEN.findall(name.lower())) for name in names]

        def mentions(positions: set[int]) -> int:
            """Adjacent words that one relation's name holds both of are one mention of it."""
            return sum(
                1
                for i in positions
                if not (i - 1 in positions and any({tokens[i - 1], tokens[i]} <= words for words in name_words))
            )

        return mentions(named), mentions(named | set(chain)), [tokens[i] for i in chain]

    def _question_classes(self, question: str, classes: set[str]) -> tuple[str | None, set[str]]:
        """The class the question asks for ("which countries ...") and every class it names."""
        words = _WORD.findall(question.lower())
        names = {}
        for c in classes:
            for name in self._names(c):
                names[name.lower()] = names[plural(name.lower())] = c
        mentioned = [(i, names[w]) for i, w in enumerate(words) if w in names]
        asked = [c for i, c in mentioned if i == 0 or WH_WORDS & set(words[max(0, i - 2) : i])]
        wanted = next(iter(asked or [c for _, c in mentioned]), None)
        return wanted, {c for _, c in mentioned}

    # ------------------------------------------------------------ internals
    def _beam_search(self, question: str, links, mentions: list[str]) -> tuple[list[Plan], int]:
        """Grow plans one hop at a time from the linked entities; rank each generation with the encoder
        (and the model) and keep only the best ``beam_width`` to extend. Every plan kept is then ranked
        again with the others, so that plans of all lengths are scored alike."""
        beam = [Plan(link.entity, (), (), [GraphPath(link.entity.id, ())], link.score) for link in links]
        kept: list[Plan] = []
        query = self.retriever.encoder.encode_query(_mask(question, mentions))
        for _ in range(self.config.max_hops):
            children = self._shortlist(query, [(plan, child) for plan in beam for child in self._extend(plan)])
            if not children:
                break
            self.rank(question, children, mentions)
            beam = sorted(children, key=lambda p: -p.score)[: self.config.beam_width]
            kept += beam
        for plan in kept:
            plan.scores.clear()
        named = self.rank(question, kept, mentions) if kept else 0
        if kept:
            self._complete(kept)
        return kept, named

    def _complete(self, plans: list[Plan]) -> None:
        """Walk again, for all their answers, the sampled plans that the answer depends on: the best,
        and those whose sample holds only its answers (the confidence counts the plans that agree
        with it; one whose sample holds another answer disagrees however it is walked)."""
        best = max(plans, key=lambda p: p.score)
        if best.probed:
            best.walks, best.probed = self._walk_along(best), False
        answers = set(best.answers)
        for plan in plans:
            if plan.probed and set(plan.answers) <= answers:
                plan.walks, plan.probed = self._walk_along(plan), False

    def _shortlist(self, query: np.ndarray, children: list[tuple[Plan, Plan]]) -> list[Plan]:
        """At most ``beam_candidates`` of the children: those whose parent scored best and whose last
        hop alone reads closest to the question. A last hop's phrase depends only on its relation,
        direction and class, so few are ever encoded, where the children's own phrases are many."""
        if len(children) <= self.config.beam_candidates:
            return [child for _, child in children]

        last_hops = [
            self.describe(Plan(child.topic, child.hops[-1:], child.classes[-1:], [], child.link_score), MASK)
            for _, child in children
        ]
        unique = list(dict.fromkeys(phrase for phrases in last_hops for phrase in phrases))
        vectors = dict(zip(unique, self._encode_cached(unique)))  # one batch
        promise = [
            parent.score + max(float(vectors[phrase] @ query) for phrase in phrases)
            for (parent, _), phrases in zip(children, last_hops)
        ]
        best_first = sorted(range(len(children)), key=lambda i: -promise[i])
        return [children[i][1] for i in best_first[: self.config.beam_candidates]]

    def _extend(self, plan: Plan) -> list[Plan]:
        """The plans one hop longer than ``plan``: its walks extended by every edge at their ends,
        grouped by the relation, its direction and the class of the node reached."""
        # keyed by plain tuples: a Hop per edge, hashed and compared, cost more than the walk itself
        grouped: dict[tuple[str, bool, str | None], list[GraphPath]] = defaultdict(list)
        probe = self.config.max_probe_edges
        edges = list(itertools.islice(self._edges_at_ends(plan.walks), probe + 1))
        # on a sample when the probe stopped early or read a hub's edges cut to max_fanout
        probed = plan.probed or len(edges) > probe or not (self._hubs or set()).isdisjoint(e for _, e, _ in edges)
        for walk, end, t in edges[:probe]:
            self._check_time()
            forward = t.head == end
            extended = GraphPath(walk.start, (*walk.triples, t))
            for cls in self._classes_of(t.tail if forward else t.head) or (None,):
                grouped[(t.relation, forward, cls)].append(extended)
        return [
            Plan(
                plan.topic,
                (*plan.hops, Hop(relation, forward)),
                (*plan.classes, cls),
                walks,
                plan.link_score,
                probed=probed,
            )
            for (relation, forward, cls), walks in grouped.items()
        ]

    def _walk_along(self, plan: Plan) -> list[GraphPath]:
        """The walks from the plan's topic that follow its relations and classes, each entity's edges
        read once per hop and only those of the hop's relation."""
        walks = [GraphPath(plan.topic.id, ())]
        for hop, cls in zip(plan.hops, plan.classes):
            along: dict[str, list[Triple]] = {}
            extended = []
            for walk in walks:
                end = walk.end
                if end not in along:
                    self._check_time()
                    along[end] = self._edges(end, "out" if hop.forward else "in", hop.relation)
                for t in along[end]:
                    if cls in (self._classes_of(t.tail if hop.forward else t.head) or (None,)):
                        extended.append(GraphPath(walk.start, (*walk.triples, t)))
                if len(extended) >= self.config.max_walks:
                    log.warning("walk limit %d reached walking a plan from %s", self.config.max_walks, plan.topic.id)
                    del extended[self.config.max_walks :]
                    break
            walks = extended
        return walks

    def _walks(self, start: str):
        frontier: list[tuple[str, tuple[Triple, ...], tuple[Hop, ...]]] = [(start, (), ())]
        count = 0
        for depth in range(self.config.max_hops):
            next_frontier = []
            for node, walked, hops in frontier:
                self._check_time()
                for t in self._edges(node):
                    forward = t.head == node
                    step = (*walked, t), (*hops, Hop(t.relation, forward))
                    yield step[1], GraphPath(start=start, triples=step[0])
                    count += 1
                    if count >= self.config.max_walks:
                        log.warning("walk limit %d reached from %s", self.config.max_walks, start)
                        return
                    if depth + 1 < self.config.max_hops:
                        next_frontier.append((t.tail if forward else t.head, *step))
            frontier = next_frontier

    def _edges_at_ends(self, walks: list[GraphPath]):
        for walk in walks:
            self._check_time()
            end = walk.end
            for t in self._edges(end):
                yield walk, end, t

    def _edges(self, node: str, direction: Direction = "both", relation: str | None = None) -> list[Triple]:
        """The edges of ``node`` walked in one step: all of them, or ``max_fanout`` of a hub that has
        more (spread over its relations by the store), which is noted so that the answer says it was
        searched on a sample."""
        edges = self.store.neighbors(node, direction, relation, limit=self.config.max_fanout + 1)
        if len(edges) > self.config.max_fanout:
            if self._hubs is not None:
                self._hubs.add(node)
            del edges[self.config.max_fanout :]
        return edges

    def _encode_cached(self, texts: list[str]) -> list[np.ndarray]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        # under a time budget, in chunks with the clock checked between them
        step = _TIMED_CHUNK if self._deadline is not None else max(1, len(missing))
        for start in range(0, len(missing), step):
            self._check_time()
            chunk = missing[start : start + step]
            self._vectors.update(zip(chunk, self.retriever.encoder.encode(chunk)))
        return [self._vectors[t] for t in texts]

    def _check_time(self) -> None:
        if self._deadline is None:
            return
        now = time.monotonic()
        if now > self._deadline:
            raise SearchCut
        if now > self._next_pause:  # a long search gives way to the short ones beside it
            time.sleep(PAUSE_SECONDS)
            self._next_pause = time.monotonic() + WORK_SECONDS

    def _rank_with_model(self, question: str, plans: list[Plan]) -> None:
        assert self.lm is not None  # called only when there is a model
        texts = [self._path_text(p) for p in plans]
        unique = list(dict.fromkeys(texts))
        step = _TIMED_CHUNK if self._deadline is not None else max(1, len(unique))
        logp: dict[str, float] = {}
        for start in range(0, len(unique), step):
            self._check_time()
            chunk = unique[start : start + step]
            logp.update(zip(chunk, self.lm.score(plan_prompt(question), chunk, normalize=True)))
        for plan, text in zip(plans, texts):
            plan.scores["model"] = self.config.lm_weight * logp[text]

    def _closest_entities(self, question: str, k: int = 3) -> list[str]:
        """Labels of the entities whose names are nearest the question, for a refusal to show."""
        from kgllm.retrieval.linking import entity_of_label_key

        hits = self.retriever.label_index.search(self.retriever.encoder.encode_query(question)[None, :], k * 3)[0]
        ids = list(dict.fromkeys(entity_of_label_key(key) for key, _ in hits))[:k]
        return [self._label(i) for i in ids]

    def _path_text(self, plan: Plan) -> str:
        return path_text(
            [self._label(h.relation) for h in plan.hops],
            [h.forward for h in plan.hops],
            [self._label(c) if c else None for c in plan.classes],
        )

    def _confidence(self, plans: list[Plan]) -> float:
        scores = np.array([p.score for p in plans[:50]])
        weights = np.exp((scores - scores.max()) / self.config.temperature)
        # plans with the same answers agree, so they share the probability mass
        best_answers = set(plans[0].answers)
        agree = sum(w for p, w in zip(plans, weights) if set(p.answers) == best_answers)
        return float(agree / weights.sum()) * min(1.0, plans[0].link_score)

    def _found(self, question: str, best: Plan, plans: list[Plan]) -> Answer:
        answers = [self.store.entity(a) or Entity(a, self._label(a)) for a in best.answers]
        walks = _evidence_walks(best.walks, self.config.max_evidence_paths)
        paths = [GraphPath(w.start, w.triples, score=best.score) for w in walks]
        triples = list(dict.fromkeys(t for p in paths for t in p.triples))
        labels = {x: self._label(x) for t in triples for x in (t.head, t.relation, t.tail)}
        evidence = Evidence(triples=triples, paths=paths, score=best.score, source="synergize:relation-path")
        return Answer(
            question=question,
            text=_join([e.label for e in answers]) + ".",
            entities=answers,
            evidence=evidence,
            confidence=self._confidence(plans),
            labels=labels,
            metadata={
                "topic": best.topic.label,
                "path": self._path_text(best).strip(),
                "plans": [
                    {
                        "topic": p.topic.label,
                        "plan": self.describe(p)[0],
                        "scores": {k: round(v, 4) for k, v in p.scores.items()},
                    }
                    for p in plans[:5]
                ],
            },
        )

    def _cut(self, question: str, links) -> Answer:
        """No answer: the search ran out of its time budget before it had ranked every plan."""
        budget = self.config.max_seconds
        considered = [link.entity.label for link in links]
        return Answer(
            question=question,
            text=f"The search was cut after its time budget of {budget:g} s, before it had ranked every "
            "relation path, so no answer is given. Ask about fewer entities, or with a smaller max_hops.",
            entities=[],
            evidence=Evidence(triples=[], source="synergize:relation-path"),
            confidence=0.0,
            labels={},
            metadata={"found": False, "cut": True, "time_budget_seconds": budget, "considered": considered},
        )

    def _not_found(self, question: str, links, best: Plan | None) -> Answer:
        considered = [link.entity.label for link in links]
        if considered:
            text = f"The graph holds no answer to this question (entities considered: {', '.join(considered)})."
        else:
            considered = self._closest_entities(question)
            text = "The graph holds no entity this question mentions, so it has no answer" + (
                f" (closest entities: {', '.join(considered)})." if considered else "."
            )
        confidence = 0.0 if best is None else max(0.0, min(0.2, best.scores["encoder"] / 2))
        # the closest facts are shown as context, never as an answer
        related = (
            self.retriever.search_facts(question, k=self.config.related_facts) if self.config.related_facts else []
        )
        labels = {x: self._label(x) for t, _ in related for x in (t.head, t.relation, t.tail)}
        evidence = Evidence(triples=[t for t, _ in related], source="synergize:relation-path; related facts: faiss")
        return Answer(
            question=question,
            text=text,
            entities=[],
            evidence=evidence,
            confidence=confidence,
            labels=labels,
            metadata={"found": False, "considered": considered},
        )


MASK = "X"
LONG_SEARCH_SECONDS = 1.0  # a search running longer than this, under a time budget, pauses now and then
WORK_SECONDS, PAUSE_SECONDS = 0.01, 0.03  # then works a quarter of the time: short requests get the interpreter
_TIMED_CHUNK = 64  # texts encoded (or plans scored by the model) between two looks at the clock
WH_WORDS = frozenset({"which", "what", "name", "list", "all", "every", "whose", "who", "where"})
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "and",
        "or",
        "s",
    ]
)


_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|'s?")
DETERMINERS = frozenset({"the", "a", "an"})


def _chained_nouns(tokens: list[str]) -> list[int]:
    """Positions of the words chained to the masked entity, from the entity outwards:
    ``X 's dad 's job`` and ``the job of the dad of X`` give dad, then job; in ``the job of X's dad``
    the possessive comes first."""
    found = []
    for i, token in enumerate(tokens):
        if token != MASK.lower():
            continue
        j = i + 1
        while j + 1 < len(tokens) and tokens[j] in ("'s", "'"):
            found.append(j + 1)
            j += 2
        j = i - 1
        while j >= 1 and tokens[j] == "of":
            k = j - 1
            while k >= 0 and tokens[k] in DETERMINERS:
                k -= 1
            if k < 0:
                break
            found.append(k)
            j = k - 1
            while j >= 0 and tokens[j] in DETERMINERS:
                j -= 1
    return found


def _mask(question: str, mentions: list[str]) -> str:
    """The question with entity mentions replaced by ``MASK``, so plans are compared without the topic."""
    for mention in sorted(mentions, key=len, reverse=True):
        possessive = re.match(r"(.*?)(['’]s?)$", mention)
        name = possessive.group(1) if possessive else mention
        question = re.sub(re.escape(name), MASK, question, flags=re.IGNORECASE)
    return question


def _evidence_walks(walks: list[GraphPath], limit: int) -> list[GraphPath]:
    """At least one walk per answer, then more, up to ``limit``."""
    first: dict[str, GraphPath] = {}
    for w in walks:
        first.setdefault(w.end, w)
    chosen = list(first.values())[:limit]
    taken = set(chosen)
    extra = itertools.islice((w for w in walks if w not in taken), max(0, limit - len(chosen)))
    return chosen + list(extra)


def _join(labels: list[str], limit: int = 25) -> str:
    labels = sorted(labels)
    if len(labels) > limit:
        return ", ".join(labels[:limit]) + f" and {len(labels) - limit} more"
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
