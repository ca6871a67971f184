"""The OpenAI wire format, both ways: a ``LanguageModel`` that runs on any OpenAI-compatible server
(vLLM, Ollama, llama.cpp's server, or ``kgllm serve``), and how chat messages become a prompt.

Selected by configuration: ``KGLLM_OPENAI_BASE_URL=http://host:8000/v1`` (with ``KGLLM_OPENAI_MODEL``
and ``KGLLM_OPENAI_API_KEY`` when needed) makes ``kgllm.connect`` use this backend.

Example::

    lm = OpenAICompatibleLM("http://127.0.0.1:8000/v1")
    lm.generate("Question: Where is Kenya located?\\nAnswer:")
    lm.score("Question: Where is Kenya located?\\nAnswer:", [" Eastern Africa", " Europe"])

``score`` sends each ``prompt + candidate`` to ``/completions`` with ``echo`` and ``logprobs`` and
``max_tokens=0`` and sums the log-probabilities of the tokens that start at or after the end of
the prompt, so the candidate is scored as the server tokenizes the whole text. A server that
returns no prompt log-probabilities (Ollama, for one) cannot score: ``ModelError`` says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from kgllm.exceptions import ConfigurationError, InputError, ModelError, ModelUnavailableError
from kgllm.llm.base import Constraint, Generation, GenerationConfig, LanguageModel

CHAT_ROLES = ("system", "user", "assistant")


def chat_prompt(messages: Sequence[tuple[str, str]], tokenizer: Any = None) -> tuple[str, tuple[str, ...]]:
    """The prompt for ``(role, content)`` messages, and the stop strings that end the reply.

    A tokenizer with a chat template formats the chat itself (its end-of-turn token stops the reply);
    otherwise the chat is written as the ``Question: ... / Answer: ...`` lines the default model is
    trained on, and the reply ends at the end of its line.
    """
    if not messages or messages[-1][0] != "user":
        raise InputError("a chat needs at least one message, and the last one must be from the user")
    unknown = sorted({role for role, _ in messages} - set(CHAT_ROLES))
    if unknown:
        raise InputError(f"unknown chat role {unknown[0]!r}; use one of: {', '.join(CHAT_ROLES)}")
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in messages], tokenize=False, add_generation_prompt=True
        )
        return prompt, ()
    prefix = {"system": "", "user": "Question: ", "assistant": "Answer: "}
    lines = [prefix[role] + " ".join(content.split()) for role, content in messages]
    return "\n".join(lines) + "\nAnswer:", ("\n",)


class OpenAICompatibleLM(LanguageModel):
    """A model served over the OpenAI HTTP API (``/models``, ``/completions``).

    ``base_url`` ends in ``/v1``; ``model`` defaults to the first model the server lists;
    ``api_key`` is sent as ``Authorization: Bearer``. Beam search is not part of the API:
    ``num_beams > 1`` raises ``ConfigurationError``.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 120.0):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"OpenAI-compatible base URL must start with http:// or https://, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self._model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Any, model: str | os.PathLike | None = None) -> OpenAICompatibleLM:
        """The model at ``KGLLM_OPENAI_BASE_URL`` (``model``, else ``KGLLM_OPENAI_MODEL``; ``KGLLM_OPENAI_API_KEY``)."""
        if not settings.openai_base_url:
            raise ConfigurationError(
                "set KGLLM_OPENAI_BASE_URL (e.g. http://127.0.0.1:8000/v1) to use an OpenAI-compatible server"
            )
        return cls(settings.openai_base_url, str(model) if model else settings.openai_model, settings.openai_api_key)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.model

    @property
    def model(self) -> str:
        """The served model's name (asked of the server once when not given)."""
        if self._model is None:
            listed = self._request("GET", "/models").get("data") or []
            if not listed:
                raise ModelError(f"the server at {self.base_url} lists no models")
            self._model = listed[0]["id"]
        return self._model

    def models(self) -> list[str]:
        """Names of the models the server offers."""
        return [m["id"] for m in self._request("GET", "/models").get("data") or []]

    def close(self) -> None:
        self._client.close()

    def _generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        allowed: list[str] | None,
        constraint: Constraint | None,
        logprobs: bool,
    ) -> list[list[Generation]]:
        # no token constraints or log-probabilities over the API (supports_constraints is False)
        if allowed is not None:
            return [
                [Generation(text) for text in self._choose(prompt, allowed, config.num_return_sequences)]
                for prompt in prompts
            ]
        choices = self._choices(
            self._request("POST", "/completions", self._payload(prompts, config)),
            len(prompts) * config.num_return_sequences,
        )
        n = config.num_return_sequences
        return [[Generation(c["text"]) for c in choices[i * n : (i + 1) * n]] for i in range(len(prompts))]

    def _stream(self, prompt: str, config: GenerationConfig, constraint: Constraint | None) -> Iterator[str]:
        """``/completions`` with ``stream=true``: each server-sent chunk's text as it arrives; the
        response is closed (and the server stops) when the consumer stops."""
        url = f"{self.base_url}/completions"
        payload = self._payload([prompt], config) | {"stream": True}
        try:
            with self._client.stream("POST", "/completions", json=payload) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ModelError(f"{url} answered HTTP {response.status_code}: {_error_message(response)}")
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line.removeprefix("data:").strip()
                    if data == "[DONE]":
                        return
                    if text := _chunk_text(data, url):
                        yield text
        except httpx.HTTPError as exc:
            raise ModelError(f"the stream from {url} failed: {exc}") from exc

    def _payload(self, prompts: list[str], config: GenerationConfig) -> dict[str, Any]:
        """The ``/completions`` request for ``prompts`` under ``config``."""
        if config.num_beams > 1:
            raise ConfigurationError(
                "beam search (num_beams > 1) is not part of the OpenAI API; use sampling or num_beams=1"
            )
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompts,
            "max_tokens": config.max_new_tokens,
            "n": config.num_return_sequences,
            "temperature": config.temperature if config.do_sample else 0.0,
            "top_p": config.top_p,
            "stop": [s for s in config.stop if s][:4] or None,
            "seed": config.seed,
        }
        # not in OpenAI's API, understood by vLLM, llama.cpp and kgllm: sent only when they matter
        if config.top_k:
            payload["top_k"] = config.top_k
        if config.repetition_penalty != 1.0:
            payload["repetition_penalty"] = config.repetition_penalty
        return payload

    def _choose(self, prompt: str, allowed: list[str], n: int) -> list[str]:
        """Constrained decoding over the API: the ``n`` candidates the server finds most likely
        (the API has no trie, and scoring every candidate is the exact search a trie approximates)."""
        scores = self._score(prompt, allowed, normalize=False)
        return [allowed[i] for i in sorted(range(len(allowed)), key=lambda i: -scores[i])[:n]]

    def _score(self, prompt: str, candidates: list[str], normalize: bool) -> list[float]:
        payload = {
            "model": self.model,
            "prompt": [prompt + c for c in candidates],
            "max_tokens": 0,
            "echo": True,
            "logprobs": 0,
            "temperature": 0.0,
        }
        choices = self._choices(self._request("POST", "/completions", payload), len(candidates))
        return [
            self._candidate_logprob(choice, len(prompt), len(prompt) + len(candidate), normalize)
            for choice, candidate in zip(choices, candidates, strict=True)
        ]

    def _candidate_logprob(self, choice: dict, start: int, end: int, normalize: bool) -> float:
        logprobs = choice.get("logprobs") or {}
        offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
        if not offsets or not values:
            raise ModelError(
                f"the server at {self.base_url} returned no prompt log-probabilities (echo + logprobs); "
                "scoring needs a server that does, such as vLLM or kgllm serve"
            )
        picked = [v for offset, v in zip(offsets, values, strict=True) if start <= offset < end and v is not None]
        if not picked:
            raise ModelError(f"the server at {self.base_url} returned no tokens for a candidate")
        total = float(sum(picked))
        return total / len(picked) if normalize else total

    @staticmethod
    def _choices(response: dict, expected: int) -> list[dict]:
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != expected:
            raise ModelError(f"expected {expected} completions from the server, got {len(choices)}")
        return choices

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise ModelUnavailableError(f"cannot reach the model server at {url}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ModelUnavailableError(f"{url} answered HTTP {response.status_code}: {_error_message(response)}")
        if response.status_code >= 400:
            raise ModelError(f"{url} answered HTTP {response.status_code}: {_error_message(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise ModelUnavailableError(
                f"{url} answered with something that is not JSON: {response.text[:200]!r}"
            ) from exc


def _chunk_text(data: str, url: str) -> str:
    """The text of one streamed ``/completions`` chunk."""
    try:
        choices = json.loads(data).get("choices") or []
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"{url} streamed something that is not a completion chunk: {data[:200]!r}") from exc
    return (choices[0].get("text") or "") if choices else ""


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return response.text[:200]
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)
