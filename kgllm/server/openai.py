"""The session's language model behind OpenAI-compatible endpoints: ``/v1/models``,
``/v1/completions`` and ``/v1/chat/completions``.

``stream=true`` is answered in the server-sent-events format clients expect, as one chunk
holding the whole reply once it is generated, then ``[DONE]``.

Beyond OpenAI's fields, ``top_k`` and ``repetition_penalty`` are understood (as vLLM does).
``temperature=0`` decodes greedily (``n > 1`` then returns the ``n`` best beams). With
``logprobs``, each choice carries the log-probability of every token of its text (of the
prompt too with ``echo``), which is how a client scores candidates: ``max_tokens=0``,
``echo=true``, ``logprobs=0``. Log-probabilities and token counts need a local Hugging Face
model (``HFCausalLM``), the kind ``kgllm serve`` loads.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from kgllm.llm.base import GenerationConfig, LanguageModel
from kgllm.llm.hf import HFCausalLM
from kgllm.llm.openai_compat import chat_prompt
from kgllm.server.limits import MAX_NEW_TOKENS, MAX_PROMPT_CHARS, MAX_PROMPTS

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
Stop = Annotated[str, Field(min_length=1, max_length=100)]


class Sampling(BaseModel):
    """Decoding fields shared by both endpoints; fields of OpenAI's API that do not apply are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    n: int = Field(1, ge=1, le=8)
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = None
    seed: int | None = None
    stream: bool = False

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


class CompletionRequest(Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: int = Field(16, ge=0, le=MAX_NEW_TOKENS)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: Text


class ChatRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=64)]
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)


@router.get("/models", summary="The model this server serves")
def models(request: Request) -> dict[str, Any]:
    lm = request.app.state.kgllm.session.lm
    data = [{"id": lm.name, "object": "model", "created": 0, "owned_by": "kgllm"}] if lm is not None else []
    return {"object": "list", "data": data}


@router.post("/completions", summary="Continue prompts (OpenAI's legacy completions API)")
def completions(body: CompletionRequest, request: Request) -> dict[str, Any]:
    server = request.app.state.kgllm
    lm = _served_model(server.session.lm, body)
    if body.logprobs is not None and not isinstance(lm, HFCausalLM):
        raise HTTPException(400, "log-probabilities need a local Hugging Face model; this server's model is remote")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    choices, generated = [], []
    with server.lock:
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
                    choice["logprobs"] = text_logprobs(
                        lm, prompt + text, 0 if body.echo else len(prompt), body.logprobs
                    )
                choices.append(choice)
                generated.append(text)
    response = _response("text_completion", "cmpl", lm, choices, prompts, generated)
    return _events(response, "text_completion", choices) if body.stream else response


@router.post("/chat/completions", summary="Reply to a chat (OpenAI's chat completions API)")
def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any]:
    server = request.app.state.kgllm
    lm = _served_model(server.session.lm, body)
    prompt, stops = chat_prompt([(m.role, m.content) for m in body.messages], getattr(lm, "tokenizer", None))
    max_tokens = body.max_completion_tokens or body.max_tokens or 64
    with server.lock:
        texts = lm.generate(prompt, body.config(max_tokens, stops))[0]
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text.strip()},
                "finish_reason": _finish_reason(lm, text, max_tokens),
            }
            for i, text in enumerate(texts)
        ]
    response = _response("chat.completion", "chatcmpl", lm, choices, [prompt], texts)
    deltas = [{"index": c["index"], "delta": c["message"], "finish_reason": c["finish_reason"]} for c in choices]
    return _events(response, "chat.completion.chunk", deltas) if body.stream else response


def _served_model(lm: LanguageModel | None, body: Sampling) -> LanguageModel:
    if lm is None:
        raise HTTPException(503, "this server runs without a language model (it was started with --no-model)")
    if body.model and body.model != lm.name:
        raise HTTPException(
            404, f"model {body.model!r} is not served here; this server serves {lm.name!r} (GET /v1/models)"
        )
    return lm


def _events(response: dict[str, Any], kind: str, choices: list[dict]) -> StreamingResponse:
    """The whole reply as one server-sent event, then the end marker."""
    chunk = {key: value for key, value in response.items() if key != "usage"} | {"object": kind, "choices": choices}
    return StreamingResponse(
        iter([f"data: {json.dumps(chunk)}\n\n", "data: [DONE]\n\n"]), media_type="text/event-stream"
    )


def _finish_reason(lm: LanguageModel, text: str, max_tokens: int) -> str:
    return "length" if max_tokens == 0 or (_count_tokens(lm, text) or 0) >= max_tokens else "stop"


def _count_tokens(lm: LanguageModel, text: str) -> int | None:
    if not isinstance(lm, HFCausalLM):
        return None
    return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


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
    prompt_tokens = [_count_tokens(lm, p) for p in prompts]
    completion_tokens = [_count_tokens(lm, c) for c in completions]
    if None not in prompt_tokens:
        usage = {"prompt_tokens": sum(prompt_tokens), "completion_tokens": sum(completion_tokens)}
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
