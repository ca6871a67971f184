"""PEFT adapters per task over one really trained tiny base model: every method trains, generates,
scores and switches; manifests guard against the wrong base; LoRA merges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kgllm.exceptions import ConfigurationError, ModelError
from kgllm.graph.loaders import load
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.llm import GenerationConfig, HFCausalLM, TrainingConfig, train_causal_lm
from kgllm.llm.adapters import (
    METHODS,
    AdaptedLM,
    AdapterConfig,
    AdapterLibrary,
    AdapterManifest,
    load_adapted,
    merge_adapter,
)
from kgllm.llm.corpus import CorpusBuilder
from kgllm.llm.tasks import build_task
from kgllm.llm.tuning import RunConfig, accuracy, finetune

REGIONS = {
    "kenya": "east",
    "uganda": "east",
    "tanzania": "east",
    "ghana": "west",
    "mali": "west",
    "niger": "west",
    "chad": "central",
    "gabon": "central",
    "congo": "central",
    "egypt": "north",
    "libya": "north",
    "sudan": "north",
}
TINY_BASE = dict(
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    vocab_size=300,
    batch_size=8,
    learning_rate=3e-3,
    warmup_steps=5,
    epochs=40,
    threads=1,
)
SHORT = dict(max_steps=4, batch_size=8, save_steps=1000, logging_steps=1, threads=1)

pytestmark = pytest.mark.slow  # every test here trains a base model and adapters (seconds each)


def tiny_store(tmp_path: Path) -> RDFLibStore:
    facts = [(c, "located_in", r) for c, r in REGIONS.items()]
    facts += [(a, "neighbor_of", b) for a in REGIONS for b in REGIONS if a < b and REGIONS[a] == REGIONS[b]]
    kb = tmp_path / "africa.tsv"
    kb.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in facts), encoding="utf-8")
    store = RDFLibStore()
    load(store, kb)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RDFLibStore:
    return tiny_store(tmp_path_factory.mktemp("kb"))


@pytest.fixture(scope="module")
def base(store, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("base") / "model"
    train_causal_lm(CorpusBuilder(store).texts(), out, TrainingConfig(**TINY_BASE), progress=False)
    yield out
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits(store):
    return build_task(store, "tail", seed=0, dev=0.25, test=0.0)


@pytest.fixture(scope="module")
def library(base, splits, tmp_path_factory) -> Path:
    """One adapter per method, each saved as task ``tail-<method>`` after a few steps."""
    root = tmp_path_factory.mktemp("adapters")
    for method in METHODS:
        config = AdapterConfig(method=method, rank=4, num_virtual_tokens=4, encoder_hidden_size=16)
        task_splits = type(splits)(f"tail-{method}", splits.train, splits.dev, splits.test)
        finetune(
            base, task_splits, root / f"tail-{method}", config, RunConfig(learning_rate=1e-2, **SHORT), progress=False
        )
    return root


def test_unknown_method_names_the_choices():
    with pytest.raises(ConfigurationError, match="lora, prefix, prompt, ptuning"):
        AdapterConfig(method="adapterx")


@pytest.mark.parametrize("method", METHODS)
def test_each_method_saves_only_its_adapter_and_a_manifest(library, base, method):
    folder = library / f"tail-{method}"
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "kgllm_adapter.json", "loss.png"} <= files
    assert not files & {"model.safetensors", "config.json", "checkpoints"}
    manifest = AdapterManifest.load(folder)
    assert (manifest.method, manifest.task, manifest.base_model) == (method, f"tail-{method}", base.name)
    assert 0 <= manifest.metrics["dev_accuracy"] <= 1


@pytest.mark.parametrize("method", METHODS)
def test_score_agrees_with_greedy_generation_for_every_method(library, base, method):
    """The best-scored single token is the one greedy decoding emits: scoring keeps virtual tokens in front."""
    lm = AdaptedLM.from_pretrained(base, library=library, threads=1).use(f"tail-{method}")
    prompt = "Kenya | located in |"
    first = lm.generate(prompt, GenerationConfig(max_new_tokens=1, stop=()))[0][0]
    vocabulary = [lm.tokenizer.decode([i]) for i in range(5, 300)]
    singles = [t for t in vocabulary if t and len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1]
    scores = lm.score(prompt, singles)
    assert singles[max(range(len(singles)), key=scores.__getitem__)] == first


def _greedy_one_pass_per_token(lm: AdaptedLM, prompt: str, steps: int) -> list[int]:
    """Greedy decoding with no cache and no padding: the whole sequence runs again for every token."""
    ids = lm._prompt_ids([prompt])[0]
    out: list[int] = []
    for _ in range(steps):
        out.append(int(lm.next_token_logprobs(ids + out)[-1].argmax()))
    return out


@pytest.mark.parametrize("method", METHODS)
def test_batched_generation_decodes_each_prompt_as_alone_with_the_whole_sequence(library, base, method):
    """Neither the decoding cache nor left padding changes what any method generates."""
    lm = load_adapted(base, library / f"tail-{method}", threads=1)
    prompts = [f"{c.title()} | located in |" for c in REGIONS] + ["Ghana | neighbor of |"]
    config = GenerationConfig(max_new_tokens=6, stop=())
    batched = [g[0].token_ids for g in lm.generate_tokens(prompts, config)]
    assert len({len(ids) for ids in lm._prompt_ids(prompts)}) > 1  # the batch is padded
    for prompt, generated in zip(prompts, batched, strict=True):
        reference = _greedy_one_pass_per_token(lm, prompt, len(generated))
        assert list(generated) == reference, prompt
        assert len(generated) == 6 or generated[-1] == lm.tokenizer.eos_token_id


def test_adapters_switch_at_run_time_over_one_frozen_base(library, base):
    bare = HFCausalLM.from_pretrained(base, threads=1)
    prompt, candidates = "Ghana | neighbor of |", [" Mali", " Kenya", " Egypt"]
    expected = bare.score(prompt, candidates)
    lm = AdaptedLM.from_pretrained(base, library=library, threads=1)
    first = {m: lm.use(f"tail-{m}").score(prompt, candidates) for m in METHODS}
    assert set(lm.loaded) == {f"tail-{m}" for m in METHODS}
    assert lm.use(None).score(prompt, candidates) == pytest.approx(expected, abs=1e-5)
    for method in reversed(METHODS):
        assert lm.use(f"tail-{method}").score(prompt, candidates) == pytest.approx(first[method], abs=1e-5)
    assert len({tuple(round(s, 4) for s in v) for v in first.values()}) == len(METHODS)
    assert all(not p.requires_grad for p in lm.base_model.parameters())


def test_lora_merged_into_the_base_scores_as_the_adapter(library, base, tmp_path):
    lm = AdaptedLM.from_pretrained(base, library=library, threads=1).use("tail-lora")
    merged = merge_adapter(base, library / "tail-lora", tmp_path / "merged")
    prompt, candidates = "Chad | located in |", [" Central", " North", " West"]
    assert merged.score(prompt, candidates) == pytest.approx(lm.score(prompt, candidates), abs=1e-4)
    assert HFCausalLM.from_pretrained(tmp_path / "merged").score(prompt, candidates) == pytest.approx(
        merged.score(prompt, candidates), abs=1e-4
    )
    with pytest.raises(ConfigurationError, match="only LoRA"):
        merge_adapter(base, library / "tail-prefix")


def test_greedy_output_through_the_adapter_equals_the_merged_model(library, base):
    merged = merge_adapter(base, library / "tail-lora")
    adapted = load_adapted(base, library / "tail-lora", threads=1)
    prompts = [f"{c.title()} | located in |" for c in REGIONS] + ["Ghana | neighbor of |"]
    config = GenerationConfig(max_new_tokens=6, stop=())
    expected = merged.generate_tokens(prompts, config)
    assert adapted.generate_tokens(prompts, config) == expected
    # the same after another handle on the same base ran a prompt-learning adapter in between
    prefix = load_adapted(base, library / "tail-prefix", threads=1)
    prefix.generate(prompts[:2], config)
    assert adapted.generate_tokens(prompts, config) == expected
    assert [merged.score(p, [" east", " west"]) for p in prompts[:3]] == [
        pytest.approx(adapted.score(p, [" east", " west"]), abs=1e-4) for p in prompts[:3]
    ]


def test_adapters_of_one_base_share_its_weights(library, base, splits, tmp_path):
    """Two task models loaded on one base hold one copy of it; merged copies would hold two."""
    second = tmp_path / "second-lora"
    task_splits = type(splits)("second", splits.train, splits.dev, splits.test)
    finetune(base, task_splits, second, AdapterConfig(rank=4), RunConfig(learning_rate=5e-2, **SHORT), progress=False)
    first_lm = load_adapted(base, library / "tail-lora", threads=1)
    second_lm = load_adapted(base, second, threads=1)
    assert first_lm.base_model is second_lm.base_model and first_lm.active != second_lm.active
    base_bytes = _bytes([HFCausalLM.from_pretrained(base).model])
    shared = _bytes([first_lm.model, second_lm.model])
    merged = _bytes([merge_adapter(base, library / "tail-lora").model, merge_adapter(base, second).model])
    assert shared < 1.5 * base_bytes and merged == 2 * base_bytes
    # each handle keeps its own adapter, whatever the other ran last
    prompt = "Kenya | located in |"
    alone = [
        HFCausalLM(merge_adapter(base, d).model, first_lm.tokenizer).score(prompt, [" east"])
        for d in (library / "tail-lora", second)
    ]
    for _ in range(2):
        assert first_lm.score(prompt, [" east"]) == pytest.approx(alone[0], abs=1e-4)
        assert second_lm.score(prompt, [" east"]) == pytest.approx(alone[1], abs=1e-4)
    assert alone[0] != pytest.approx(alone[1], abs=1e-3)


def _bytes(modules) -> int:
    """Bytes of the distinct tensors the modules hold (a tensor shared between them counts once)."""
    seen = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def test_bad_adapters_give_one_clear_error(library, base, store, tmp_path):
    lm = AdaptedLM.from_pretrained(base, threads=1)
    with pytest.raises(ModelError, match="no adapter at"):
        lm.load(tmp_path / "nothing")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(library / "tail-lora", corrupt)
    (corrupt / "kgllm_adapter.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="kgllm_adapter.json is corrupt"):
        lm.load(corrupt)
    weightless = tmp_path / "weightless"
    shutil.copytree(library / "tail-lora", weightless)
    (weightless / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match="adapter_model.safetensors is missing"):
        lm.load(weightless)
    other_base = tmp_path / "other"
    train_causal_lm(
        CorpusBuilder(store).texts()[:20], other_base, TrainingConfig(**{**TINY_BASE, "epochs": 1}), progress=False
    )
    with pytest.raises(ModelError, match="was trained on base model"):
        AdaptedLM.from_pretrained(other_base, threads=1).load(library / "tail-lora")
    with pytest.raises(ConfigurationError, match="not loaded"):
        lm.use("tail-lora")


def test_lora_learns_the_task(base, splits, tmp_path):
    lm = HFCausalLM.from_pretrained(base, threads=1)
    before = accuracy(lm, splits.train)
    result = finetune(
        base,
        splits,
        tmp_path / "tail",
        AdapterConfig(rank=8),
        RunConfig(learning_rate=1e-2, epochs=60, batch_size=8, warmup_steps=5, save_steps=1000, threads=1),
        progress=False,
    )
    tuned = AdaptedLM.from_pretrained(base, threads=1)
    tuned.use(tuned.load(tmp_path / "tail"))
    assert accuracy(tuned, splits.train) >= before + 0.5
    assert 0 < result.trainable_percent < 100 and result.steps == 60 * 2


def test_finetune_takes_a_peft_config_as_well(base, splits, tmp_path):
    from peft import IA3Config, LoraConfig

    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])  # no task_type: CAUSAL_LM is set
    result = finetune(base, splits, tmp_path / "peft", lora, RunConfig(learning_rate=1e-2, **SHORT), progress=False)
    # r x (in + out) per adapted matrix: 2 layers x (q_proj, v_proj) x 2 x (64 + 64)
    assert result.method == "lora" and result.trainable_parameters == 2 * 2 * 2 * (64 + 64)
    manifest = AdapterManifest.load(tmp_path / "peft")
    assert manifest.method == "lora" and manifest.config["r"] == 2
    assert sorted(manifest.config["target_modules"]) == ["q_proj", "v_proj"] and lora.task_type is None
    tuned = AdaptedLM.from_pretrained(base, threads=1)
    assert tuned.use(tuned.load(tmp_path / "peft")).generate("Kenya | located in |")
    with pytest.raises(ConfigurationError, match="LoraConfig, PrefixTuningConfig"):
        finetune(base, splits, tmp_path / "ia3", IA3Config(target_modules=["q_proj"]), RunConfig(**SHORT))
    with pytest.raises(ConfigurationError, match="task_type must be CAUSAL_LM"):
        finetune(base, splits, tmp_path / "cls", LoraConfig(task_type="SEQ_CLS"), RunConfig(**SHORT))
    with pytest.raises(ConfigurationError, match="AdapterConfig, a peft PeftConfig or None"):
        finetune(base, splits, tmp_path / "dict", {"method": "lora"}, RunConfig(**SHORT))


def test_adapter_config_round_trips_and_refuses_unknown_keys():
    config = AdapterConfig(method="prefix", num_virtual_tokens=8)
    assert AdapterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigurationError, match="unknown AdapterConfig key 'r'; known keys: method, rank"):
        AdapterConfig.from_dict({"method": "lora", "r": 8})
    with pytest.raises(ConfigurationError, match=r"'lora_alpha' \(did you mean 'alpha'\?\)"):
        AdapterConfig(lora_alpha=8)


def test_full_fine_tuning_saves_a_whole_model(base, splits, tmp_path):
    result = finetune(base, splits, tmp_path / "full", None, RunConfig(**SHORT), progress=False)
    assert result.trainable_parameters == result.total_parameters and result.method == "full"
    assert HFCausalLM.from_pretrained(tmp_path / "full").generate("Kenya | located in |")


def test_memory_options_on_cpu(base, splits, tmp_path):
    """Gradient accumulation, gradient checkpointing, bf16 autocast and accelerate placement train on CPU;
    what needs CUDA says so."""
    result = finetune(
        base,
        splits,
        tmp_path / "mem",
        AdapterConfig(rank=4),
        RunConfig(
            gradient_accumulation=2,
            gradient_checkpointing=True,
            precision="bf16",
            device_map="auto",
            epochs=1,
            batch_size=4,
            save_steps=1000,
            threads=1,
        ),
        progress=False,
    )
    assert result.steps == -(-len(splits.train) // 8)
    for bad in (dict(precision="fp16"), dict(quantization="4bit"), dict(quantization="8bit")):
        with pytest.raises(ConfigurationError, match="CUDA"):
            finetune(base, splits, tmp_path / "bad", AdapterConfig(), RunConfig(**bad), progress=False)
    with pytest.raises(ConfigurationError, match="choose one of"):
        RunConfig(precision="fp8")


def test_cli_lists_adapters_and_rejects_unknown_methods(library, tmp_path):
    from kgllm.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["adapters", "--dir", str(library)])
    assert listed.exit_code == 0, listed.output
    assert all(f"tail-{m}" in listed.output for m in METHODS)
    assert [m.task for m in AdapterLibrary(library).manifests()] == sorted(f"tail-{m}" for m in METHODS)
    wrong = runner.invoke(app, ["train", "finetune", "--task", "tail", "--method", "adapterx"])
    assert isinstance(wrong.exception, ConfigurationError) and "lora, prefix, prompt, ptuning" in str(wrong.exception)
    assert json.loads((library / "tail-lora" / "tuning_result.json").read_text())["method"] == "lora"


def test_cli_finetune_trains_an_adapter_and_prints_a_summary(base, tmp_path):
    from kgllm.cli import app

    tiny_store(tmp_path)
    out = tmp_path / "library" / "kg2text"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "finetune",
            "--task",
            "kg2text",
            "--method",
            "prompt",
            "--graph",
            str(tmp_path / "africa.tsv"),
            "--base",
            str(base),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--virtual-tokens",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "finetune prompt on kg2text: 256 trainable parameters" in output and "2 steps" in output
    assert AdapterManifest.load(out).method == "prompt"
