"""Triples -> text: a LoRA adapter trained on WebNLG train verbalizes a triple set or an entity's facts.

The prompt lists the triples as ``ENT1 | relation | ENT2 ; ...``: entities as placeholders,
relations readable (ids split at camelCase); the target is a reference text with the same
placeholders. The model writes placeholders, and the names go back in afterwards, so
it never has to spell a name it has not seen. Decoding is greedy and never repeats a 4-gram.

Example::

    verbalizer = load_verbalizer(Settings(), "webnlg/train.jsonl")
    verbalizer.verbalize([("Chad", "capital", "N'Djamena")])   # "The capital of Chad is N'Djamena."
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from kgllm.graph.base import GraphStore
from kgllm.graph.labels import readable
from kgllm.llm.hf import HFCausalLM
from kgllm.llm.adapters import AdapterConfig
from kgllm.llm.tasks import TaskExample
from kgllm.llm.tuning import RunConfig
from kgllm.pipelines.augment.adapters import TaskTraining, load_adapted, trained_adapter
from kgllm.pipelines.augment.webnlg import delexicalize, delexicalized_triples, read_webnlg, relexicalize
from kgllm.settings import Settings
from kgllm.types import Answer

log = logging.getLogger(__name__)

VERBALIZE_TRAINING = TaskTraining(AdapterConfig(method="lora", rank=16, alpha=32),
                                  RunConfig(learning_rate=3e-3, batch_size=16, epochs=4, max_minutes=15.0,
                                            warmup_steps=50, save_steps=500))
MAX_NEW_TOKENS = 120
NO_REPEAT_NGRAM = 4  # a repetition penalty would punish every placeholder after the first
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


def train_verbalizer(train_path: str | Path, settings: Settings, training: TaskTraining = VERBALIZE_TRAINING,
                     progress: bool = True) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of the verbalization adapter trained on ``train_path`` (cached)."""
    return trained_adapter("verbalize", train_path, verbalize_examples, training, settings, progress)


class Verbalizer:
    """The adapted model that turns triple sets into text."""

    def __init__(self, lm: HFCausalLM, batch_size: int = 8):
        self.lm = lm
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.lm.name

    def verbalize(self, triple_sets: Sequence[Sequence[tuple[str, str, str]]]) -> list[str]:
        """One text per triple set."""
        texts = []
        for start in range(0, len(triple_sets), self.batch_size):
            batch = triple_sets[start:start + self.batch_size]
            generated = self._batch([verbalize_prompt(t) for t in batch])
            texts += [relexicalize(text, triples) for text, triples in zip(generated, batch, strict=True)]
        return texts

    @torch.inference_mode()
    def _batch(self, prompts: list[str]) -> list[str]:
        tokenizer, pad = self.lm.tokenizer, self.lm._pad_id
        encoded = [tokenizer(p)["input_ids"] for p in prompts]
        width = max(map(len, encoded))
        input_ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        out = self.lm.model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=MAX_NEW_TOKENS,
                                     do_sample=False, no_repeat_ngram_size=NO_REPEAT_NGRAM, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=pad)
        return [" ".join(tokenizer.decode(row[width:], skip_special_tokens=True).split()) for row in out]


def load_verbalizer(settings: Settings, train_path: str | Path, progress: bool = True) -> Verbalizer:
    base, adapter = train_verbalizer(train_path, settings, progress=progress)
    return Verbalizer(load_adapted(base, adapter, threads=settings.threads))


def entity_facts(store: GraphStore, entity_id: str, limit: int = MAX_FACTS) -> list[tuple[str, str, str]]:
    """Up to ``limit`` facts about an entity as (label, relation label, label), outgoing ones first."""
    triples = store.neighbors(entity_id, "out", limit=limit)
    triples += store.neighbors(entity_id, "in", limit=limit - len(triples)) if len(triples) < limit else []
    return [(store.label(t.head), store.label(t.relation), store.label(t.tail)) for t in triples]


def answer_facts(answer: Answer, limit: int = MAX_FACTS) -> list[tuple[str, str, str]]:
    """The facts of the answer's best evidence path, in walking order, as labels ([] without a path)."""
    if not answer.evidence.paths:
        return []
    return [(answer.label(t.head), answer.label(t.relation), answer.label(t.tail))
            for t in answer.evidence.paths[0].triples[:limit]]
