"""Teaching kgllm's own small model to read numbered facts and cite them, instead of recalling.

The training data is generated from the graph alone, never from an evaluation set. Each example
is a question about a walk of one or two relations from an entity, put through the very answerer
the reader will write for (:meth:`GenerationAnswerer.prepare`: the same fused retrieval, the same
facts in the same order, the same template), so the reader learns on the prompts it will meet.
Questions come in two phrasings:

- the default corpus's planning questions, which walk relations either way ("the countries that
  Chad is neighbor of", "the countries located in Middle Africa");
- :func:`~kgllm.pipelines.synergize.questions.chain_questions`: plain English from the phrase bank
  and question frames ("Which countries border Chad?", "what's the region of Kenya?").

The target names each answer the prompt's numbered items (facts, and the reasoner's walks) reach
along the walk, once, in the order the prompt shows them, after the number of the item that
reaches it: `` [1] Libya, [1] Niger, [4] Chad``. When the retrieved facts do not
reach an answer, and for a share of questions that ask what the graph does not hold (an anthem, a
time zone), the target is :data:`NO_ANSWER`: the reader learns to decline rather than recall. Where
the reasoner's paths are shown, they are the answer (:func:`reached_through`); a question whose
paths miss every answer, or that asks what the graph does not hold and still has paths, is left
out, as nothing in its prompt tells the reader they do not answer it.

The default model was trained on every fact of the graph, so it can answer many questions from
memory, and a reader fine-tuned on true prompts alone learns to name what it remembers (in the order
it remembers, stopping where memory does) rather than what the prompt lists. For a share of the
examples every entity name, in prompt and target alike, is swapped for another of its class
(:class:`NameSwapper`): memory is then wrong and only the numbered facts give the target, so the
reader learns to copy them (counterfactual training against knowledge conflicts, as in Longpre et
al., 2021, "Entity-Based Knowledge Conflicts in Question Answering").

The reader is the default model (:func:`kgllm.llm.default.ensure_default_model`) with a longer
context, fine-tuned on these examples for a few minutes and cached by what it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from kgllm.cache import cached_artifact
from kgllm.datasets.pathquestion import PathQuestionItem
from kgllm.graph.base import GraphStore
from kgllm.graph.labels import local_name
from kgllm.llm.corpus import CorpusBuilder, plural
from kgllm.llm.tasks import TaskExample, TaskSplits
from kgllm.pipelines.enhance.prompt import NO_ANSWER
from kgllm.pipelines.enhance.retrieval import RankedFact
from kgllm.settings import Settings
from kgllm.types import Triple

if TYPE_CHECKING:
    from kgllm.pipelines.enhance.answerer import GenerationAnswerer

log = logging.getLogger(__name__)

READER_CONTEXT = 512
"""Positions of the reader model (the default model has 128): room for thirty facts and a long answer."""

UNANSWERABLE_SHARE = 0.1
CHAIN_SHARE = 0.5
"""Of the answerable questions, the share phrased in plain English (the rest as the corpus asks them)."""
ABSENT_ATTRIBUTES = (
    "anthem",
    "national animal",
    "highest mountain",
    "time zone",
    "calling code",
    "national dish",
    "longest river",
    "flag colours",
)
"""Things a question may ask that no graph of kgllm's demo kind holds (the reader learns to decline)."""
ABSENT_FORMS = ("What is the {a} of {e}?", "{e} {a}", "Tell me the {a} of {e}.", "Which {a} does {e} have?")
SWAPPED_SHARE = 0.5
"""Of the examples, the share whose entity names are swapped for others of their class."""
KEY_EXAMPLES = 16
"""Examples whose prompts and targets name the cached reader, beside its questions and settings: a
change in how questions are walked, facts retrieved or prompts built trains a new reader."""


@dataclass(frozen=True)
class ReaderConfig:
    """How the reader is trained: examples generated, minutes of training (or a fixed number of
    optimiser ``steps``, for a run that repeats exactly), batch and learning rate."""

    examples: int = 3000
    minutes: float = 5.0
    steps: int | None = None
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class Step:
    """One step of a walk: a relation, walked from head to tail (``forward``) or back, to nodes of
    class ``cls`` (None: any class)."""

    relation: str
    forward: bool
    cls: str | None = None


@dataclass(frozen=True)
class Walk:
    """A question and the walk that answers it: from ``start``, along ``steps``."""

    question: str
    start: str
    steps: tuple[Step, ...]


def reading_examples(
    prompter: GenerationAnswerer, count: int, seed: int = 0, progress: bool = False
) -> list[TaskExample]:
    """``count`` reading examples (the prompt ``prompter`` builds for a question -> cited answers).

    ``prompter`` writes with a model whose tokenizer the reader shares (the default model): it
    only builds prompts here, and never generates.
    """
    return _examples(prompter, _questions(prompter, count, seed), progress)


def _examples(prompter: GenerationAnswerer, walks: list[Walk], progress: bool = False) -> list[TaskExample]:
    classes = CorpusBuilder(prompter.store)
    names = NameSwapper(classes, prompter.store)
    examples = []
    for walk in tqdm(walks, desc="reading examples", disable=not progress):
        example = _example(prompter, classes, walk)
        rng = random.Random(f"{walk.question}\0{walk.start}")  # the same swap on every run
        if example is not None and rng.random() < SWAPPED_SHARE:
            example = _fitting(prompter, names.swap(example, names.draw(rng))) or example
        if example is not None:
            examples.append(example)
    return examples


class NameSwapper:
    """Swaps every entity name in an example for another of the same class, by one permutation of each
    class (so a name maps to one name throughout the example)."""

    def __init__(self, classes: CorpusBuilder, store: GraphStore):
        nodes = sorted({node for t in store.triples() for node in (t.head, t.tail)})
        pools: dict[str | None, set[str]] = defaultdict(set)
        for node in nodes:
            pools[classes.answer_class(node)].add(classes.label(node))
        self.pools = [sorted(pool) for pool in pools.values() if len(pool) > 1]
        names = sorted((name for pool in self.pools for name in pool), key=len, reverse=True)
        # longest first: "Equatorial Guinea" is one name, not "Equatorial" and Guinea
        self.pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b")

    def draw(self, rng: random.Random) -> dict[str, str]:
        """A random permutation of each class's names."""
        return {name: new for pool in self.pools for name, new in zip(pool, rng.sample(pool, len(pool)), strict=True)}

    def swap(self, example: TaskExample, mapping: dict[str, str]) -> TaskExample:
        """``example`` with every name of ``mapping`` replaced (prompt, target and answers)."""

        def swapped(text: str) -> str:
            return self.pattern.sub(lambda m: mapping[m.group()], text)

        return TaskExample(swapped(example.prompt), swapped(example.target), tuple(map(swapped, example.answers)))


def _fitting(prompter: GenerationAnswerer, example: TaskExample) -> TaskExample | None:
    """``example`` when its prompt and answer still fit the reader's context and answer budget."""
    prompt, target = prompter.count_tokens([example.prompt, example.target])
    return example if target + 1 < prompter.max_new_tokens and prompt + target + 1 <= READER_CONTEXT else None


def _questions(prompter: GenerationAnswerer, count: int, seed: int) -> list[Walk]:
    from kgllm.pipelines.synergize.questions import chain_questions

    store, rng = prompter.store, random.Random(seed)
    builder = CorpusBuilder(store, seed=seed)
    triples = sorted(store.triples(), key=lambda t: (t.head, t.relation, t.tail))
    touching: dict[str, list[Triple]] = defaultdict(list)
    for t in triples:
        touching[t.head].append(t)
        touching[t.tail].append(t)
    nodes = sorted(touching)
    n_absent = round(count * UNANSWERABLE_SHARE)
    n_chain = round((count - n_absent) * CHAIN_SHARE)
    walks = [_absent(builder, rng.choice(nodes), rng) for _ in range(n_absent)]
    walks += _chain_walks(chain_questions(store, n_chain, max_hops=2, seed=seed), triples, builder)
    while len(walks) < count:
        walks.append(_corpus_walk(builder, touching, rng.choice(nodes), rng))
    rng.shuffle(walks)
    return walks


def _corpus_walk(builder: CorpusBuilder, touching: dict[str, list[Triple]], node: str, rng: random.Random) -> Walk:
    """A walk of one or two facts either way from ``node``, asked as the default corpus asks."""
    walk: list[tuple[Triple, bool]] = []
    for _ in range(rng.choice((1, 1, 2))):
        t = rng.choice(touching[node])
        walk.append((t, t.head == node))
        node = t.tail if t.head == node else t.head
    question, _, classes = builder.walk_question(walk)
    start = walk[0][0].head if walk[0][1] else walk[0][0].tail
    steps = tuple(Step(t.relation, forward, cls) for (t, forward), cls in zip(walk, classes, strict=True))
    return Walk(question, start, steps)


def _chain_walks(items: Sequence[PathQuestionItem], triples: list[Triple], classes: CorpusBuilder) -> list[Walk]:
    """The generated plain-English questions as walks (their gold paths name nodes by local name).
    A step whose node's class the question names ("Which subregion ...") reaches only that class:
    Kenya is located in Eastern Africa and in Africa, and only one of them is a subregion."""
    by_name: dict[str, set[str]] = defaultdict(set)
    for t in triples:
        for node in (t.head, t.relation, t.tail):
            by_name[local_name(node)].add(node)
    walks = []
    for item in items:
        named = [by_name.get(name, set()) for name in item.path]
        if all(len(nodes) == 1 for nodes in named):  # a name two nodes share cannot be walked
            path = [next(iter(nodes)) for nodes in named]
            steps = [
                Step(relation, True, _class_asked(item.question, classes.answer_class(node)))
                for relation, node in zip(path[1::2], path[2::2], strict=True)
            ]
            walks.append(Walk(item.question, path[0], tuple(steps)))
    return walks


def _class_asked(question: str, cls: str | None) -> str | None:
    """``cls`` when the question names it ("Which subregion ..."), else None (any class answers)."""
    if cls is None:
        return None
    names = (cls.lower(), plural(cls.lower()))
    return cls if any(re.search(rf"\b{re.escape(name)}\b", question.lower()) for name in names) else None


def _absent(builder: CorpusBuilder, node: str, rng: random.Random) -> Walk:
    form = rng.choice(ABSENT_FORMS)
    return Walk(form.format(a=rng.choice(ABSENT_ATTRIBUTES), e=builder.label(node)), node, ())


def _example(prompter: GenerationAnswerer, classes: CorpusBuilder, walk: Walk) -> TaskExample | None:
    """The prompt for the walk's question, and its answers as the prompt's facts reach them."""
    prepared = prompter.prepare(walk.question, context_tokens=READER_CONTEXT, constrained=False)
    if prepared.refusal is not None:  # nothing retrieved: generate mode does not ask the model
        return None
    reached = reached_through(classes, walk, prepared.facts)
    if not reached and any(f.paths for f in prepared.facts):
        return None  # the reasoner's paths read another question: a decline here would teach noise
    if reached:
        shown = {(n, node): i for n, f in enumerate(prepared.facts, 1) for i, node in enumerate(f.answers)}
        cited = sorted(reached.items(), key=lambda answer: (answer[1], shown.get(answer[::-1], 0)))
        target = " " + ", ".join(f"[{n}] {prompter.store.label(node)}" for node, n in cited)
    else:
        target = " " + NO_ANSWER
    if prompter.count_tokens([target])[0] + 1 >= prepared.config.max_new_tokens:  # the answer and </s>
        return None  # longer than the reader may write: training would cut the prompt's first lines
    return TaskExample(prepared.prompt, target, (target.strip(),))


def reached_through(classes: CorpusBuilder, walk: Walk, items: Sequence[RankedFact]) -> dict[str, int]:
    """Each node the walk reaches through the numbered items' facts alone (a fact, or a reasoner
    walk's facts), with the number (from 1) of the item to cite for it. A walk of no steps reaches nothing.

    When reasoner paths are shown, the answer is the reached nodes they end at (none: the example is
    left out), each citing the first item with a path that ends there: the paths are the reading of
    the question the reader is shown, and the only items its answer may name (the answerer's
    grammar), so it learns to copy them and to leave out a path's end that does not answer. A
    question that several walks read ("Where is Ghana?": its region or its subregion, "neighbor of"
    either way) then has one target, the one the paths show. With no path shown, each node cites
    the first item whose fact takes the walk's last step there (to a node of the step's class, as
    ``classes`` reads the graph's classes) and that may be cited for it
    (:attr:`RankedFact.answers`)."""
    facts = [(n, t, item.answers) for n, item in enumerate(items, 1) for t in item.triples]
    frontier = {walk.start}
    reached: dict[str, int] = {}
    walked: set[str] = set()
    for step in walk.steps:
        reached, walked = {}, set()
        for n, t, answers in facts:
            source, target = (t.head, t.tail) if step.forward else (t.tail, t.head)
            if t.relation != step.relation or source not in frontier or target in reached:
                continue
            if step.cls is None or (classes.answer_class(target) or "thing") == step.cls:
                walked.add(target)
                if target in answers:
                    reached[target] = n
        frontier = walked
    path_ends: dict[str, int] = {}
    for n, item in enumerate(items, 1):
        for path in item.paths:
            path_ends.setdefault(path.end, n)
    if path_ends:
        return {node: path_ends[node] for node in walked if node in path_ends}
    return reached


# ------------------------------------------------------------------ the cached reader


def reader_model_dir(
    base_dir: Path, walks: list[Walk], key_examples: list[TaskExample], config: ReaderConfig, settings: Settings
) -> Path:
    """Cache folder named by the base model, every training question with the walk that answers it,
    the first training examples and the reader's settings."""
    digest = hashlib.sha256(base_dir.name.encode())
    for walk in walks:
        digest.update(f"{walk.question}\0{walk.start}\0{walk.steps}\0".encode())
    for example in key_examples:
        digest.update(f"{example.prompt}\0{example.target}\0".encode())
    settings_key = {**config.__dict__, "context": READER_CONTEXT, "swapped": SWAPPED_SHARE}
    digest.update(json.dumps(settings_key, sort_keys=True).encode())
    return settings.cache_dir / "models" / f"graph-reader-{digest.hexdigest()[:16]}"


def ensure_reader_model(
    answerer: GenerationAnswerer, settings: Settings, config: ReaderConfig | None = None, progress: bool = True
) -> Path:
    """The directory of the reader that writes for ``answerer``, training it first (from the default
    model, on prompts ``answerer`` builds) when it is not cached yet."""
    from kgllm.llm import open_model
    from kgllm.llm.default import ensure_default_model

    config = config or ReaderConfig()
    base_dir = ensure_default_model(answerer.store, settings, progress=progress)
    prompter = answerer.with_model(open_model(base_dir, settings=settings))
    walks = _questions(prompter, config.examples, config.seed)
    key = _examples(prompter, walks[:KEY_EXAMPLES])
    out_dir = reader_model_dir(base_dir, walks, key, config, settings)

    def build(staging: Path) -> None:
        log.warning(
            "training the default model to read facts on %d generated questions (%.1f min); cached in %s",
            config.examples,
            config.minutes,
            out_dir,
        )
        examples = key + _examples(prompter, walks[KEY_EXAMPLES:], progress)  # the key's are built once
        train_reader(base_dir, examples, staging, config, settings.threads, progress)

    return cached_artifact(out_dir, build, marker="config.json")


def train_reader(
    base_dir: Path, examples: list[TaskExample], out_dir: Path, config: ReaderConfig, threads: int, progress: bool
) -> None:
    """Full fine-tuning of ``base_dir``, widened to :data:`READER_CONTEXT` positions, on ``examples``."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kgllm.llm.tuning import RunConfig, finetune

    widened = out_dir / "widened-base"
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    model.config.max_position_embeddings = READER_CONTEXT  # rotary positions: only the limit changes
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    tokenizer.model_max_length = READER_CONTEXT
    model.save_pretrained(widened)
    tokenizer.save_pretrained(widened)
    n_dev = min(100, len(examples) // 10)
    splits = TaskSplits("read", examples[n_dev:], examples[:n_dev], [])
    run = RunConfig(
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        epochs=None,
        max_steps=config.steps,
        max_minutes=config.minutes if config.steps is None else None,
        warmup_steps=30,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        length_buckets=True,
        seed=config.seed,
        threads=threads,
    )
    result = finetune(widened, splits, out_dir, adapter=None, run=run, progress=progress)
    shutil.rmtree(widened)
    log.info("%s", result.summary())
