"""Retrieval fusion: several ranked lists of facts for a question, merged by reciprocal rank fusion.

The lists, each from the shared :class:`~kgllm.retrieval.retriever.KGRetriever`:

- ``faiss``: the facts nearest the question in the fact index;
- ``expansion``: facts within ``hops`` of the linked entities, by cosine to the question;
- ``pagerank``: the same neighbourhood ranked by personalized PageRank from the linked entities
  (a fact scores the PageRank of its two ends), which favours facts that chain back to them;
- ``paths``: with a path answerer (the session's relation-path reasoner), the facts of the relation
  paths it walks for the question, in walking order: the chains a two-hop question needs, which
  the lists above rank below the many facts that mention the question's entity.

With ``paths_first`` (the default), the reasoner's paths lead: one item for each way they walk
(the same start and relations), holding the first path to each answer that way
(:attr:`RankedFact.paths`), in the reasoner's order; the other lists' facts follow by fused score,
less the facts the paths already hold. The paths are planned for the question's relations, so they
are the most precise list (retrieval by planned relation paths, as in Reasoning on Graphs), and a
reader reads the chain the question asks for on one line, its answers listed together at the end
(``Chad > neighbor of > Libya, Niger``), instead of piecing it together from facts apart or
counting how many of many lines to copy.

With a language model and ``rewrites > 0``, the model rewrites the question that many times and
each rewrite contributes its own ``faiss`` and ``expansion`` lists (RAG-Fusion). Reciprocal rank
fusion scores a fact ``sum(1 / (rrf_k + rank))`` over the lists it appears in (rank from 1), so a
fact several lists agree on rises above one that a single list puts first.

A question that links to no entity keeps only the ``faiss`` facts at least ``min_fact_score``
close to it; when nothing is left the retrieval is empty, and the answerer says so.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import networkx as nx

from kgllm.exceptions import InputError
from kgllm.graph.algorithms import personalized_pagerank
from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.pipelines.base import Answerer
from kgllm.pipelines.enhance.prompt import PromptTemplate
from kgllm.retrieval.linking import LinkedEntity
from kgllm.retrieval.retriever import KGRetriever, with_labels
from kgllm.types import GraphPath, Triple

T = TypeVar("T", bound=Hashable)

REWRITE_TEMPLATE = PromptTemplate("Question: {question}\nThe same question in other words:")


@dataclass(frozen=True)
class FusionConfig:
    """Settings of :class:`FusionRetriever`; checked at construction.

    Example: ``FusionConfig(k=20, hops=1)``.
    """

    k: int = 30
    """Facts kept after fusion (the prompt may keep fewer: see the answerer's token budget)."""
    per_list: int = 40
    """Facts taken from each ranked list before fusing."""
    hops: int = 2
    """Neighbourhood of the linked entities searched by ``expansion`` and ``pagerank``."""
    rrf_k: int = 60
    """Reciprocal rank fusion's constant: larger flattens the advantage of the top ranks."""
    rewrites: int = 0
    """Rewrites of the question asked of the language model (0: the question alone)."""
    min_fact_score: float = 0.55
    """Without a linked entity, the cosine a ``faiss`` fact needs to be kept."""
    pagerank_alpha: float = 0.85
    """PageRank's damping: the chance a walk continues rather than jumping back to the entities."""
    paths_first: bool = True
    """The path answerer's paths lead, one item for each way they walk (else their facts are one list
    among the others)."""

    def __post_init__(self) -> None:
        for name in ("k", "per_list", "hops", "rrf_k"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rewrites < 0:
            raise InputError(f"rewrites must be 0 or more, got {self.rewrites}")
        if not 0 < self.pagerank_alpha < 1:
            raise InputError(f"pagerank_alpha must be in (0, 1), got {self.pagerank_alpha}")


FUSION_OPTIONS = frozenset(f.name for f in fields(FusionConfig))


@dataclass(frozen=True, slots=True)
class RankedFact:
    """A fused fact: its triple, its fusion score and its rank (from 1) in each list that held it.

    A reasoner's walk is one item too: ``paths`` are its paths from a question entity along the
    same relations, one to each answer, and ``triple`` the first path's last fact.
    """

    triple: Triple
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    paths: tuple[GraphPath, ...] = ()

    @property
    def triples(self) -> tuple[Triple, ...]:
        """The facts of the item: its paths', or its triple alone."""
        if not self.paths:
            return (self.triple,)
        return tuple(dict.fromkeys(t for path in self.paths for t in path.triples))

    @property
    def answers(self) -> tuple[str, ...]:
        """What the item may be cited for: its paths' ends (the answers they reach), or a fact's two ends."""
        return tuple(p.end for p in self.paths) if self.paths else (self.triple.head, self.triple.tail)


@dataclass(frozen=True)
class Retrieved:
    """The fused facts for a question, best first, with the entities it linked and the rewrites used."""

    question: str
    facts: list[RankedFact]
    links: list[LinkedEntity]
    rewrites: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[str]:
        return list(dict.fromkeys(link.entity.id for link in self.links))


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[T]], rrf_k: int = 60
) -> list[tuple[T, float, dict[str, int]]]:
    """Items of several ranked lists (name -> items, best first) by fused score, best first.

    Each item scores ``sum(1 / (rrf_k + rank))`` over the lists holding it; ties keep the order in
    which items were first met. Returns (item, score, {list name: rank}).

    Example::

        reciprocal_rank_fusion({"a": ["x", "y"], "b": ["y", "z"]})[0][0]   # "y": in both lists
    """
    scores: dict[T, float] = {}
    ranks: dict[T, dict[str, int]] = {}
    for name, items in rankings.items():
        for rank, item in enumerate(dict.fromkeys(items), 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
            ranks.setdefault(item, {})[name] = rank
    order = sorted(scores, key=lambda item: -scores[item])  # sorted is stable: first met wins ties
    return [(item, scores[item], ranks[item]) for item in order]


class FusionRetriever:
    """The facts bearing on a question, from the shared retriever's lists fused by rank.

    Example::

        fused = FusionRetriever(session.retriever).retrieve("Which subregions are Chad's neighbours in?")
        fused.facts[0].triple, fused.facts[0].ranks   # Triple(...), {"faiss": 3, "expansion": 1, ...}
    """

    def __init__(
        self,
        retriever: KGRetriever,
        lm: LanguageModel | None = None,
        config: FusionConfig | None = None,
        paths: Answerer | None = None,
    ):
        self.retriever = retriever
        self.lm = lm
        self.config = config or FusionConfig()
        self.paths = paths

    def retrieve(self, question: str, **options: Any) -> Retrieved:
        """Fused facts for ``question``; ``options`` override :class:`FusionConfig` fields for this call."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        unknown = sorted(set(options) - FUSION_OPTIONS)
        if unknown:
            raise InputError(f"unknown retrieval option(s) {unknown}; known: {sorted(FUSION_OPTIONS)}")
        config = replace(self.config, **options) if options else self.config
        links = self.retriever.link(question)
        rewrites = self._rewrites(question, config.rewrites)
        walked = self._walked(question) if links else []
        rankings = self._rankings(question, links, config, rewrites, walked)
        fused = reciprocal_rank_fusion(rankings, config.rrf_k)
        if not (config.paths_first and walked):
            facts = [RankedFact(t, s, r) for t, s, r in fused[: config.k]]
            return Retrieved(question, facts, links, rewrites)
        scores = {t: s for t, s, _ in fused}
        lead = [
            RankedFact(group[0].triples[-1], scores.get(group[0].triples[-1], 0.0), {"paths": rank}, group)
            for rank, group in enumerate(same_walks(one_path_per_answer(walked)[: config.per_list]), 1)
        ]
        held = {t for item in lead for t in item.triples}
        rest = [RankedFact(t, s, r) for t, s, r in fused if t not in held]
        return Retrieved(question, (lead + rest)[: config.k], links, rewrites)

    def _walked(self, question: str) -> list[GraphPath]:
        """The path answerer's paths for the question, each once, in its order (none without one)."""
        if self.paths is None:
            return []
        paths = self.paths.answer(question).evidence.paths
        return list({(p.start, p.triples): p for p in paths if p.triples}.values())

    def _rankings(
        self,
        question: str,
        links: list[LinkedEntity],
        config: FusionConfig,
        rewrites: list[str],
        walked: list[GraphPath],
    ) -> dict[str, list[Triple]]:
        seeds = list(dict.fromkeys(link.entity.id for link in links))
        rankings: dict[str, list[Triple]] = {}
        for i, text in enumerate([question, *rewrites]):
            suffix = f"@{i}" if i else ""
            query = with_labels(text, links)
            hits = self.retriever.search_facts(query, config.per_list)
            if not seeds:
                hits = [(t, score) for t, score in hits if score >= config.min_fact_score]
            rankings["faiss" + suffix] = [t for t, _ in hits]
            if seeds:
                expanded = self.retriever.expand(seeds, query, config.hops, max_facts=config.per_list)
                rankings["expansion" + suffix] = [t for t, _ in expanded]
        if seeds:
            rankings["pagerank"] = self._pagerank(seeds, config)
            rankings["paths"] = list(dict.fromkeys(t for path in walked for t in path.triples))[: config.per_list]
        return {name: ranked for name, ranked in rankings.items() if ranked}

    def _pagerank(self, seeds: list[str], config: FusionConfig) -> list[Triple]:
        """The seeds' neighbourhood, each fact scored by the personalized PageRank of its two ends."""
        triples = self.retriever.store.subgraph(seeds, hops=config.hops, max_fanout=self.retriever.max_fanout)
        if not triples:
            return []
        graph = nx.MultiDiGraph()
        graph.add_edges_from((t.head, t.tail, t.relation) for t in triples)
        rank = dict(personalized_pagerank(graph, seeds, top_k=graph.number_of_nodes(), alpha=config.pagerank_alpha))
        scored = sorted(triples, key=lambda t: -(rank.get(t.head, 0.0) + rank.get(t.tail, 0.0)))
        return scored[: config.per_list]

    def _rewrites(self, question: str, count: int) -> list[str]:
        """``count`` distinct rewrites of the question sampled from the model (none without one)."""
        if not count or self.lm is None:
            return []
        config = GenerationConfig(
            max_new_tokens=32, do_sample=True, temperature=0.8, num_return_sequences=count, seed=0
        )
        texts = self.lm.generate([REWRITE_TEMPLATE.format(question=question)], config)[0]
        seen = {question.strip().lower()}
        rewrites = []
        for text in (t.strip() for t in texts):
            if text and text.lower() not in seen:
                seen.add(text.lower())
                rewrites.append(text)
        return rewrites


def one_path_per_answer(paths: list[GraphPath]) -> list[GraphPath]:
    """The first of the paths to each answer, in their order: a prompt numbers every answer once, and
    a reader cites each numbered path it is shown, where it would have to skip a repeated answer."""
    first: dict[str, GraphPath] = {}
    for path in paths:
        first.setdefault(path.end, path)
    return list(first.values())


def same_walks(paths: list[GraphPath]) -> list[tuple[GraphPath, ...]]:
    """``paths`` grouped by their walk (start, and each relation in the direction walked), in order of
    first appearance: a reader copies a walk's answers from one line, where it would have to count
    the lines of a walk to know where its answers stop."""
    groups: dict[tuple, list[GraphPath]] = {}
    for path in paths:
        steps = tuple((t.relation, t.tail == node) for t, node in zip(path.triples, path.nodes[1:], strict=True))
        groups.setdefault((path.start, steps), []).append(path)
    return [tuple(group) for group in groups.values()]
