"""Triples -> text: a LoRA adapter trained on WebNLG train verbalizes a triple set or an entity's facts.

The prompt lists the triples as ``ENT1 | relation | ENT2 ; ...``: entities as placeholders,
relations readable (ids split at camelCase); the target is a reference text with the same
placeholders. The model writes placeholders, and the names go back in afterwards, so
it never has to spell a name it has not seen. Decoding is greedy and never repeats a 4-gram.

Example::

    verbalizer = load_verbalizer(Settings())        # the shipped adapter
    verbalizer.verbalize([("Chad", "capital", "N'Djamena")])   # "The capital of Chad is N'Djamena."
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from kgllm.datasets.webnlg import (
    delexicalize,
    delexicalized_triples,
    placeholders_in,
    read_webnlg,
    relexicalize,
)
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import normalize, readable
from kgllm.llm.adapters import AdapterConfig, load_adapted
from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.llm.tasks import TaskExample
from kgllm.llm.tuning import RunConfig
from kgllm.pipelines.construction.adapters import TaskTraining, known_relations, task_model, trained_adapter
from kgllm.settings import Settings
from kgllm.types import Answer

log = logging.getLogger(__name__)

VERBALIZE_TRAINING = TaskTraining(
    AdapterConfig(method="lora", rank=16, alpha=32),
    RunConfig(learning_rate=3e-3, batch_size=16, epochs=4, max_minutes=15.0, warmup_steps=50, save_steps=500),
)
MAX_NEW_TOKENS = 120
NO_REPEAT_NGRAM = 4  # a repetition penalty would punish every placeholder after the first
_LINKING_WORDS = frozenset(["of", "in", "to", "by", "with", "from", "for", "on", "at", "as", "than", "into"])
_VERBS = frozenset(
    ["is", "was", "has", "had", "have", "knows", "borders", "contains", "owns", "uses", "speaks", "includes"]
)
MAX_FACTS = 6  # an entity's facts verbalized at once; more are left out of the prompt


def verbalize_prompt(triples: Sequence[tuple[str, str, str]]) -> str:
    facts = " ; ".join(f"{s} | {readable(r, relation=True)} | {o}" for s, r, o in delexicalized_triples(triples))
    return f"Facts: {facts}\nText:"


def verbalize_examples(train_path: str | Path) -> list[TaskExample]:
    """(prompt, delexicalized reference) of every WebNLG entry and reference text whose entities all show."""
    examples = []
    for example in read_webnlg(train_path):
        prompt = verbalize_prompt(example.triples)
        for text in example.texts:
            if (target := delexicalize(example.triples, text.strip())) is not None:
                examples.append(TaskExample(prompt, " " + target, (target,)))
    return examples


def train_verbalizer(
    train_path: str | Path, settings: Settings, training: TaskTraining = VERBALIZE_TRAINING, progress: bool = True
) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of the verbalization adapter trained on ``train_path`` (cached)."""
    return trained_adapter("verbalize", train_path, verbalize_examples, training, settings, progress)


class Verbalizer:
    """The adapted model that turns triple sets into text.

    Facts whose relation the adapter never saw in training (``known_relations``; None:
    trust it with all) are said by :func:`fact_sentence` instead: a small model
    phrases an unseen relation as some relation it knows, which reads well and is false.
    """

    def __init__(self, lm: LanguageModel, known_relations: Iterable[str] | None = None, batch_size: int = 8):
        self.lm = lm
        self.known = None if known_relations is None else {_relation_key(r) for r in known_relations}
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        """The model's name."""
        return self.lm.name

    def verbalize(self, triple_sets: Sequence[Sequence[tuple[str, str, str]]]) -> list[str]:
        """One text per triple set. Objects of one subject and relation are listed in one fact,
        and a fact whose entity the model left out is added as a plain sentence."""
        sets = [grouped(t) for t in triple_sets]
        learned = [[t for t in facts if self.knows(t[1])] for facts in sets]
        generated = iter(self._generate([facts for facts in learned if facts]))
        texts = []
        for facts, model_facts in zip(sets, learned, strict=True):
            plain = [fact_sentence(*t) for t in facts if not self.knows(t[1])]
            texts.append(" ".join([next(generated)] + plain if model_facts else plain))
        return texts

    def knows(self, relation: str) -> bool:
        return self.known is None or _relation_key(relation) in self.known

    def _generate(self, triple_sets: list[list[tuple[str, str, str]]]) -> list[str]:
        texts = []
        for start in range(0, len(triple_sets), self.batch_size):
            batch = triple_sets[start : start + self.batch_size]
            generated = self._batch([verbalize_prompt(t) for t in batch])
            texts += [
                relexicalize(with_missing_facts(text, triples), triples)
                for text, triples in zip(generated, batch, strict=True)
            ]
        return texts

    def _batch(self, prompts: list[str]) -> list[str]:
        config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, no_repeat_ngram_size=NO_REPEAT_NGRAM, stop=())
        return [" ".join(text.split()) for [text] in self.lm.generate(prompts, config)]


def grouped(triples: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Facts of one subject and relation as one, objects listed ("A, B and C"), in first-seen order."""
    objects: dict[tuple[str, str], list[str]] = {}
    for s, r, o in triples:
        objects.setdefault((s, r), []).append(o)
    return [(s, r, o[0] if len(o) == 1 else ", ".join(o[:-1]) + " and " + o[-1]) for (s, r), o in objects.items()]


def fact_sentence(subject: str, relation: str, obj: str) -> str:
    """A plain, faithful sentence: "Chad is located in Africa.", "Bob knows Alice." or
    "The capital of Chad is N'Djamena." """
    words = readable(relation, relation=True)
    if words.split()[:1] and words.split()[0] in _VERBS:
        return f"{subject} {words} {obj}."
    if words.split()[-1:] and words.split()[-1] in _LINKING_WORDS:
        return f"{subject} is {words} {obj}."
    return f"The {words} of {subject} is {obj}."


def _relation_key(relation: str) -> str:
    return normalize(readable(relation, relation=True))


def with_missing_facts(text: str, triples: Sequence[tuple[str, str, str]]) -> str:
    """The delexicalized ``text`` with a plain sentence for each fact whose entity it never wrote."""
    written = placeholders_in(text)
    missing = [fact_sentence(s, r, o) for s, r, o in delexicalized_triples(triples) if not {s, o} <= written]
    return " ".join([text, *missing]) if missing else text


def load_verbalizer(settings: Settings, train_path: str | Path | None = None, progress: bool = True) -> Verbalizer:
    """The shipped verbalization adapter, or (with ``train_path``) the one trained on that file
    (cached); trusted with the relations of its training file."""
    base, adapter = task_model("verbalize", train_path, verbalize_examples, VERBALIZE_TRAINING, settings, progress)
    return Verbalizer(load_adapted(base, adapter, threads=settings.threads), known_relations(train_path))


def entity_facts(store: GraphStore, entity_id: str, limit: int = MAX_FACTS) -> list[tuple[str, str, str]]:
    """Up to ``limit`` facts about an entity as (label, relation label, label), outgoing ones first."""
    triples = store.neighbors(entity_id, "out", limit=limit)
    triples += store.neighbors(entity_id, "in", limit=limit - len(triples)) if len(triples) < limit else []
    return [(store.label(t.head), store.label(t.relation), store.label(t.tail)) for t in triples]


def answer_facts(answer: Answer, limit: int = MAX_FACTS) -> list[tuple[str, str, str]]:
    """The facts of the answer's best evidence path, in walking order, as labels ([] without a path)."""
    if not answer.evidence.paths:
        return []
    return [
        (answer.label(t.head), answer.label(t.relation), answer.label(t.tail))
        for t in answer.evidence.paths[0].triples[:limit]
    ]
