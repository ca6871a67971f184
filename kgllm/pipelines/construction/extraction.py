"""Text -> triples with a LoRA adapter and grammar-constrained decoding.

``load_extractor`` loads the shipped adapter, or one trained (once, cached) on a WebNLG-style
file by ``train_extractor``;
``Extractor.extract`` writes triples for a batch of text chunks, greedy, each
output held to :class:`TripleGrammar` (entity spans of the chunk, the schema's
relations when given), with a score per triple: the geometric mean of its
tokens' probabilities under the constrained distribution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kgllm.datasets.webnlg import aligned_triples, read_webnlg
from kgllm.llm.adapters import AdapterConfig, load_adapted
from kgllm.llm.base import GenerationConfig
from kgllm.llm.constrained import PerPrompt
from kgllm.llm.hf import HFCausalLM
from kgllm.llm.tasks import TaskExample
from kgllm.llm.tuning import RunConfig
from kgllm.pipelines.construction.adapters import TaskTraining, task_model, trained_adapter
from kgllm.pipelines.construction.grammar import TripleGrammar, target_text
from kgllm.settings import Settings

log = logging.getLogger(__name__)

EXTRACTION_TRAINING = TaskTraining(
    AdapterConfig(method="lora", rank=16, alpha=32),
    RunConfig(
        learning_rate=3e-3,
        batch_size=16,
        epochs=4,
        max_minutes=45.0,
        warmup_steps=50,
        save_steps=500,
        group_by_length=True,
    ),
)
MAX_NEW_TOKENS = 160


@dataclass(frozen=True, slots=True)
class RawTriple:
    """A triple as the model wrote it: surface strings and a score in (0, 1]."""

    subject: str
    relation: str
    object: str
    score: float


def extraction_prompt(text: str) -> str:
    return f"Text: {' '.join(text.split())}\nTriples:"


def extraction_examples(train_path: str | Path) -> list[TaskExample]:
    """(text, its triples as the grammar writes them) of every WebNLG entry and reference text
    with an aligned triple."""
    examples = []
    for example in read_webnlg(train_path):
        for text in example.texts:
            if triples := aligned_triples(example, text):
                target = target_text(triples)
                examples.append(TaskExample(extraction_prompt(text), target, (target.strip(),)))
    return examples


def train_extractor(
    train_path: str | Path, settings: Settings, training: TaskTraining = EXTRACTION_TRAINING, progress: bool = True
) -> tuple[Path, Path]:
    """(base model dir, adapter dir) of the extraction adapter trained on ``train_path`` (cached)."""
    return trained_adapter("extract", train_path, extraction_examples, training, settings, progress)


class Extractor:
    """The adapted model and the decoding settings; ``relations`` holds output to a schema.

    ``lm`` is a local model (``lm.supports_constraints``): decoding is held to the grammar token by token.
    """

    def __init__(
        self, lm: HFCausalLM, relations: Sequence[str] | None = None, batch_size: int = 8, max_triples: int = 8
    ):
        self.lm = lm
        self.relations = list(relations) if relations else None
        self.batch_size = batch_size
        self.max_triples = max_triples

    @classmethod
    def load(cls, base_dir: Path, adapter_dir: Path, threads: int | None = None, **kwargs) -> Extractor:
        """The extraction adapter in ``adapter_dir`` over the base in ``base_dir`` (a base shared with
        any other adapter loaded on it); ``kwargs`` go to the constructor."""
        return cls(load_adapted(base_dir, adapter_dir, threads=threads), **kwargs)

    @property
    def name(self) -> str:
        """The model's name, as provenance records it."""
        return self.lm.name

    def extract(self, texts: Sequence[str]) -> list[list[RawTriple]]:
        """The triples of each text (duplicates dropped, best score kept)."""
        results = []
        for start in range(0, len(texts), self.batch_size):
            results += self._extract_batch(list(texts[start : start + self.batch_size]))
        return results

    def _extract_batch(self, texts: list[str]) -> list[list[RawTriple]]:
        tokenizer = self.lm.tokenizer
        grammars = [TripleGrammar(tokenizer, t, self.relations, self.max_triples) for t in texts]
        config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, stop=())
        outputs = self.lm.generate_tokens(
            [extraction_prompt(t) for t in texts], config, constraint=PerPrompt(grammars), logprobs=True
        )
        results = []
        for [output], grammar in zip(outputs, grammars, strict=True):
            logprobs = torch.tensor(output.token_logprobs)
            best: dict[tuple[str, str, str], float] = {}
            for triple, first, last in grammar.parse(output.token_ids):
                steps = logprobs[first:last]
                score = math.exp(float(steps[torch.isfinite(steps)].mean())) if last > first else 0.0
                if all(triple) and score > best.get(triple, -1.0):
                    best[triple] = score
            results.append([RawTriple(*t, score=s) for t, s in best.items()])
        return results


def load_extractor(
    settings: Settings,
    train_path: str | Path | None = None,
    relations: Sequence[str] | None = None,
    progress: bool = True,
) -> Extractor:
    """The shipped extraction adapter, or (with ``train_path``) the one trained on that file (cached)."""
    base, adapter = task_model("extract", train_path, extraction_examples, EXTRACTION_TRAINING, settings, progress)
    return Extractor.load(base, adapter, threads=settings.threads, relations=relations)
