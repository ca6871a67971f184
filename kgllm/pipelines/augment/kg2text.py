"""Triples -> text: a LoRA adapter trained on WebNLG train verbalizes a triple set or an entity's facts.

The prompt lists the triples as ``subject | relation | object ; ...`` with readable
names (relation ids split at camelCase), the target is one reference text. Decoding
is greedy with a mild repetition penalty.

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
from kgllm.pipelines.augment.adapters import AdapterConfig, Pair, load_adapted, trained_adapter
from kgllm.pipelines.augment.webnlg import read_webnlg
from kgllm.settings import Settings

log = logging.getLogger(__name__)

VERBALIZE_CONFIG = AdapterConfig(max_minutes=6.0, epochs=1.0, max_tokens=128, learning_rate=5e-3)
MAX_NEW_TOKENS = 120
MAX_FACTS = 6  # an entity's facts verbalized at once; more are left out of the prompt


def verbalize_prompt(triples: Sequence[tuple[str, str, str]]) -> str:
    facts = " ; ".join(f"{s} | {readable(r, relation=True)} | {o}" for s, r, o in triples)
    return f"Facts: {facts}\nText:"


def verbalize_pairs(tokenizer, train_path: str | Path) -> list[Pair]:
    """(prompt, target) ids of every (entry, reference text) of WebNLG train."""
    pairs = []
    for example in read_webnlg(train_path):
        prompt = tokenizer(verbalize_prompt(example.triples))["input_ids"]
        for text in example.texts:
            pairs.append((prompt, tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
                          + [tokenizer.eos_token_id]))
    return pairs


def train_verbalizer(train_path: str | Path, settings: Settings, config: AdapterConfig = VERBALIZE_CONFIG,
                     progress: bool = True) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of the verbalization adapter trained on ``train_path`` (cached)."""
    return trained_adapter("verbalize", train_path, verbalize_pairs, config, settings, progress)


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
            texts += self._batch([verbalize_prompt(t) for t in triple_sets[start:start + self.batch_size]])
        return texts

    @torch.inference_mode()
    def _batch(self, prompts: list[str]) -> list[str]:
        tokenizer, pad = self.lm.tokenizer, self.lm._pad_id
        encoded = [tokenizer(p)["input_ids"] for p in prompts]
        width = max(map(len, encoded))
        input_ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        out = self.lm.model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=MAX_NEW_TOKENS,
                                     do_sample=False, repetition_penalty=1.2, eos_token_id=tokenizer.eos_token_id,
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
