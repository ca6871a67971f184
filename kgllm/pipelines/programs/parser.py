"""Question -> program, zero-shot, for any graph.

The parser reads a question in four steps, none of them trained on the graph:

1. **Entities**: the shared retriever links the mentions (``KGRetriever.link``).
2. **Words**: every other content word (or a short phrase around it) is mapped by the
   sentence encoder to a relation or class name of the graph (labels and aliases, from the
   :class:`~kgllm.pipelines.programs.schema.Schema`). A content word that maps to nothing
   ("capital" in a graph without capitals) makes the parse fail with that word as the reason.
3. **Shape**: cue words choose the form: "how many" / "number of" -> count; a yes/no question
   about two entities (or two "or" runs of them: "Is A or B in C?") -> exists; "more ... than"
   -> comparison; "most" / "fewest" -> argmax / argmin; "not" / "except" / "neither ... nor" ->
   difference (from the asked class when no entity comes before the negation); two entities in
   one list question -> intersection, or union when "or" joins them.
4. **Grounding**: each entity's relation and direction are chosen among the edges it really
   has, by the relation words of the question and by the class the question asks for.

The result carries a confidence (the weakest link: entity links, relation choices, shape);
anything the parser is unsure of is returned as a refusal with a reason, never as another question.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, Literal

import numpy as np

from kgllm.pipelines.programs.language import (
    And,
    ClassSet,
    Compare,
    Count,
    Degree,
    Direction,
    EntityRef,
    Exists,
    FilterClass,
    Hop,
    Minus,
    Or,
    Program,
    Rank,
    SetExpr,
    Where,
)
from kgllm.pipelines.programs.schema import Schema
from kgllm.types import Entity


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
AUXILIARIES = frozenset({"does", "do", "did", "is", "are", "was", "were", "has", "have", "can"})
NEGATIONS = ("not", "neither", "except", "excluding", "besides", "other than", "apart from", "without", "outside")
_CONTRACTED_NOT = re.compile(r"(?<=[a-z])n['’]t\b", re.IGNORECASE)  # "don't" -> "do not", "isn't" -> "is not"
# with "number", a comparative compares counts: "is the number of neighbours of Peru greater than ..."
_NUMBER = re.compile(r"\bnumbers?\b", re.IGNORECASE)
_COUNT_COMPARATIVES = (
    (re.compile(r"\b(greater|larger|higher|bigger)\b", re.IGNORECASE), "more"),
    (re.compile(r"\b(smaller|lower)\b", re.IGNORECASE), "fewer"),
)
# a polite frame around the question: "I'd like to know how many ...", "Do you know whether ..."
REQUEST_FRAME = re.compile(
    r"^(?:please,? |kindly )?(?:i(?:'d|’d| would) like to know|i want to know|i wonder|i(?:'m|’m| am) curious"
    r"(?: about| to know)?|do you know)\b[\s,:]*",
    re.IGNORECASE,
)
_THAN_ALL = re.compile(r"\bthan (any|all|every)\b")  # "more neighbours than any other": a superlative
EXCEPTION_WORDS = frozenset({"except", "excluding", "besides", "other", "apart"})  # leave a member out, not its links
LIST_WORDS = frozenset({"and", "or", "nor"})  # words that continue a list of entities
MAX_CUES = ("most", "top", "greatest number", "largest number", "highest number", "biggest number")
MIN_CUES = ("fewest", "least", "smallest number", "lowest number")
MORE_CUES = ("more", "greater number", "larger number", "higher number")
FEWER_CUES = ("fewer", "less", "smaller number", "lower number")
# shapes the program language does not have: a question asking for one is refused, never answered as another
UNSUPPORTED = (
    (re.compile(r"\b(average|mean|median)\b"), "averages"),
    (re.compile(r"\b(sum|summed|added up|combined)\b"), "sums"),
    (re.compile(r"\b(percent|percentage|ratio|proportion|fraction|share of)\b"), "ratios and percentages"),
    (re.compile(r"\b(not both|but not both|only one of|exactly one of)\b"), "one but not both (an exclusive or)"),
    (re.compile(r"\b(as many|as few|the same number|an equal number)\b"), "two counts being equal"),
    (re.compile(r"\b(second|third|fourth|fifth|\d+(st|nd|rd|th))\b"), "a rank after the first (second, third, ...)"),
    (
        re.compile(r"\b(each|every|per)\b.*\b(how many|number of)\b|\b(how many|number of)\b.*\b(each|per)\b"),
        "a count for each member",
    ),
    (re.compile(r"\b(how many|number of)\b.*\bin total\b"), "totals over several members"),
)
# words that shape a question (or carry no content) and need no counterpart in the graph
FUNCTION_WORDS = _word_set(
    "a an the of in on at to by for with from as into within inside outside than then that this these "
    "those it its it's their there here what which who whom whose where when how many much number numbers "
    "count total amount does do did is are was were be been being has have had having can could would "
    "will shall should name names list give show tell me us please find and or both also too as well not "
    "no nor except excluding besides other others apart but without more fewer less most least fewest same "
    "any all every each one ones some top compared compare versus vs get got so just only either neither "
    "yes true false exactly among between whether way ways common shared contain contains containing "
    "include includes including several various multiple i my we our you your they them if "
) | frozenset(NUMBERS)


@dataclass
class Parse:
    """A question read as a program, or a refusal (``program`` None) with its ``reason``."""

    question: str
    program: Program | None
    shape: str
    confidence: float
    reason: str = ""
    entities: list[Entity] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.program is not None


class Refusal(Exception):
    """Raised inside the parser; becomes a :class:`Parse` with no program."""

    def __init__(self, reason: str, shape: str = "unknown"):
        super().__init__(reason)
        self.reason = reason
        self.shape = shape


@dataclass
class ParserConfig:
    """Thresholds of the question parser."""

    word_similarity: float = 0.5  # a word (or phrase) this close to a relation or class name maps to it
    phrase_gain: float = 0.05  # a phrase must beat its words alone by this to cover a word that maps to nothing
    class_similarity: float = 0.7  # a word this close to a class name mentions the class
    max_phrase_words: int = 4
    min_link_score: float = 0.8


@dataclass
class _Mention:
    entity: Entity
    start: int  # character span in the question
    end: int
    score: float
    possessive: bool = False  # followed by 's: "Kenya's neighbours"


@dataclass
class _Words:
    tokens: list[tuple[str, int, int]]  # (word, start, end), entity mentions removed
    relation_scores: dict[str, list[tuple[float, int]]]  # relation -> (similarity, char position)
    classes: list[tuple[str, int]]  # (class, char position) in question order
    unmapped: list[tuple[str, int]]  # (word, char position)


class QuestionParser:
    """Reads questions as programs over one store (see the module docstring).

    Example::

        parser = QuestionParser(store, retriever)
        parser.parse("How many neighbours does Mali have?").program
        # Count(Hop('.../neighborOf', 'both', EntityRef('.../mali')))
    """

    def __init__(self, store, retriever, config: ParserConfig | None = None, schema: Schema | None = None):
        self.store = store
        self.retriever = retriever
        self.config = config or ParserConfig()
        self._schema = schema
        self._vectors: dict[str, np.ndarray] = {}
        self._incident: dict[str, dict[tuple[str, Direction], set[str]]] = {}
        self._types: dict[str, tuple[str, ...]] = {}

    @property
    def schema(self) -> Schema:
        if self._schema is None:
            self._schema = Schema.from_store(self.store)
        return self._schema

    # ------------------------------------------------------------ public
    def parse(self, question: str) -> Parse:
        """The program ``question`` asks for, with a confidence, or a refusal with a reason."""
        question = _CONTRACTED_NOT.sub(" not", REQUEST_FRAME.sub("", " ".join(question.split())))
        if _NUMBER.search(question):
            for comparative, word in _COUNT_COMPARATIVES:
                question = comparative.sub(word, question)
        try:
            for cue, shape in UNSUPPORTED:
                if cue.search(question.lower()):
                    raise Refusal(f"the question asks for {shape}, which query programs do not compute", "unsupported")
            mentions = self._mentions(question)
            words = self._words(question, mentions)
            names = [question[s : s + len(w)] for w, s in words.unmapped if s > 0 and question[s].isupper()]
            if names:
                raise Refusal(f"the graph has no entity named {quote_words(names)}")
            if words.unmapped:
                raise Refusal(
                    f"I could not map {quote_words([w for w, _ in words.unmapped])} to anything in this graph"
                )
            program, shape, confidence, details = self._program(question, mentions, words)
        except Refusal as refusal:
            return Parse(question, None, refusal.shape, 0.0, refusal.reason)
        entities = [m.entity for m in mentions]
        return Parse(question, program, shape, confidence, "", entities, details)

    def unmapped_class_modifiers(self, question: str) -> list[str]:
        """Words that narrow a class the question asks for but map to nothing in the graph: "landlocked"
        in "Which African countries are landlocked?", "island" in "island nations". An answer that
        drops them answers a broader question."""
        question = " ".join(question.split())
        plurals = {w for w, c in self.schema.class_words().items() if w.endswith("s")}
        if not any(w in plurals for w in _WORD.findall(question.lower())):
            return []  # no class asked for as a plural noun: nothing to encode
        try:
            words = self._words(question, self._mentions(question))
        except Refusal:  # an uncertain link: the answerer the question goes to says so
            return []
        tokens = words.tokens
        at = {start: i for i, (_, start, _) in enumerate(tokens)}
        # the classes asked for as a plural noun: "countries", not "Slovakia's subregion"
        plural_class = {at[pos] for _, pos in words.classes if pos in at and tokens[at[pos]][0].endswith("s")}

        def adjacent(i: int) -> bool:  # token i and token i + 1, with no entity between them
            return 0 <= i < len(tokens) - 1 and not question[tokens[i][2] : tokens[i + 1][1]].strip()

        found = []
        for word, pos in words.unmapped:
            i = at[pos]
            before = i + 1 in plural_class and adjacent(i)  # "island nations"
            last = i == len(tokens) - 1 and i >= 2 and tokens[i - 1][0] in AUXILIARIES
            predicate = last and i - 2 in plural_class and adjacent(i - 2) and adjacent(i - 1)
            if before or predicate:  # "countries are landlocked"
                found.append(word)
        return found

    # ------------------------------------------------------------ reading
    def _mentions(self, question: str) -> list[_Mention]:
        found: list[_Mention] = []
        taken: list[tuple[int, int]] = []
        lower = question.lower()
        for link in self.retriever.link(question):
            start = lower.find(link.mention.lower())
            if start < 0:
                continue
            end = start + len(link.mention)
            if any(start < e and s < end for s, e in taken):
                continue  # one entity per mention: the best-scored reading
            if link.score < self.config.min_link_score:
                raise Refusal(f"I am not sure that {link.mention!r} means {link.entity.label}")
            taken.append((start, end))
            text, after = lower[start:end].replace("’", "'"), lower[end : end + 2].replace("’", "'")
            possessive = text.endswith("'s") or after == "'s"  # the linker's mention may hold the 's
            found.append(_Mention(link.entity, start, end, link.score, possessive))
        return sorted(found, key=lambda m: m.start)

    def _words(self, question: str, mentions: list[_Mention]) -> _Words:
        lower = question.lower()
        tokens = [
            (m.group().replace("’", "'"), m.start(), m.end())
            for m in _WORD.finditer(lower)
            if not any(x.start <= m.start() < x.end for x in mentions)
        ]
        class_words = self.schema.class_words()
        classes: list[tuple[str, int]] = []
        content: list[int] = []
        phrases_cued = [
            (m.start(), m.end())
            for cue in MAX_CUES + MIN_CUES + MORE_CUES + FEWER_CUES
            if " " in cue
            for m in re.finditer(r"(?<![a-z])" + re.escape(cue) + r"(?![a-z])", lower)
        ]
        for i, (word, start, _) in enumerate(tokens):
            base = word.removesuffix("'s")
            if any(s <= start < e for s, e in phrases_cued):
                continue
            if base in class_words:
                classes.append((class_words[base], start))
            elif base not in FUNCTION_WORDS and not base.isdigit():
                content.append(i)
        relation_scores: dict[str, list[tuple[float, int]]] = {}
        unmapped = []
        if content:
            names, owners = self._names()
            name_vectors = np.stack(self._encode(names))
            single = dict(zip(content, np.stack(self._encode([tokens[i][0] for i in content])) @ name_vectors.T))
            spans: dict[int, list[tuple[int, int]]] = {}
            for i in content:
                spans[i] = [
                    (s, n)
                    for n in range(2, self.config.max_phrase_words + 1)
                    for s in range(max(0, i - n + 1), min(i, len(tokens) - n) + 1)
                ]
            phrases = {(s, n): " ".join(w for w, _, _ in tokens[s : s + n]) for v in spans.values() for s, n in v}
            phrase_sims = (
                dict(zip(phrases, np.stack(self._encode(list(phrases.values()))) @ name_vectors.T)) if phrases else {}
            )
            # phrases around each content word: a phrase covers a word when it maps to a name
            # better than its other content words alone do
            covered: dict[int, np.ndarray] = {}
            for i in content:
                best = single[i]
                for s, n in spans[i]:
                    others = [single[j] for j in range(s, s + n) if j in single and j != i]
                    floor = np.max(others, axis=0) + self.config.phrase_gain if others else -1.0
                    sims = phrase_sims[(s, n)]
                    best = np.maximum(best, np.where(sims >= floor, sims, -1.0))
                covered[i] = best
            for i in content:
                sims = covered[i]
                j = int(sims.argmax())
                kind, owner = owners[j]
                relations = [
                    (float(sims[k]), name)
                    for k, (kind_k, name) in enumerate(owners)
                    if kind_k == "relation" and sims[k] >= self.config.word_similarity
                ]
                is_class = kind == "class" and single[i][j] >= self.config.class_similarity
                # a word nearest a class but not close enough to mention it ("island" ~ country) names
                # something the graph does not hold: dropping it would answer a broader question
                if sims[j] < self.config.word_similarity or (kind == "class" and not is_class and not relations):
                    unmapped.append((tokens[i][0], tokens[i][1]))
                elif is_class:
                    classes.append((owner, tokens[i][1]))
                for score, relation in relations:
                    relation_scores.setdefault(relation, []).append((score, tokens[i][1]))
        classes.sort(key=lambda c: c[1])
        return _Words(tokens, relation_scores, classes, unmapped)

    def _names(self) -> tuple[list[str], list[tuple[str, str]]]:
        names, owners = [], []
        for r in self.schema.relations.values():
            for name in r.names:
                names.append(name)
                owners.append(("relation", r.id))
        for c in self.schema.classes.values():
            for name in c.names:
                names.append(name)
                owners.append(("class", c.id))
        return names, owners

    # ------------------------------------------------------------ shapes
    def _program(self, question: str, mentions: list[_Mention], words: _Words):
        q = question.lower().replace("’", "'")
        words_only = " " + " ".join(w for w, _, _ in words.tokens) + " "
        link_confidence = min((m.score for m in mentions), default=1.0)
        details: dict[str, Any] = {"classes": [c for c, _ in words.classes]}
        first = words.tokens[0][0] if words.tokens else ""
        # "whether" and "if" open a yes/no question a request frame held ("do you know whether ...")
        is_yes_no = first in AUXILIARIES | {"whether", "if"} and not (mentions and mentions[0].start == 0)
        than_all = _THAN_ALL.search(q) is not None
        comparison = _cue(words_only, MORE_CUES + FEWER_CUES) and (" than " in q or " or " in q) and not than_all
        both = " both " in words_only
        superlative = _cue(words_only, MAX_CUES + MIN_CUES) or than_all
        negated_at = _first_cue(q, NEGATIONS)
        if is_yes_no and len(words.tokens) > 1 and words.tokens[1][1] == negated_at:
            negated_at = None  # "Doesn't Chad border Niger?" asks what "Does Chad border Niger?" asks
        asked = words.classes[0][0] if words.classes else None

        if comparison:
            program, confidence = self._comparison(q, mentions, words, is_yes_no, words_only)
            shape = "comparison"
        elif superlative:
            program, confidence = self._superlative(q, mentions, words, words_only, negated_at)
            shape = "superlative"
        elif is_yes_no and len(groups := _or_groups(mentions, words)) == 2 and negated_at is None and not both:
            subjects, objects = groups
            program, confidence = self._exists(subjects, objects, words)
            shape = "exists"
        elif is_yes_no and len(mentions) == 1 and asked and not words.relation_scores and negated_at is None:
            # "Is Australia a country?": membership of the class, no relation
            program, confidence, shape = Exists(FilterClass(asked, EntityRef(mentions[0].entity.id))), 0.95, "exists"
        elif is_yes_no and len(groups) > 2 and _is_subject(mentions[0], words) and not both:
            # "does Spain border France and Italy": two checks at once, which one Exists does not hold
            raise Refusal("the question checks several links at once; ask about each one", "exists")
        else:
            counting = _cue(words_only, (" how many ", " number of ", " count "))
            shape = "count" if counting else "list"
            inner, confidence = self._set(mentions, words, asked, negated_at)
            if is_yes_no and not counting:
                program, shape = Exists(inner), "exists"
            else:
                program = Count(inner) if counting else inner
            positive = [m for m, negated in zip(mentions, _negated(mentions, words, negated_at)) if not negated]
            if negated_at is not None:
                shape += "+difference"
            elif any(_unions(positive, words)):
                shape += "+union"
            elif len(positive) > 1:
                shape += "+intersection"
        return program, shape, confidence * link_confidence, details

    def _set(self, mentions, words: _Words, asked: str | None, negated_at: int | None) -> tuple[SetExpr, float]:
        flags = _negated(mentions, words, negated_at)
        positive = [m for m, negated in zip(mentions, flags) if not negated]
        negative = [m for m, negated in zip(mentions, flags) if negated]
        if not positive and asked is None:
            raise Refusal("I could not find an entity of this graph in the question", "list")
        if negated_at is not None and not negative:
            # "which African countries do not border any country": dropping the negation would answer its opposite
            raise Refusal("I could not tell what the question excludes", "list")
        confidence = 1.0 if positive else 0.9
        target = asked
        parts: list[SetExpr] = []
        for m in positive:
            near = self._words_near(m, positive, words) if len(positive) > 1 else words
            before = negated_at if negated_at is not None and m.start < negated_at else None
            (relation, direction), c, result_class = self._hop_for(m, near, target, before=before)
            target = target or result_class
            confidence = min(confidence, c)
            parts.append(Hop(relation, direction, EntityRef(m.entity.id)))
        if parts:
            expr = parts[0]
        else:  # "which countries are not in Africa": the class asked for is the set
            assert asked is not None  # refused above
            expr = ClassSet(asked)
        for part, union in zip(parts[1:], _unions(positive, words)):
            expr = Or(expr, part) if union else And(expr, part)
        # "border neither France nor Spain": the relation is named before the negation, not after it
        cue = next((w for w, start, _ in words.tokens if start == negated_at), None)
        relation_after = None if cue == "neither" else negated_at
        for m in negative:
            of_the_set = target in self._types_of(m.entity.id)
            if not (of_the_set and cue in EXCEPTION_WORDS):
                (relation, direction), c, _ = self._hop_for(m, words, target, after=relation_after)
                confidence = min(confidence, c)
                expr = Where(relation, _flip(direction), EntityRef(m.entity.id), expr, negate=True)
            # "border Kenya but not Uganda": Uganda itself is out too; "border Germany except France":
            # only France is out, not the countries that border it
            if of_the_set:
                expr = Minus(expr, EntityRef(m.entity.id))
        if asked is not None and self._needs_class_filter(parts, asked):
            expr = FilterClass(asked, expr)
        return expr, confidence

    def _exists(self, subjects: list[_Mention], objects: list[_Mention], words: _Words) -> tuple[Program, float]:
        """A link from any subject to any object: "Does A border B (or C)?", "Is A or B in C?"."""
        reaches = tuple({c for m in objects for c in self._types_of(m.entity.id)})
        (relation, direction), confidence, _ = self._hop_for(subjects[0], words, None, reaches=reaches)
        return Exists(And(Hop(relation, direction, _either(subjects)), _either(objects))), confidence

    def _comparison(self, q: str, mentions, words: _Words, is_yes_no: bool, words_only: str):
        if len(mentions) != 2:
            raise Refusal("a comparison needs two entities of this graph", "comparison")
        a, b = mentions
        shared = set(self._types_of(a.entity.id)) & set(self._types_of(b.entity.id))
        if not shared:
            raise Refusal(
                f"{a.entity.label} and {b.entity.label} are different kinds of thing; they cannot be compared",
                "comparison",
            )
        counted = self._counted_class(q, words, MORE_CUES + FEWER_CUES, ranked=shared)
        metric: Degree
        if counted:  # "does Africa have more countries than Europe"
            metric, confidence = self._class_count(min(shared), counted), 0.95
        else:
            relation, confidence = self._metric_relation(words, shared)
            metric = Degree(relation, self._metric_direction(relation, shared))
        more = _first_cue(words_only, MORE_CUES)
        fewer = _first_cue(words_only, FEWER_CUES)
        op: Literal["more", "fewer"] = "more" if fewer is None or (more is not None and more < fewer) else "fewer"
        if is_yes_no:
            return Compare(op, metric, a.entity.id, b.entity.id), confidence
        order: Literal["max", "min"] = "max" if op == "more" else "min"
        return Rank(order, 1, metric, Or(EntityRef(a.entity.id), EntityRef(b.entity.id))), confidence

    def _superlative(self, q: str, mentions, words: _Words, words_only: str, negated_at):
        high, low = (MAX_CUES, MIN_CUES) if _cue(words_only, MAX_CUES + MIN_CUES) else (MORE_CUES, FEWER_CUES)
        order: Literal["max", "min"] = "max" if _first_cue(words_only, high) is not None else "min"
        k = 1
        for w, _, _ in words.tokens:
            if w.isdigit() or w in NUMBERS:
                k = int(w) if w.isdigit() else NUMBERS[w]
                break
        classes = list(dict.fromkeys(c for c, _ in words.classes))
        if not classes:
            raise Refusal("I could not tell what kind of thing is ranked", "superlative")
        counted = self._counted_class(q, words, high + low, ranked=classes[:1])
        # "which region is the country with the most neighbours in": the ranked class is the last named;
        # "which region has the most countries": the first is ranked by how many of the last it holds
        ranked, asked = (classes[0], classes[0]) if counted else (classes[-1], classes[0])
        if mentions:
            domain, confidence = self._set(mentions, words, ranked, negated_at)
            if not isinstance(domain, FilterClass):
                domain = FilterClass(ranked, domain)
        else:
            domain, confidence = ClassSet(ranked), 1.0
        if counted:
            metric, c = self._class_count(ranked, counted), 0.95
        else:
            relation, c = self._metric_relation(words, {ranked}, exclude={h.relation for h in _hops(domain)})
            metric = Degree(relation, self._metric_direction(relation, {ranked}))
        program: SetExpr = Rank(order, k, metric, domain)
        confidence = min(confidence, c)
        if asked != ranked:
            link = self._class_link(ranked, asked)
            if link is None:
                raise Refusal(f"I could not link a {self.class_name(ranked)} to a {self.class_name(asked)}")
            program = FilterClass(asked, Hop(link[0], link[1], program))
        return program, confidence

    def _counted_class(self, q: str, words: _Words, cues, ranked: Collection[str]) -> str | None:
        """The class named after the cue when it is not one of the ``ranked`` classes ("which region has
        the most countries" -> countries), else None."""
        cue_at = _first_cue(q, cues)
        after = [c for c, pos in words.classes if cue_at is not None and pos > cue_at]
        return after[0] if after and after[0] not in ranked else None

    def _class_count(self, ranked: str, counted: str) -> Degree:
        """How many members of ``counted`` an entity of ``ranked`` is linked to, by the relation between the two."""
        link = self._class_link(ranked, counted)
        if link is None:
            raise Refusal(
                f"I could not link a {self.class_name(ranked)} to a {self.class_name(counted)}", "superlative"
            )
        return Degree(link[0], link[1], counted)

    # ------------------------------------------------------------ grounding
    def _words_near(self, mention: _Mention, mentions: list[_Mention], words: _Words) -> _Words:
        """The relation words ``mention`` owns: those after the mention before it and before itself (and,
        for the last, after it too), so "neighbours of Niger that belong to Western Africa" credits
        "neighbours" to Niger and "belong to" to Western Africa. A possessive owns the word after it
        instead ("Niger's neighbours located in Western Africa"). One that owns none shares every word."""
        ordered = sorted(mentions, key=lambda m: m.start)
        at = ordered.index(mention)
        before = ordered[at - 1] if at else None
        low = 0 if before is None else _possessed_end(before, words) or before.end
        high = mention.start if at < len(ordered) - 1 else float("inf")
        if mention.possessive:
            low, high = mention.end, _possessed_end(mention, words) or high
        owned = {
            relation: [(score, pos) for score, pos in hits if low <= pos < high]
            for relation, hits in words.relation_scores.items()
        }
        if not any(score >= self.config.word_similarity for hits in owned.values() for score, _ in hits):
            return words
        return replace(words, relation_scores={relation: hits for relation, hits in owned.items() if hits})

    def _hop_for(
        self,
        mention: _Mention,
        words: _Words,
        target: str | None,
        before: int | None = None,
        after: int | None = None,
        reaches: tuple[str, ...] = (),
    ) -> tuple[tuple[str, Direction], float, str | None]:
        """The relation and direction from ``mention`` the question means, its confidence and the
        main class it reaches; only edges the entity really has are candidates."""
        incident = self._incident_of(mention.entity.id)
        if not incident:
            raise Refusal(f"the graph has no facts about {mention.entity.label}")
        scored = []
        for (relation, direction), others in incident.items():
            hits = [
                s
                for s, pos in words.relation_scores.get(relation, [])
                if (before is None or pos < before) and (after is None or pos >= after)
            ]
            word = max(hits, default=0.0)
            classes = self._classes_of(others)
            fits = (target is None or target in classes) and (not reaches or bool(set(reaches) & classes))
            scored.append((fits, word, relation, direction, classes))
        scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
        fits, word, relation, direction, classes = scored[0]
        if not fits:
            wanted = self.class_name(target) if target else "such things"
            raise Refusal(f"{mention.entity.label} is not linked to any {wanted} in this graph")
        named_elsewhere = {
            r
            for r, hits in words.relation_scores.items()
            if r != relation
            and any((before is None or pos < before) and (after is None or pos >= after) for _, pos in hits)
        }
        if word < self.config.word_similarity and len({s[2] for s in scored}) > 1 and named_elsewhere:
            # the question names another relation and none names this one: it is not what was asked
            raise Refusal(f"I could not tell how the question relates to {mention.entity.label}")
        rivals = [s for s in scored[1:] if s[0]]
        if not rivals:
            confidence = 0.95
        elif word >= self.config.word_similarity:
            margin = word - rivals[0][1]
            confidence = min(0.95, 0.5 + 2.5 * margin)
        else:
            named = " or ".join(sorted({self.store.label(s[2]) for s in scored if s[0]}))
            raise Refusal(f"I could not tell how the question relates to {mention.entity.label} ({named}?)")
        main = max(classes, key=lambda c: self.schema.classes[c].size if c in self.schema.classes else 0, default=None)
        return (relation, direction), confidence, (target or main)

    def _metric_relation(self, words: _Words, classes: set[str], exclude: Collection[str] = frozenset()):
        """The relation a count metric is over: the best-named relation that entities of ``classes`` have."""
        candidates = []
        for relation, hits in words.relation_scores.items():
            info = self.schema.relations[relation]
            if relation in exclude and len(words.relation_scores) > 1:
                continue
            if not any(info.head_classes[c] or info.tail_classes[c] for c in classes):
                continue
            candidates.append((max(s for s, _ in hits), relation))
        if not candidates:
            raise Refusal("I could not tell what to count for the comparison or ranking", "superlative")
        candidates.sort(reverse=True)
        best, relation = candidates[0]
        margin = best - (candidates[1][0] if len(candidates) > 1 else 0.0)
        return relation, min(0.95, 0.5 + 2.5 * margin)

    def _metric_direction(self, relation: str, classes: set[str]) -> Direction:
        info = self.schema.relations[relation]
        if info.symmetric:
            return "both"
        heads = sum(info.head_classes[c] for c in classes)
        tails = sum(info.tail_classes[c] for c in classes)
        return "out" if heads >= tails else "in"

    def _class_link(self, source: str, target: str) -> tuple[str, Direction] | None:
        best: tuple[int, str, Direction] | None = None
        for info in self.schema.relations.values():
            out = min(info.head_classes[source], info.tail_classes[target])
            back = min(info.head_classes[target], info.tail_classes[source])
            links: tuple[tuple[int, Direction], ...] = ((out, "out"), (back, "in"))
            for n, direction in links:
                if n and (best is None or n > best[0]):
                    best = (n, info.id, direction)
        return None if best is None else (best[1], best[2])

    def _needs_class_filter(self, parts: list[SetExpr], asked: str) -> bool:
        for part in parts:
            assert isinstance(part, Hop) and isinstance(part.source, EntityRef)
            others = self._incident_of(part.source.id).get((part.relation, part.direction), set())
            if any(asked not in self._types_of(o) for o in others):
                return True
        return False

    def _incident_of(self, entity: str) -> dict[tuple[str, Direction], set[str]]:
        if entity not in self._incident:
            found: dict[tuple[str, Direction], set[str]] = {}
            for t in self.store.neighbors(entity, "both", limit=20_000):
                info = self.schema.relations.get(t.relation)
                key: tuple[str, Direction]
                if info is not None and info.symmetric:
                    key = (t.relation, "both")
                else:
                    key = (t.relation, "out" if t.head == entity else "in")
                found.setdefault(key, set()).add(t.tail if t.head == entity else t.head)
            self._incident[entity] = found
        return self._incident[entity]

    def _types_of(self, node: str) -> tuple[str, ...]:
        if node not in self._types:
            self._types[node] = self.store.describe(node).types
        return self._types[node]

    def _classes_of(self, nodes: set[str]) -> set[str]:
        return {c for n in nodes for c in self._types_of(n)}

    def class_name(self, cls: str) -> str:
        info = self.schema.classes.get(cls)
        return info.names[0] if info and info.names else self.store.label(cls)

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self.retriever.encoder.encode(missing)))
        return [self._vectors[t] for t in texts]


def _hops(expr) -> list[Hop]:
    found = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Hop):
            found.append(node)
        for name in ("source", "left", "right", "target"):
            child = getattr(node, name, None)
            if child is not None and not isinstance(child, str):
                stack.append(child)
    return found


_FLIPPED: dict[Direction, Direction] = {"out": "in", "in": "out"}


def _flip(direction: Direction) -> Direction:
    return _FLIPPED.get(direction, direction)


def _cue(text: str, cues) -> bool:
    return _first_cue(" " + text + " ", cues) is not None


def _possessed_end(mention: _Mention, words: _Words) -> int | None:
    """Where the word a possessive mention owns ends ("neighbours" in "Niger's neighbours"); None for
    a mention that is not possessive or has no word after it."""
    if not mention.possessive:
        return None
    return next((end for _, start, end in words.tokens if start >= mention.end), None)


def _unions(mentions, words: _Words) -> list[bool]:
    """For each mention after the first: whether "or" joins it to the one before ("border Spain or
    Portugal": either set), rather than "and" or nothing (both sets)."""
    return [any(w == "or" and a.end <= start < b.start for w, start, _ in words.tokens) for a, b in pairwise(mentions)]


def _negated(mentions, words: _Words, negated_at: int | None) -> list[bool]:
    """Which mentions a negation at ``negated_at`` excludes: the first after it and those listed with
    it ("not Uganda or Ethiopia", "neither Chad nor Niger"); a mention after other words is outside
    its scope ("neither Chad nor Niger and are in Africa")."""
    flags = [False] * len(mentions)
    after = [i for i, m in enumerate(mentions) if negated_at is not None and m.start >= negated_at]
    for n, i in enumerate(after):
        previous = mentions[after[n - 1]] if n else None
        listed = previous is not None and all(
            w in LIST_WORDS for w, start, _ in words.tokens if previous.end <= start < mentions[i].start
        )
        flags[i] = n == 0 or (flags[after[n - 1]] and listed)
    return flags


def _or_groups(mentions, words: _Words) -> list[list]:
    """Mentions in runs joined by "or": "Spain", "France or Italy"."""
    groups: list[list] = []
    for mention, union in zip(mentions, [False, *_unions(mentions, words)]):
        if union:
            groups[-1].append(mention)
        else:
            groups.append([mention])
    return groups


def _either(mentions) -> SetExpr:
    expr: SetExpr = EntityRef(mentions[0].entity.id)
    for m in mentions[1:]:
        expr = Or(expr, EntityRef(m.entity.id))
    return expr


def _is_subject(mention, words: _Words) -> bool:
    """Whether ``mention`` comes straight after the question's first word ("Does Spain ...")."""
    return len(words.tokens) > 0 and not any(words.tokens[0][2] < start < mention.start for _, start, _ in words.tokens)


def _first_cue(text: str, cues) -> int | None:
    positions = [
        m.start() for cue in cues for m in re.finditer(r"(?<![a-z])" + re.escape(cue.strip()) + r"(?![a-z])", text)
    ]
    return min(positions, default=None)


def quote_words(words: list[str]) -> str:
    words = list(dict.fromkeys(words))
    quoted = [f"'{w}'" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
