"""The OpenAI-compatible endpoints serving the default model, and OpenAICompatibleLM talking to them
over real HTTP on loopback: the remote model must behave as the local one."""

import json

import httpx
import pytest

import kgllm
from kgllm.exceptions import ConfigurationError, ModelError
from kgllm.llm import models
from kgllm.llm.base import GenerationConfig
from kgllm.llm.openai_compat import OpenAICompatibleLM, chat_prompt
from kgllm.server import create_app, running_server
from kgllm.testing import free_port

pytestmark = pytest.mark.slow

PROMPTS = ["Question: Where is Kenya located?\nAnswer:", "Chad neighbor of"]


@pytest.fixture(scope="module")
def served(encoder):
    """A session with the default model (trained on the demo graph, cached), served on loopback."""
    with kgllm.connect(encoder=encoder) as session, running_server(create_app(session)) as url:
        yield session, f"{url}/v1"


@pytest.fixture(scope="module")
def remote(served):
    lm = OpenAICompatibleLM(served[1])
    yield lm
    lm.close()


def test_the_served_model_is_listed_and_chosen_by_default(served, remote):
    session, _ = served
    assert remote.models() == [session.lm.name] and remote.name == session.lm.name
    assert models.get("openai") is OpenAICompatibleLM


def test_remote_greedy_generation_equals_local(served, remote):
    local = served[0].lm
    config = GenerationConfig(max_new_tokens=12, stop=("\n",))
    assert remote.generate(PROMPTS, config) == local.generate(PROMPTS, config)


def test_remote_scores_equal_local_scores(served, remote):
    local = served[0].lm
    candidates = [" Eastern Africa", " Europe", " Western Asia"]
    for normalize in (False, True):
        remote_scores = remote.score(PROMPTS[0], candidates, normalize=normalize)
        assert remote_scores == pytest.approx(local.score(PROMPTS[0], candidates, normalize=normalize), abs=1e-3)
    assert len(set(remote_scores)) == 3


def test_remote_constrained_generation_picks_the_likeliest_allowed_string(served, remote):
    local = served[0].lm
    allowed = [" Eastern Africa", " Europe", " Western Asia", " Polynesia"]
    scores = local.score(PROMPTS[0], allowed)
    chosen = remote.generate(PROMPTS[0], GenerationConfig(num_beams=2, num_return_sequences=2), allowed=allowed)
    assert chosen == [sorted(allowed, key=lambda a: -scores[allowed.index(a)])[:2]]


def test_seeded_sampling_is_repeatable_and_beams_are_refused(remote):
    config = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.0, num_return_sequences=3, seed=7)
    first = remote.generate(PROMPTS[0], config)
    assert first == remote.generate(PROMPTS[0], config) and len(first[0]) == 3
    with pytest.raises(ConfigurationError, match="beam search"):
        remote.generate(PROMPTS[0], GenerationConfig(num_beams=2))


def test_chat_completions_reply_as_the_model_continues_the_chat_prompt(served):
    session, base = served
    messages = [{"role": "user", "content": "Where is Kenya located?"}]
    reply = httpx.post(
        f"{base}/chat/completions",
        timeout=60,
        json={"model": session.lm.name, "messages": messages, "temperature": 0, "max_tokens": 16},
    ).json()
    prompt, stops = chat_prompt([("user", "Where is Kenya located?")])
    expected = session.lm.generate(prompt, GenerationConfig(max_new_tokens=16, stop=stops))[0][0].strip()
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"] == {
        "role": "assistant",
        "content": expected,
    }
    assert reply["usage"]["prompt_tokens"] > 0 and reply["usage"]["total_tokens"] > reply["usage"]["prompt_tokens"]


def test_echoed_logprobs_cover_the_prompt_token_by_token(served):
    text = "Question: Where is Kenya located?\nAnswer: Eastern Africa"
    choice = httpx.post(
        f"{served[1]}/completions", timeout=60, json={"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 2}
    ).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"] == text and "".join(logprobs["tokens"]) == text
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"]) and logprobs["text_offset"][0] == 0
    assert all(v <= 0 for v in logprobs["token_logprobs"]) and all(len(top) == 2 for top in logprobs["top_logprobs"])


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"prompt": "x", "model": "gpt-4"}, 404, "not served here"),
        ({"prompt": "x", "max_tokens": 100_000}, 422, "max_tokens"),
        ({"prompt": ["x"] * 100}, 422, "prompt"),
    ],
)
def test_model_requests_out_of_bounds_are_refused(served, body, status, words):
    response = httpx.post(f"{served[1]}/completions", json=body, timeout=60)
    assert response.status_code == status and words in response.json()["error"]["message"]


def test_an_unreachable_server_is_a_clear_model_error():
    lm = OpenAICompatibleLM(f"http://127.0.0.1:{free_port()}/v1", model="m")
    with pytest.raises(ModelError, match="cannot reach the model server"):
        lm.generate("Question:")


def test_the_setting_makes_a_session_answer_with_the_remote_model(served, encoder):
    local_session, base = served
    settings = kgllm.Settings(openai_base_url=base)
    with kgllm.connect(settings=settings, encoder=encoder) as session:
        assert isinstance(session.lm, OpenAICompatibleLM)
        question = "Which subregion are the neighbours of Chad located in?"
        answer = session.ask(question)
        assert answer.metadata["model"] == local_session.lm.name
        assert answer.to_dict()["entities"] == local_session.ask(question).to_dict()["entities"]


def test_a_streamed_reply_arrives_as_server_sent_events(served):
    body = {"messages": [{"role": "user", "content": "Where is Kenya located?"}], "temperature": 0, "max_tokens": 16}
    whole = httpx.post(f"{served[1]}/chat/completions", json=body, timeout=60).json()
    with httpx.stream("POST", f"{served[1]}/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        == whole["choices"][0]["message"]["content"]
    )
