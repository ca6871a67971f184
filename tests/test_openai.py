"""The OpenAI-compatible endpoints serving the default model, and OpenAICompatibleLM talking to them
over real HTTP on loopback: the remote model must behave as the local one."""

import json

import httpx
import pytest
from pydantic import BaseModel

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


# =========================================================================
# Real clients: the official openai package and langchain-openai
# =========================================================================

QUESTION = "Where is Kenya located?"


class Country(BaseModel):
    """A country and where it lies."""

    name: str
    subregion: str
    landlocked: bool
    neighbours: list[str]


@pytest.fixture(scope="module")
def client(served):
    openai = pytest.importorskip("openai", reason='needs openai: pip install "kgllm[test]"')
    with openai.OpenAI(base_url=served[1], api_key="unused", max_retries=0, timeout=600) as client:
        yield client


def _local_reply(lm, messages, max_tokens=16):
    prompt, stops = chat_prompt(messages)
    return lm.generate(prompt, GenerationConfig(max_new_tokens=max_tokens, stop=stops))[0][0]


def test_the_official_client_sends_text_parts_and_the_developer_role(served, client):
    lm = served[0].lm
    reply = client.chat.completions.create(
        model=lm.name,
        messages=[
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Where is"}, {"type": "text", "text": "Kenya?"}]},
        ],
        temperature=0,
        max_completion_tokens=16,
    )
    expected = _local_reply(lm, [("system", "Answer briefly."), ("user", "Where is\nKenya?")])
    assert reply.choices[0].message.content == expected.strip() and reply.choices[0].message.role == "assistant"


def test_a_model_is_retrieved_by_id_and_an_unknown_id_is_openais_404(served, client):
    import openai

    name = served[0].lm.name
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found" and "gpt-4o" in caught.value.message


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"user": "someone"}, "user"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"frobnicate": True}, "frobnicate"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ({"stop": ["}"], "response_format": {"type": "json_object"}}, "stop"),  # would cut the JSON
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"pattern": "a"}}}},
            "response_format",
        ),
    ],
)
def test_parameters_this_server_lacks_are_refused_by_name(served, client, extra, param):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=served[0].lm.name, messages=[{"role": "user", "content": QUESTION}], max_tokens=4, extra_body=extra
        )
    assert caught.value.status_code == 400 and caught.value.param == param
    assert param.split(".")[0] in caught.value.message or param == "response_format"


def test_neutral_values_of_unsupported_parameters_are_accepted(served, client):
    reply = client.chat.completions.create(
        model=served[0].lm.name,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=4,
        temperature=0,
        presence_penalty=0,
        frequency_penalty=0,
        tools=None,
    )
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    "message, param",
    [
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}, "image_url"),
        ({"role": "tool", "content": "42", "tool_call_id": "c1"}, "tool"),
        ({"role": "user", "content": QUESTION, "name": "ann"}, "name"),
    ],
)
def test_messages_this_server_cannot_read_are_refused_by_name(served, message, param):
    response = httpx.post(f"{served[1]}/chat/completions", json={"messages": [message]}, timeout=60)
    error = response.json()["error"]
    assert response.status_code == 400 and param in error["message"] and error["param"].startswith("messages[0]")


def test_completions_refuse_parameters_they_lack(served):
    response = httpx.post(f"{served[1]}/completions", json={"prompt": "x", "suffix": "y"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "suffix"


SCHEMA = {
    "type": "object",
    "properties": {
        "country": {"type": "string", "maxLength": 16},
        "population": {"type": "integer"},
        "area": {"type": "number"},
        "landlocked": {"type": "boolean"},
        "region": {"enum": ["Africa", "Europe", "Asia"]},
        "neighbours": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 2},
        "capital": {"anyOf": [{"$ref": "#/$defs/City"}, {"type": "null"}]},
        "motto": {"type": "string", "maxLength": 8},
    },
    "required": ["country", "population", "area", "landlocked", "region", "neighbours", "capital"],
    "additionalProperties": False,
    "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
}


@pytest.mark.parametrize("seed", [None, 7])
def test_json_schema_replies_always_parse_and_validate(served, client, seed):
    """Greedy, then two sampled replies: every one parses and validates."""
    jsonschema = pytest.importorskip("jsonschema")
    sampling = {"temperature": 1.0, "seed": seed, "n": 2} if seed is not None else {"temperature": 0}
    reply = client.chat.completions.create(
        model=served[0].lm.name,
        messages=[{"role": "user", "content": QUESTION}],
        response_format={"type": "json_schema", "json_schema": {"name": "country", "schema": SCHEMA}},
        max_tokens=120,
        **sampling,
    )
    assert len(reply.choices) == sampling.get("n", 1)
    for choice in reply.choices:
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)
        assert choice.finish_reason == "stop"


def test_a_tight_token_budget_still_closes_the_document(served, client):
    shortest = (
        '{"country":"","population":0,"area":0,"landlocked":true,"region":"Asia","neighbours":[""],"capital":null}'
    )
    reply = client.chat.completions.create(
        model=served[0].lm.name,
        messages=[{"role": "user", "content": QUESTION}],
        response_format={"type": "json_schema", "json_schema": {"name": "country", "schema": SCHEMA}},
        max_tokens=len(shortest) + 3,
        temperature=0,
    )
    assert json.loads(reply.choices[0].message.content)["region"] in ("Africa", "Europe", "Asia")
    with pytest.raises(Exception, match="max_tokens"):
        client.chat.completions.create(
            model=served[0].lm.name,
            messages=[{"role": "user", "content": QUESTION}],
            response_format={"type": "json_schema", "json_schema": {"name": "country", "schema": SCHEMA}},
            max_tokens=len(shortest) - 10,
        )


def test_json_object_mode_replies_with_an_object(served, client):
    reply = client.chat.completions.create(
        model=served[0].lm.name,
        messages=[{"role": "user", "content": QUESTION}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0.8,
        seed=5,
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_the_official_clients_parse_helper_gets_a_pydantic_object(served, client):
    completion = client.chat.completions.parse(
        model=served[0].lm.name,
        messages=[{"role": "user", "content": QUESTION}],
        response_format=Country,
        temperature=0,
    )
    assert isinstance(completion.choices[0].message.parsed, Country)


def test_chat_logprobs_are_the_models_own(served, client):
    lm = served[0].lm
    reply = client.chat.completions.create(
        model=lm.name,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
    )
    choice = reply.choices[0]
    tokens = choice.logprobs.content
    text = "".join(t.token for t in tokens)
    assert text.strip() == choice.message.content and all(len(t.top_logprobs) == 3 for t in tokens)
    prompt, _ = chat_prompt([("user", QUESTION)])
    assert sum(t.logprob for t in tokens) == pytest.approx(lm.score(prompt, [text])[0], abs=1e-3)
    # greedy decoding picked the likeliest token each time
    assert all(t.token == t.top_logprobs[0].token for t in tokens)
    assert all(bytes(t.bytes).decode() == t.token for t in tokens)


def test_a_stream_with_include_usage_ends_with_a_usage_chunk(served, client):
    kwargs = {"model": served[0].lm.name, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
    whole = client.chat.completions.create(temperature=0, **kwargs)
    chunks = list(
        client.chat.completions.create(temperature=0, stream=True, stream_options={"include_usage": True}, **kwargs)
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason


@pytest.fixture(scope="module")
def chat_model(served):
    langchain_openai = pytest.importorskip(
        "langchain_openai", reason='needs langchain-openai: pip install "kgllm[test]"'
    )
    return langchain_openai.ChatOpenAI(
        base_url=served[1],
        api_key="unused",
        model=served[0].lm.name,
        temperature=0,
        max_tokens=16,
        max_retries=0,
        timeout=600,
    )


def test_langchain_chat_model_invokes_and_streams(served, chat_model):
    expected = _local_reply(served[0].lm, [("user", QUESTION)]).strip()
    message = chat_model.invoke(QUESTION)
    assert message.content == expected and message.usage_metadata["output_tokens"] > 0
    chunks = list(chat_model.stream(QUESTION, stream_usage=True))
    assert "".join(c.content for c in chunks) == expected
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.usage_metadata["total_tokens"] == message.usage_metadata["total_tokens"]


def test_langchain_structured_output_gets_a_pydantic_object(chat_model):
    structured = chat_model.model_copy(update={"max_tokens": 128}).with_structured_output(Country)
    assert isinstance(structured.invoke(QUESTION), Country)
    as_json = chat_model.model_copy(update={"max_tokens": 48}).with_structured_output(method="json_mode")
    assert isinstance(as_json.invoke(QUESTION), dict)


@pytest.mark.parametrize("schema", [SCHEMA, None, {"type": "array", "items": {"enum": [1, 12, "a"]}, "maxItems": 3}])
def test_random_walks_through_the_json_constraint_end_in_valid_documents(schema):
    """Any path the constraint allows, under any budget, ends as a document that validates."""
    jsonschema = pytest.importorskip("jsonschema")
    import random

    from kgllm.llm.json_schema import JsonSchemaConstraint

    vocabulary = dict(
        enumerate([*'{}[]":,-.eE+ ', *"0123456789", *"abcdefghijklmnopqrstuvwxyzACK", "true", '":"', ' "'])
    )
    eos = len(vocabulary)
    constraint = JsonSchemaConstraint(schema, vocabulary, eos)
    rng = random.Random(0)
    for _ in range(200):
        budget, generated = rng.randint(constraint.shortest, 200), ()
        while len(generated) < budget:
            token = rng.choice(constraint.allowed(generated, budget - len(generated)))
            if token == eos:
                break
            generated += (token,)
        document = json.loads("".join(vocabulary[t] for t in generated))
        jsonschema.validate(document, schema or {"type": "object"})


def test_schemas_outside_the_supported_subset_are_refused_by_keyword():
    from kgllm.exceptions import InputError
    from kgllm.llm.json_schema import compile_schema

    with pytest.raises(InputError, match="'pattern'"):
        compile_schema({"type": "string", "pattern": "^a"})
    with pytest.raises(InputError, match="recursive"):
        compile_schema({"$ref": "#/$defs/T", "$defs": {"T": {"type": "array", "items": {"$ref": "#/$defs/T"}}}})


def test_a_streamed_completion_can_end_with_usage_too(served):
    body = {"prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream(
        "POST", f"{served[1]}/completions", json={**body, "stream_options": {"include_usage": True}}, timeout=120
    ) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(event) for event in events[:-1]]
    assert events[-1] == "[DONE]" and chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    whole = httpx.post(f"{served[1]}/completions", json={**body, "stream": False}, timeout=120).json()
    assert chunks[0]["choices"][0]["text"] == whole["choices"][0]["text"]
