"""The core LLM module against a really trained tiny model (a few seconds of training)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from transformers import AutoModelForCausalLM

from kgllm.exceptions import ConfigurationError, InputError, ModelError
from kgllm.llm import GenerationConfig, HFCausalLM, TrainingConfig, TrainResult, models, train_causal_lm

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
}
# One thread: a model this small gains nothing from two, and a second OpenMP thread slows to a crawl
# when other processes keep the cores busy.
TINY = dict(
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    vocab_size=300,
    batch_size=8,
    learning_rate=3e-3,
    warmup_steps=10,
    threads=1,
)


def prompt(country: str) -> str:
    return f"The capital of {country} is"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TrainResult:
    texts = [f"{prompt(c)} {city}.\nDone." for c, city in CAPITALS.items()]
    config = TrainingConfig(**TINY, epochs=150)
    return train_causal_lm(texts, tmp_path_factory.mktemp("tiny") / "model", config, progress=False)


@pytest.fixture(scope="module")
def lm(trained) -> Iterator[HFCausalLM]:
    threads = torch.get_num_threads()
    yield HFCausalLM.from_pretrained(trained.out_dir, threads=1)
    torch.set_num_threads(threads)


def test_training_result_is_saved_beside_a_standard_model(trained):
    assert trained.steps == 150 and trained.tokens > 0 and trained.tokens_per_second > 0
    assert trained.final_loss < 1.0
    loaded = TrainResult.load(trained.out_dir)
    assert loaded.steps == trained.steps and loaded.config == trained.config
    assert (
        AutoModelForCausalLM.from_pretrained(trained.out_dir, local_files_only=True).num_parameters()
        == trained.n_parameters
    )
    assert not [p for p in trained.out_dir.parent.iterdir() if p.name.startswith(".")]


def test_registry_resolves_the_hf_backend(lm):
    assert models.get("hf") is HFCausalLM
    assert models.resolve(lm) is lm


def test_greedy_generation_is_deterministic_and_cut_at_stop_strings(lm):
    prompts = [prompt(c) for c in CAPITALS]
    first = lm.generate(prompts, GenerationConfig(max_new_tokens=12, stop=(".",)))
    assert first == lm.generate(prompts, GenerationConfig(max_new_tokens=12, stop=(".",)))
    assert first == [[f" {city}"] for city in CAPITALS.values()]
    assert lm.generate(prompt("Peru"), GenerationConfig(max_new_tokens=12, stop=("\n",))) == [[" Lima."]]
    assert lm.generate(prompt("Peru"), GenerationConfig(max_new_tokens=12, stop=())) == [[" Lima.\nDone."]]


def test_generation_stops_once_every_sequence_hit_a_stop_string(lm):
    steps = []
    hook = lm.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        lm.generate([prompt("Peru"), prompt("Japan")], GenerationConfig(max_new_tokens=30, stop=(".",)))
    finally:
        hook.remove()
    longest = max(len(lm.tokenizer(f" {city}.", add_special_tokens=False)["input_ids"]) for city in ("Lima", "Tokyo"))
    assert len(steps) == longest  # one forward pass per token up to the last "."; then both rows are done


def test_beam_search_returns_distinct_sequences(lm):
    [beams] = lm.generate(prompt("Japan"), GenerationConfig(num_beams=4, num_return_sequences=4, stop=(".",)))
    assert len(beams) == 4 and len(set(beams)) == 4
    assert beams[0] == " Tokyo"


def test_sampling_with_a_seed_is_reproducible_and_leaves_global_rng_alone(lm):
    config = GenerationConfig(do_sample=True, temperature=1.5, top_k=50, top_p=0.95, num_return_sequences=5, seed=7)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = lm.generate([prompt("Italy"), prompt("Egypt")], config)
    assert torch.rand(1) == expected_next
    assert first == lm.generate([prompt("Italy"), prompt("Egypt")], config)
    assert [len(samples) for samples in first] == [5, 5]


def test_score_ranks_memorized_facts_above_false_ones(lm):
    cities = [f" {city}" for city in CAPITALS.values()]
    for country, city in CAPITALS.items():
        scores = lm.score(prompt(country), cities)
        assert cities[scores.index(max(scores))] == f" {city}", country


def test_batched_scoring_equals_one_at_a_time(lm):
    candidates = [" Paris", " Berlin.", " Rome is old", " x", " Nairobi.\nDone."]
    batched = lm.score(prompt("Kenya"), candidates)
    single = [lm.score(prompt("Kenya"), [c])[0] for c in candidates]
    assert batched == pytest.approx(single, abs=1e-4)
    lm_small_chunks = HFCausalLM(lm.model, lm.tokenizer, score_batch_size=2)
    assert lm_small_chunks.score(prompt("Kenya"), candidates) == pytest.approx(single, abs=1e-4)


def test_normalized_score_is_the_mean_per_token(lm):
    candidates = [" Nairobi.\nDone.", " Lima"]
    total = lm.score(prompt("Kenya"), candidates)
    mean = lm.score(prompt("Kenya"), candidates, normalize=True)
    counts = [len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in candidates]
    assert counts[0] > 1
    assert mean == pytest.approx([t / n for t, n in zip(total, counts, strict=True)])


def test_empty_prompt_and_empty_input(lm):
    assert len(lm.score("", [" Paris"])) == 1
    assert lm.score(prompt("Peru"), []) == [] and lm.generate([]) == []
    with pytest.raises(InputError):
        lm.score(prompt("Peru"), [""])


def test_missing_or_corrupt_model_directory_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="nowhere"):
        HFCausalLM.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=str(tmp_path)):
        HFCausalLM.from_pretrained(tmp_path)


def test_bad_generation_settings_raise_input_error(lm):
    for bad in (dict(max_new_tokens=0), dict(num_beams=2, num_return_sequences=3), dict(top_p=0), dict(temperature=0)):
        with pytest.raises(InputError):
            GenerationConfig(**bad)
    with pytest.raises(InputError):
        lm.generate("x", GenerationConfig(repetition_penalty=-1.0))


def test_half_precision_on_cpu_is_refused(trained):
    with pytest.raises(ConfigurationError, match="CUDA"):
        HFCausalLM.from_pretrained(trained.out_dir, dtype="bf16")


@pytest.mark.parametrize(
    "bad",
    [
        dict(architecture="mamba"),
        dict(hidden_size=60, num_heads=7),
        dict(epochs=None, max_minutes=None),
        dict(vocab_size=100),
    ],
)
def test_training_config_is_validated(bad):
    with pytest.raises(ConfigurationError):
        TrainingConfig(**bad)


def test_training_config_round_trips_and_refuses_unknown_keys(trained):
    data = json.loads((trained.out_dir / "train_result.json").read_text())["config"]
    assert TrainingConfig.from_dict(data) == trained.config
    with pytest.raises(ConfigurationError, match="key 'from_the_future'; known keys: architecture"):
        TrainingConfig.from_dict({**data, "from_the_future": 1})


def test_gpt2_architecture_and_overwrite_protection(tmp_path):
    config = TrainingConfig(**TINY, architecture="gpt2", epochs=1)
    result = train_causal_lm(["a b c.", "d e f."], tmp_path / "gpt2", config, progress=False)
    assert HFCausalLM.from_pretrained(result.out_dir).model.config.model_type == "gpt2"
    with pytest.raises(ModelError, match="overwrite"):
        train_causal_lm(["a b c."], tmp_path / "gpt2", config, progress=False)
    train_causal_lm(["a b c."], tmp_path / "gpt2", config, progress=False, overwrite=True)
    assert TrainResult.load(tmp_path / "gpt2").n_texts == 1


def test_interrupted_training_leaves_no_model_directory(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("kgllm.llm.training._train_loop", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_causal_lm(["a b c."], tmp_path / "model", TrainingConfig(**TINY, epochs=1), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_constrained_generation_only_names_candidates(lm):
    cities = [f" {city}" for city in CAPITALS.values()]
    outputs = lm.generate([prompt(c) for c in CAPITALS], GenerationConfig(max_new_tokens=2), allowed=cities)
    assert outputs == [[f" {city}"] for city in CAPITALS.values()]
    # Forbid the memorized answer: the choice falls on the better-scored of the candidates left.
    others = [" Rome", " Madrid"]
    scores = lm.score(prompt("France"), others)
    assert lm.generate(prompt("France"), allowed=others) == [[others[scores.index(max(scores))]]]


def test_constrained_generation_handles_candidates_that_prefix_each_other(lm):
    candidates = [" Lima", " Lima Peru", " Lisbon"]
    [[choice]] = lm.generate(prompt("Peru"), allowed=candidates)
    assert choice == " Lima"
    [beams] = lm.generate(prompt("Peru"), GenerationConfig(num_beams=3, num_return_sequences=3), allowed=candidates)
    assert sorted(beams) == sorted(candidates)
    with pytest.raises(InputError):
        lm.generate(prompt("Peru"), allowed=[])


def test_token_trie_allows_only_continuations_of_candidates():
    from kgllm.llm.constrained import TokenTrie

    trie = TokenTrie([[5, 6], [5, 7, 8], [9]], eos_id=2)
    assert sorted(trie.allowed([])) == [5, 9]
    assert sorted(trie.allowed([5])) == [6, 7]
    assert trie.allowed([5, 6]) == [2] and trie.allowed([5, 7]) == [8] and trie.allowed([9, 2, 0]) == [2]
    assert trie.longest == 4


def test_the_default_model_is_cached_by_what_it_learns_not_by_the_thread_count(tmp_path):
    from dataclasses import replace

    from kgllm.llm.default import default_model_dir, default_training_config
    from kgllm.settings import Settings

    settings = Settings(cache_dir=tmp_path)
    config = default_training_config(settings)
    texts = ["Chad borders Niger.", "Kenya is located in Eastern Africa."]
    assert default_model_dir(texts, replace(config, threads=1), settings) == default_model_dir(texts, config, settings)
    assert default_model_dir(texts, replace(config, hidden_size=128), settings) != default_model_dir(
        texts, config, settings
    )
    assert default_model_dir(texts[:1], config, settings) != default_model_dir(texts, config, settings)


def test_a_constraint_object_gives_each_prompt_its_own_rule(lm):
    from kgllm.llm.constrained import PerPrompt, TokenTrie

    def trie(*candidates: str) -> TokenTrie:
        return TokenTrie(
            lm.tokenizer(list(candidates), add_special_tokens=False)["input_ids"], lm.tokenizer.eos_token_id
        )

    prompts = [prompt("France"), prompt("Kenya"), prompt("Peru")]
    rules = PerPrompt([trie(" Rome", " Madrid"), trie(" Nairobi", " Lima"), trie(" Tokyo")])
    outputs = lm.generate(prompts, GenerationConfig(max_new_tokens=8, stop=()), constraint=rules)
    expected = [lm.generate(prompts[0], allowed=[" Rome", " Madrid"])[0], [" Nairobi"], [" Tokyo"]]
    assert outputs == expected
    assert lm.generate(prompts[0], allowed=[" Rome", " Madrid"]) == lm.generate(
        prompts[0], GenerationConfig(stop=()), constraint=trie(" Rome", " Madrid")
    )
    with pytest.raises(InputError, match="not both"):
        lm.generate(prompts[0], allowed=[" Rome"], constraint=trie(" Rome"))
    with pytest.raises(InputError, match="prefix_allowed_tokens"):
        lm.generate(prompts[0], constraint=[" Rome"])


def test_token_logprobs_are_those_of_the_decoding_distribution(lm):
    config = GenerationConfig(max_new_tokens=12, stop=("\n",))
    [[output]] = lm.generate_tokens(prompt("Japan"), config, logprobs=True)
    assert output.text == " Tokyo." and lm.tokenizer.decode(output.token_ids).startswith(" Tokyo.\n")
    assert len(output.token_logprobs) == len(output.token_ids)
    prompt_ids = lm.tokenizer(prompt("Japan"))["input_ids"]
    for i, (token, logprob) in enumerate(zip(output.token_ids, output.token_logprobs, strict=True)):
        expected = lm.next_token_logprobs(prompt_ids + list(output.token_ids[:i]))[-1, token]
        assert logprob == pytest.approx(float(expected), abs=1e-4)
    # Under a constraint the distribution is renormalized over what it allows: one path is certain.
    [[forced]] = lm.generate_tokens(prompt("Japan"), allowed=[" Lima is far"], logprobs=True)
    assert forced.text == " Lima is far" and forced.token_ids[-1] == lm.tokenizer.eos_token_id
    assert forced.token_logprobs == pytest.approx([0.0] * len(forced.token_ids), abs=1e-6)
    [[plain]] = lm.generate_tokens(prompt("Japan"), config)
    assert plain.token_logprobs is None and plain.token_ids == output.token_ids


def test_a_left_padded_batch_decodes_as_each_prompt_alone(lm):
    prompts = [prompt("Peru"), "Done.", prompt("Egypt") + " Cairo.\nDone. " + prompt("Kenya")]
    assert len({len(lm.tokenizer(p)["input_ids"]) for p in prompts}) == 3
    config = GenerationConfig(max_new_tokens=6, stop=())
    batched = lm.generate_tokens(prompts, config, logprobs=True)
    for text, [output] in zip(prompts, batched, strict=True):
        [[alone]] = lm.generate_tokens(text, config, logprobs=True)
        assert (alone.text, alone.token_ids) == (output.text, output.token_ids)
        assert alone.token_logprobs == pytest.approx(output.token_logprobs, abs=1e-4)


def test_min_new_tokens_and_no_repeat_ngrams(lm):
    [[long]] = lm.generate_tokens(prompt("Peru"), GenerationConfig(max_new_tokens=20, min_new_tokens=20, stop=()))
    assert len(long.token_ids) == 20 and lm.tokenizer.eos_token_id not in long.token_ids
    [[unique]] = lm.generate_tokens(
        prompt("Peru"), GenerationConfig(max_new_tokens=20, min_new_tokens=20, no_repeat_ngram_size=2, stop=())
    )
    pairs = list(zip(unique.token_ids, unique.token_ids[1:]))
    assert len(pairs) == len(set(pairs)) and len(set(zip(long.token_ids, long.token_ids[1:]))) < len(pairs)
    with pytest.raises(InputError):
        GenerationConfig(max_new_tokens=2, min_new_tokens=3)


def test_model_facts_are_public(lm):
    assert lm.num_parameters == sum(p.numel() for p in lm.model.parameters()) > 0
    assert lm.model_type == "llama"
    prompt_ids = lm.tokenizer(prompt("Peru"))["input_ids"]
    city = lm.tokenizer(" Lima.", add_special_tokens=False)["input_ids"]
    ids = prompt_ids + city
    logprobs = lm.next_token_logprobs(ids)
    assert logprobs.shape == (len(ids), lm.model.config.vocab_size)
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(len(ids)), atol=1e-4)
    total = sum(float(logprobs[len(prompt_ids) - 1 + j, token]) for j, token in enumerate(city))
    assert len(city) > 1 and total == pytest.approx(lm.score(prompt("Peru"), [" Lima."])[0], abs=1e-4)


def test_scoring_and_generation_raise_no_deprecation_warning(lm):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        lm.score(prompt("Peru"), [" Lima", " Lisbon is far"])
        lm.generate(prompt("Peru"), allowed=[" Lima", " Lisbon"])
        lm.generate_tokens(prompt("Peru"), logprobs=True)


def test_a_served_model_refuses_token_constraints_before_any_request():
    from kgllm.llm.constrained import TokenTrie
    from kgllm.llm.openai_compat import OpenAICompatibleLM

    served = OpenAICompatibleLM("http://127.0.0.1:9/v1", model="m")
    assert not served.supports_constraints
    with pytest.raises(ConfigurationError, match="local model"):
        served.generate("x", constraint=TokenTrie([[5]], eos_id=2))
    with pytest.raises(ConfigurationError, match="local model"):
        served.generate_tokens("x", logprobs=True)
