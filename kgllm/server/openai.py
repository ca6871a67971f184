"""The session's language model behind OpenAI-compatible endpoints: ``/v1/models``,
``/v1/models/{id}``, ``/v1/completions`` and ``/v1/chat/completions``.

``stream=true`` is answered in the server-sent-events format clients expect. A chat reply streams
token by token as the model writes it (one ``delta`` per piece, surrounding whitespace trimmed as
in ``content``; a client that disconnects stops the generation); with ``n > 1``, ``logprobs`` or a
``response_format``, and for ``/v1/completions``, the whole reply comes in one chunk once generated.
Then a closing chunk with its ``finish_reason``, a usage chunk when
``stream_options.include_usage`` asks for it (every chunk before it has ``"usage": null``), and ``[DONE]``.

Chat messages may hold their content as a list of ``text`` parts; the ``developer`` role is
read as ``system``. ``response_format`` ``json_object`` and ``json_schema`` are honoured by
constrained decoding (:mod:`kgllm.llm.json_schema`): the reply always parses, and validates
against the schema. Chat ``logprobs`` / ``top_logprobs`` give the log-probability of each token
of the reply as generated (before surrounding whitespace is trimmed from ``content``).

Every parameter of OpenAI's API that this server does not implement (``tools``, ``audio``,
``logit_bias``, ...) is refused with HTTP 400 naming it, unless it is sent as ``null`` or with
its neutral value (``frequency_penalty=0``, ``tools=[]``, ...); a parameter OpenAI's API does
not have is refused as unknown. Nothing a client asks for is silently ignored.

Beyond OpenAI's fields, ``top_k`` and ``repetition_penalty`` are understood (as vLLM does).
``temperature=0`` decodes greedily (``n > 1`` then returns the ``n`` best beams). With
``logprobs``, each choice carries the log-probability of every token of its text (of the
prompt too with ``echo``), which is how a client scores candidates: ``max_tokens=0``,
``echo=true``, ``logprobs=0``. Log-probabilities and token counts need a local Hugging Face
model (``HFCausalLM``), the kind ``kgllm serve`` loads. Generation runs on the server's worker
threads, one request at a time (``ServerState.model_lock``): the rest of the API goes on meanwhile.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from kgllm.exceptions import InputError, KGLLMError
from kgllm.llm.base import GenerationConfig, LanguageModel, trimmed
from kgllm.llm.hf import HFCausalLM
from kgllm.llm.json_schema import generate_json
from kgllm.llm.openai_compat import chat_prompt
from kgllm.server.limits import MAX_NEW_TOKENS, MAX_PROMPT_CHARS, MAX_PROMPTS

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
Stop = Annotated[str, Field(min_length=1, max_length=100)]

# OpenAI's request parameters (chat and legacy completions). Those without a field below are refused.
OPENAI_CHAT_PARAMETERS = frozenset(
    {
        "messages",
        "model",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
OPENAI_COMPLETION_PARAMETERS = frozenset(
    {
        "model",
        "prompt",
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "user",
    }
)
# values that ask for nothing beyond what this server does anyway
NEUTRAL_VALUES: dict[str, Any] = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logit_bias": {},
    "tools": [],
    "functions": [],
    "tool_choice": "none",
    "function_call": "none",
    "modalities": ["text"],
    "store": False,
    "best_of": 1,
}
JSON_DEFAULT_MAX_TOKENS = 128


class Refused(Exception):
    """A request this server will not serve, answered 400 in OpenAI's error shape naming ``param``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class Sampling(BaseModel):
    """Decoding fields shared by both endpoints; other fields are checked by :func:`refuse_unsupported`."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    n: int = Field(1, ge=1, le=8)
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def config(self, max_tokens: int, default_stop: tuple[str, ...] = ()) -> GenerationConfig:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or ())
        sampling = self.temperature > 0
        return GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sampling,
            num_return_sequences=self.n,
            num_beams=1 if sampling else self.n,
            temperature=self.temperature if sampling else 1.0,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            stop=tuple(stops) + default_stop,
            seed=self.seed,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def refuse_unsupported(body: Sampling, known: frozenset[str]) -> None:
    """Raise :class:`Refused` for the first field of ``body`` this server does not implement."""
    for name, value in (body.model_extra or {}).items():
        if value is None or (name in NEUTRAL_VALUES and value == NEUTRAL_VALUES[name]):
            continue
        if name in known:
            raise Refused(f"parameter {name!r} is not supported by this server", name, code="unsupported_parameter")
        raise Refused(f"unknown parameter {name!r}", name, code="unknown_parameter")
    if body.stream_options is not None:
        if not body.stream:
            raise Refused("stream_options is only allowed with stream=true", "stream_options")
        extra = sorted(body.stream_options.model_extra or {})
        if extra:
            raise Refused(f"stream option {extra[0]!r} is not supported", f"stream_options.{extra[0]}")


class CompletionRequest(Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: int = Field(16, ge=0, le=MAX_NEW_TOKENS)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: Text | None = None


class ChatMessage(BaseModel):
    """One message; ``content`` is text or a list of ``{"type": "text", "text": ...}`` parts."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(max_length=32)
    content: Text | Annotated[list[ContentPart], Field(max_length=64)] | None = None

    def as_pair(self, index: int) -> tuple[str, str]:
        """``(role, text)`` as :func:`chat_prompt` takes it; :class:`Refused` for what cannot be read."""
        where = f"messages[{index}]"
        if self.role not in ("system", "developer", "user", "assistant"):
            raise Refused(f"{where}: role {self.role!r} is not supported (tools are not)", f"{where}.role")
        extra = sorted(k for k, v in (self.model_extra or {}).items() if v is not None)
        if extra:
            raise Refused(f"{where}: field {extra[0]!r} is not supported by this server", f"{where}.{extra[0]}")
        if self.content is None:
            raise Refused(f"{where}: content is missing", f"{where}.content")
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return role, self.content
        texts = []
        for j, part in enumerate(self.content):
            if part.type != "text":
                raise Refused(
                    f"{where}.content[{j}]: content part type {part.type!r} is not supported; only 'text' parts are",
                    f"{where}.content[{j}].type",
                )
            if part.text is None:
                raise Refused(f"{where}.content[{j}]: a text part needs 'text'", f"{where}.content[{j}].text")
            texts.append(part.text)
        return role, "\n".join(texts)


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=64)]
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None

    def json_mode(self) -> tuple[bool, dict[str, Any] | None]:
        """Whether the reply must be JSON, and its schema (``None``: any object)."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return False, None
        if fmt.type == "json_object":
            return True, None
        if fmt.json_schema is None:
            raise Refused("response_format of type 'json_schema' needs 'json_schema'", "response_format.json_schema")
        return True, fmt.json_schema.schema_ or {"type": "object"}


@router.get("/models", summary="The model this server serves")
async def models(request: Request) -> dict[str, Any]:
    lm = request.app.state.kgllm.session.lm
    return {"object": "list", "data": [_model_card(lm)] if lm is not None else []}


@router.get("/models/{model_id:path}", summary="One served model, by its id")
def model(model_id: str, request: Request) -> Any:
    lm = request.app.state.kgllm.session.lm
    if lm is None or model_id != lm.name:
        return Refused(
            f"the model {model_id!r} does not exist on this server (GET /v1/models)", "model", 404, "model_not_found"
        ).response()
    return _model_card(lm)


def _model_card(lm: LanguageModel) -> dict[str, Any]:
    return {"id": lm.name, "object": "model", "created": 0, "owned_by": "kgllm"}


@router.post("/completions", summary="Continue prompts (OpenAI's legacy completions API)")
async def completions(body: CompletionRequest, request: Request) -> Any:
    server = request.app.state.kgllm
    try:
        return await server.run(_complete, body, server)
    except Refused as refused:
        return refused.response()


def _complete(body: CompletionRequest, server: Any) -> Any:
    refuse_unsupported(body, OPENAI_COMPLETION_PARAMETERS)
    lm = _served_model(server.session.lm, body)
    if body.logprobs is not None and not isinstance(lm, HFCausalLM):
        raise HTTPException(400, "log-probabilities need a local Hugging Face model; this server's model is remote")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    choices: list[dict[str, Any]] = []
    generated: list[str] = []
    with server.model_lock:  # one generation at a time: seeded sampling sets torch's global RNG
        outputs = (
            lm.generate(prompts, body.config(body.max_tokens)) if body.max_tokens else [[""] * body.n for _ in prompts]
        )
        for prompt, texts in zip(prompts, outputs, strict=True):
            for text in texts:
                choice = {
                    "index": len(choices),
                    "text": prompt + text if body.echo else text,
                    "finish_reason": _finish_reason(lm, text, body.max_tokens),
                    "logprobs": None,
                }
                if body.logprobs is not None:
                    assert isinstance(lm, HFCausalLM)  # refused above otherwise
                    choice["logprobs"] = text_logprobs(
                        lm, prompt + text, 0 if body.echo else len(prompt), body.logprobs
                    )
                choices.append(choice)
                generated.append(text)
    response = _response("text_completion", "cmpl", lm, choices, prompts, generated)
    if not body.stream:
        return response
    return _events(response, "text_completion", [choices], body.include_usage)


@router.post("/chat/completions", summary="Reply to a chat (OpenAI's chat completions API)")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    server = request.app.state.kgllm
    try:
        return await server.run(_chat, body, server)
    except Refused as refused:
        return refused.response()


def _chat(body: ChatRequest, server: Any) -> Any:
    refuse_unsupported(body, OPENAI_CHAT_PARAMETERS)
    if body.top_logprobs is not None and not body.logprobs:
        raise Refused("top_logprobs needs logprobs=true", "top_logprobs")
    messages = [message.as_pair(i) for i, message in enumerate(body.messages)]
    json_mode, schema = body.json_mode()
    lm = _served_model(server.session.lm, body)
    if (json_mode or body.logprobs) and not isinstance(lm, HFCausalLM):
        param = "response_format" if json_mode else "logprobs"
        raise Refused(f"{param} needs a local Hugging Face model; this server's model is remote", param)
    if json_mode and body.stop:
        raise Refused("stop strings would cut a JSON reply; do not combine stop with response_format", "stop")
    prompt, stops = chat_prompt(messages, getattr(lm, "tokenizer", None))
    max_tokens = body.max_completion_tokens or body.max_tokens or (JSON_DEFAULT_MAX_TOKENS if json_mode else 64)
    if body.stream and not (json_mode or body.logprobs or body.n > 1):
        chunks = _streamed_chat(body, server, lm, prompt, body.config(max_tokens, stops))
        return StreamingResponse(_sse(server.stream(lambda: chunks)), media_type="text/event-stream")
    with server.model_lock:  # one generation at a time: seeded sampling sets torch's global RNG
        if json_mode:
            try:
                texts = generate_json(lm, prompt, schema, body.config(max_tokens))
            except InputError as exc:
                raise Refused(str(exc), "response_format") from exc
        else:
            texts = lm.generate(prompt, body.config(max_tokens, stops))[0]
        choices = []
        for i, text in enumerate(texts):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": text.strip()},
                # a JSON reply always ends as a whole document: the constraint closes it in time
                "finish_reason": "stop" if json_mode else _finish_reason(lm, text, max_tokens),
                "logprobs": None,
            }
            if body.logprobs:
                assert isinstance(lm, HFCausalLM)  # refused above otherwise
                choice["logprobs"] = {"content": reply_logprobs(lm, prompt, text, body.top_logprobs or 0)}
            choices.append(choice)
    response = _response("chat.completion", "chatcmpl", lm, choices, [prompt], texts)
    if not body.stream:
        return response
    opening = [
        {"index": c["index"], "delta": c["message"], "logprobs": c["logprobs"], "finish_reason": None} for c in choices
    ]
    closing = [
        {"index": c["index"], "delta": {}, "logprobs": None, "finish_reason": c["finish_reason"]} for c in choices
    ]
    return _events(response, "chat.completion.chunk", [opening, closing], body.include_usage)


def _streamed_chat(
    body: ChatRequest, server: Any, lm: LanguageModel, prompt: str, config: GenerationConfig
) -> Iterator[dict[str, Any]]:
    """The chat reply's chunks as the model writes it; the content's surrounding whitespace is
    trimmed as in a whole reply (trailing spaces wait for the text that follows them)."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = lm.name
    if body.include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    yield chunk({"role": "assistant", "content": ""})
    written: list[str] = []

    def recorded() -> Iterator[str]:
        for piece in lm.stream(prompt, config):
            written.append(piece)
            yield piece

    with server.model_lock:  # one generation at a time; released when the stream ends or is closed
        for content in trimmed(recorded()):
            yield chunk({"content": content})
    raw = "".join(written)
    yield chunk({}, _finish_reason(lm, raw, config.max_new_tokens))
    if body.include_usage:
        usage = _response("chat.completion", "chatcmpl", lm, [], [prompt], [raw]).get("usage")
        yield base | {"choices": [], "usage": usage}


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Chunks as server-sent events, then ``[DONE]``; a failure mid-stream ends it with an error event."""
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
    except KGLLMError as exc:
        error = {"message": " ".join(str(exc).split()), "type": type(exc).__name__}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    yield "data: [DONE]\n\n"


def _served_model(lm: LanguageModel | None, body: Sampling) -> LanguageModel:
    if lm is None:
        raise HTTPException(503, "this server runs without a language model (it was started with --no-model)")
    if body.model and body.model != lm.name:
        raise Refused(
            f"model {body.model!r} is not served here; this server serves {lm.name!r} (GET /v1/models)",
            "model",
            404,
            "model_not_found",
        )
    return lm


def _events(response: dict[str, Any], kind: str, batches: list[list[dict]], include_usage: bool) -> StreamingResponse:
    """The reply as server-sent events: one chunk per batch of choices, the usage chunk when asked, the end marker."""
    base = {key: value for key, value in response.items() if key not in ("usage", "choices")} | {"object": kind}
    if include_usage:
        base["usage"] = None
    chunks = [base | {"choices": choices} for choices in batches]
    if include_usage:
        chunks.append(base | {"choices": [], "usage": response.get("usage")})
    events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(events), media_type="text/event-stream")


def _finish_reason(lm: LanguageModel, text: str, max_tokens: int) -> str:
    return "length" if max_tokens == 0 or (_count_tokens(lm, text) or 0) >= max_tokens else "stop"


def _count_tokens(lm: LanguageModel, text: str) -> int | None:
    if not isinstance(lm, HFCausalLM):
        return None
    return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def _count_all_tokens(lm: LanguageModel, texts: list[str]) -> int | None:
    """The tokens of all ``texts`` together; None when ``lm`` cannot count them."""
    counts = [_count_tokens(lm, text) for text in texts]
    return None if None in counts else sum(n for n in counts if n is not None)


def _response(
    kind: str, prefix: str, lm: LanguageModel, choices: list[dict], prompts: list[str], completions: list[str]
) -> dict[str, Any]:
    response = {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": lm.name,
        "choices": choices,
    }
    prompt_tokens = _count_all_tokens(lm, prompts)
    completion_tokens = _count_all_tokens(lm, completions)
    if prompt_tokens is not None and completion_tokens is not None:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        response["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return response


def text_logprobs(lm: HFCausalLM, text: str, start: int, top: int) -> dict[str, list]:
    """OpenAI's ``logprobs`` object for the tokens of ``text`` that start at or after char ``start``:
    each token's log-probability given everything before it (the tokenizer's BOS included),
    and the ``top`` most likely tokens at its place."""
    import torch

    encoded = lm.tokenizer(text, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    special = set(lm.tokenizer.all_special_ids)
    logprobs = lm.next_token_logprobs(ids)
    result: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for i, (token, (begin, end)) in enumerate(zip(ids, offsets, strict=True)):
        if begin < start or (token in special and begin == end):
            continue
        result["tokens"].append(text[begin:end])
        result["text_offset"].append(begin)
        if i == 0:  # no BOS: the first token has nothing to be predicted from
            result["token_logprobs"].append(None)
            result["top_logprobs"].append(None)
            continue
        result["token_logprobs"].append(float(logprobs[i - 1, token]))
        values, indices = logprobs[i - 1].topk(top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
        result["top_logprobs"].append({lm.tokenizer.decode([int(j)]): float(v) for v, j in zip(values, indices)})
    return result


def reply_logprobs(lm: HFCausalLM, prompt: str, text: str, top: int) -> list[dict[str, Any]]:
    """Chat ``logprobs.content``: each token of ``text`` (encoded after the prompt's tokens) with its
    log-probability given the prompt and the tokens before it, and the ``top`` likeliest tokens there."""
    import torch

    prompt_ids = lm.tokenizer(prompt)["input_ids"]
    reply_ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not reply_ids:
        return []
    ids = prompt_ids + reply_ids
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)

    def entry(token: int, value: float) -> dict[str, Any]:
        piece = cast(str, lm.tokenizer.decode([token]))  # one sequence of ids decodes to one string
        return {"token": piece, "logprob": value, "bytes": list(piece.encode())}

    content = []
    for row, token in zip(logprobs, reply_ids, strict=True):
        values, indices = row.topk(top) if top else (row[:0], row[:0].long())
        content.append(
            entry(token, float(row[token]))
            | {"top_logprobs": [entry(int(j), float(v)) for v, j in zip(values, indices, strict=True)]}
        )
    return content
