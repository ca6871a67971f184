"""Benchmarks of the LLM module on the demo graph (``kgllm bench llm``).

- ``lora-vs-full``: LoRA and full fine-tuning on the ``tail`` task, same data and time budget:
  trainable parameters, peak resident memory, seconds per step, dev accuracy.
- ``methods``: LoRA, prefix tuning, prompt tuning and P-tuning on the same task: accuracy and time.
- ``injection``: pre-training from scratch on the verbalized graph with 10 % of the facts held out:
  perplexity and closed-book accuracy (``head relation`` -> tail, decoding constrained to entity
  labels) before and after.
- ``throughput``: generation tokens/s of the default model at batch 1 and 16.
- ``from-scratch``: the default model's own training (``train_causal_lm`` on the demo corpus with
  the default sizes) for ``minutes``: steps, tokens/s and final loss.

Each fine-tuning run is a fresh process (spawned), so its peak RSS is its own.
"""

from __future__ import annotations

import multiprocessing
import random
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from kgllm.bench.report import markdown, print_table
from kgllm.cli.output import make_console
from kgllm.settings import Settings

console = make_console()
TASK = "tail"
SECTIONS = ("lora-vs-full", "methods", "injection", "throughput", "from-scratch")
# Peak learning rates: virtual-token methods need larger steps than LoRA or full fine-tuning.
LEARNING_RATES = {
    "full": 5e-4,
    "lora": 2e-3,
    "lora-fast": 1e-2,
    "lora-qv": 2e-3,
    "prefix": 1e-2,
    "prompt": 3e-2,
    "ptuning": 1e-2,
}
RUN_NAMES = {
    "full": "full fine-tuning",
    "lora": "LoRA r=8, all linear layers",
    "lora-fast": "LoRA r=8, all linear layers",
    "lora-qv": "LoRA r=8, q_proj and v_proj",
}


def run_llm_benchmarks(sections: list[str], minutes: float, out: Path | None) -> None:
    from kgllm.exceptions import ConfigurationError

    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigurationError(f"unknown benchmark sections {unknown}; choose from {', '.join(SECTIONS)}")
    parts = []
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as root:
        if "lora-vs-full" in sections:
            rows = lora_vs_full(Path(root), minutes, runs)
            parts.append((f"LoRA vs full fine-tuning ({TASK} task, {minutes:g} min each)", rows))
        if "methods" in sections:
            rows = methods(Path(root), minutes, runs)
            parts.append((f"PEFT methods ({TASK} task, {minutes:g} min each)", rows))
        if "injection" in sections:
            parts.append(
                (f"knowledge injection (pre-training from scratch, {minutes:g} min)", injection(Path(root), minutes))
            )
        if "throughput" in sections:
            parts.append(("generation throughput of the default model", throughput()))
        if "from-scratch" in sections:
            parts.append(
                (f"the default model trained from scratch ({minutes:g} min)", from_scratch(Path(root), minutes))
            )
    for title, rows in parts:
        print_table(rows, title)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        command = f"kgllm bench llm --sections {','.join(sections)} --minutes {minutes:g} --out {out}"
        body = "".join(f"### {title}\n\n{markdown(rows)}\n" for title, rows in parts)
        out.write_text(
            f"## LLM module benchmarks\n\n`{command}` (2 CPU cores shared with other work, one thread)\n\n{body}",
            encoding="utf-8",
        )
        console.print(f"saved {out}")


def _demo_store():
    from kgllm.graph.demo import demo_graph_path
    from kgllm.graph.rdflib_store import RDFLibStore

    return RDFLibStore(path=demo_graph_path())


def _base_dir() -> Path:
    from kgllm.llm.default import ensure_default_model

    return ensure_default_model(_demo_store(), Settings())


def _finetune_job(base_dir: str, out_dir: str, method: str, minutes: float) -> dict:
    """One fine-tuning run (in its own process): its result and the process's peak RSS."""
    from kgllm.llm.adapters import AdapterConfig
    from kgllm.llm.tasks import build_task
    from kgllm.llm.tuning import RunConfig, finetune

    splits = build_task(_demo_store(), TASK, seed=0)
    adapters = {
        "full": None,
        "lora-fast": AdapterConfig(),
        "lora-qv": AdapterConfig(target_modules=["q_proj", "v_proj"]),
    }
    adapter = adapters[method] if method in adapters else AdapterConfig(method=method)
    run = RunConfig(
        learning_rate=LEARNING_RATES[method],
        batch_size=16,
        epochs=100,
        max_minutes=minutes,
        threads=Settings().threads,
        save_steps=100_000,
    )
    result = finetune(base_dir, splits, out_dir, adapter, run, progress=False)
    return {
        "result": result,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_train": len(splits.train),
        "n_dev": len(splits.dev),
    }


def _run(root: Path, method: str, minutes: float, runs: dict[str, dict]) -> dict:
    if method not in runs:
        console.print(f"[dim]fine-tuning: {method} ({minutes:g} min)[/]")
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            runs[method] = pool.apply(_finetune_job, (str(_base_dir()), str(root / method), method, minutes))
    return runs[method]


def _base_accuracy() -> float:
    from kgllm.llm.hf import HFCausalLM
    from kgllm.llm.tasks import build_task
    from kgllm.llm.tuning import accuracy

    return accuracy(HFCausalLM.from_pretrained(_base_dir()), build_task(_demo_store(), TASK, seed=0).dev)


def lora_vs_full(root: Path, minutes: float, runs: dict[str, dict]) -> list[dict[str, str]]:
    rows = [
        {
            "method": "none (base model)",
            "lr": "",
            "trainable": "0",
            "trainable %": "0",
            "peak RSS (MB)": "",
            "s/step": "",
            "steps": "0",
            "dev accuracy": f"{100 * _base_accuracy():.1f}%",
        }
    ]
    for method in ("full", "lora", "lora-fast", "lora-qv"):
        job = _run(root, method, minutes, runs)
        r = job["result"]
        rows.append(
            {
                "method": RUN_NAMES[method],
                "lr": f"{LEARNING_RATES[method]:g}",
                "trainable": f"{r.trainable_parameters:,}",
                "trainable %": f"{r.trainable_percent:.2f}",
                "peak RSS (MB)": f"{job['peak_rss_mb']:.0f}",
                "s/step": f"{r.seconds_per_step:.3f}",
                "steps": str(r.steps),
                "dev accuracy": f"{100 * r.metrics['dev_accuracy']:.1f}%",
            }
        )
    return rows


def methods(root: Path, minutes: float, runs: dict[str, dict]) -> list[dict[str, str]]:
    rows = []
    for method in ("lora", "prefix", "prompt", "ptuning"):
        job = _run(root, method, minutes, runs)
        r = job["result"]
        rows.append(
            {
                "method": method,
                "lr": f"{LEARNING_RATES[method]:g}",
                "trainable": f"{r.trainable_parameters:,}",
                "trainable %": f"{r.trainable_percent:.2f}",
                "steps": str(r.steps),
                "s/step": f"{r.seconds_per_step:.3f}",
                "train time (s)": f"{r.seconds:.0f}",
                "final loss": f"{r.final_loss:.3f}",
                "dev accuracy": f"{100 * r.metrics['dev_accuracy']:.1f}%",
            }
        )
    return rows


def _cloze(store, triples, limit: int, seed: int = 0) -> tuple[list, dict[str, list[str]]]:
    """``head relation`` -> tail examples of ``triples`` (all true tails count) and the candidates per relation."""
    from kgllm.llm.tasks import TaskExample

    label = store.label
    true_tails: dict[tuple[str, str], set[str]] = defaultdict(set)
    candidates: dict[str, set[str]] = defaultdict(set)
    for t in store.triples():
        true_tails[(t.head, t.relation)].add(label(t.tail))
        candidates[t.relation].add(" " + label(t.tail))
    pairs = sorted({(t.head, t.relation) for t in triples})
    pairs = random.Random(seed).sample(pairs, min(limit, len(pairs)))
    examples = [(r, TaskExample(f"{label(h)} {label(r)}", "", tuple(sorted(true_tails[(h, r)])))) for h, r in pairs]
    return examples, {r: sorted(c) for r, c in candidates.items()}


def _cloze_accuracy(lm, examples, candidates) -> float:
    from kgllm.llm.tuning import accuracy

    by_relation = defaultdict(list)
    for relation, example in examples:
        by_relation[relation].append(example)
    hits = sum(accuracy(lm, group, allowed=candidates[r]) * len(group) for r, group in by_relation.items())
    return hits / len(examples)


def injection(root: Path, minutes: float) -> list[dict[str, str]]:
    import torch

    from kgllm.llm.default import CORPUS_SEED, default_training_config
    from kgllm.llm.hf import HFCausalLM
    from kgllm.llm.training import _build_model, train_tokenizer
    from kgllm.llm.tuning import RunConfig, knowledge_texts, perplexity, pretrain

    store = _demo_store()
    texts = knowledge_texts(store, hops=2, held_out=0.1, seed=0)
    held = set(texts.held_out_triples)
    seen = sorted((t for t in store.triples() if t not in held), key=lambda t: (t.head, t.relation, t.tail))
    seen_facts = [f"{store.label(t.head)} {store.label(t.relation)} {store.label(t.tail)}." for t in seen[:300]]
    held_cloze, candidates = _cloze(store, texts.held_out_triples, 200)
    seen_cloze, _ = _cloze(store, seen, 200)
    model_config = default_training_config(Settings())

    def row(name: str, lm: HFCausalLM, steps: str) -> dict[str, str]:
        return {
            "model": name,
            "steps": steps,
            "perplexity, trained facts": f"{perplexity(lm, seen_facts):.1f}",
            "perplexity, held-out facts": f"{perplexity(lm, texts.held_out):.1f}",
            "closed-book accuracy, trained facts": f"{100 * _cloze_accuracy(lm, seen_cloze, candidates):.1f}%",
            "closed-book accuracy, held-out facts": f"{100 * _cloze_accuracy(lm, held_cloze, candidates):.1f}%",
        }

    out = root / "injected"
    tokenizer = train_tokenizer(texts.train, model_config.vocab_size, root / "tokenizer")
    torch.manual_seed(0)
    rows = [
        row("before: initialised, untrained", HFCausalLM(_build_model(model_config, tokenizer).eval(), tokenizer), "0")
    ]
    console.print(f"[dim]pre-training from scratch on {len(texts.train)} texts ({minutes:g} min)[/]")
    run = RunConfig(
        learning_rate=model_config.learning_rate,
        batch_size=model_config.batch_size,
        epochs=100,
        max_minutes=minutes,
        warmup_steps=50,
        threads=Settings().threads,
        save_steps=100_000,
        seed=CORPUS_SEED,
    )
    result = pretrain(texts.train, out, model_config=model_config, run=run, progress=False)
    rows.append(row("after: pre-trained on the graph text", HFCausalLM.from_pretrained(out), str(result.steps)))
    rows.append(
        row("reference: the default model (its corpus has every fact)", HFCausalLM.from_pretrained(_base_dir()), "-")
    )
    return rows


def from_scratch(root: Path, minutes: float) -> list[dict[str, str]]:
    """The default model's training run, as ``ensure_default_model`` does it, for ``minutes``."""
    from kgllm.llm.corpus import CorpusBuilder
    from kgllm.llm.default import CORPUS_SEED, default_training_config
    from kgllm.llm.training import train_causal_lm

    settings = Settings(train_minutes=minutes)
    texts = CorpusBuilder(_demo_store(), seed=CORPUS_SEED).texts()
    console.print(f"[dim]training the default model from scratch on {len(texts)} texts ({minutes:g} min)[/]")
    result = train_causal_lm(texts, root / "from-scratch", default_training_config(settings), progress=False)
    return [
        {
            "texts": str(result.n_texts),
            "parameters": f"{result.n_parameters:,}",
            "threads": str(result.config.threads),
            "steps": str(result.steps),
            "epochs": f"{result.epochs:.2f}",
            "tokens/s": f"{result.tokens_per_second:.0f}",
            "final loss (last 50 steps)": f"{result.final_loss:.3f}",
        }
    ]


def throughput(repeats: int = 3, new_tokens: int = 32) -> list[dict[str, str]]:
    """Greedy decoding of exactly ``new_tokens`` per prompt (end-of-sequence suppressed until then),
    through ``HFCausalLM.generate_tokens``: its left-padded batching and the model's ``generate``."""
    from kgllm.llm.base import GenerationConfig
    from kgllm.llm.hf import HFCausalLM
    from kgllm.llm.tasks import build_task

    lm = HFCausalLM.from_pretrained(_base_dir(), threads=Settings().threads)
    prompts = [e.prompt for e in build_task(_demo_store(), "qa", seed=0).train]
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, stop=())
    rows = []
    for batch in (1, 16):
        rates, latencies = [], []
        for i in range(repeats):
            chunk = prompts[i * batch : (i + 1) * batch]
            started = time.perf_counter()
            outputs = lm.generate_tokens(chunk, config)
            seconds = time.perf_counter() - started
            rates.append(sum(len(output.token_ids) for [output] in outputs) / seconds)
            latencies.append(seconds)
        rows.append(
            {
                "batch": str(batch),
                "new tokens per prompt": str(new_tokens),
                "prompt tokens (longest)": str(max(len(ids) for ids in lm.tokenizer(chunk)["input_ids"])),
                "tokens/s (median)": f"{statistics.median(rates):.0f}",
                "s per batch (median)": f"{statistics.median(latencies):.2f}",
            }
        )
    return rows
