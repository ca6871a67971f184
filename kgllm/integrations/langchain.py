"""LangChain pieces over kgllm: a retriever whose documents are evidence paths, and a chat model
over the core language model.

Example::

    from kgllm.integrations.langchain import KGLLMChatModel, KGLLMRetriever

    session = kgllm.connect()
    docs = KGLLMRetriever(session=session).invoke("Which countries border Chad?")
    docs[0].metadata["triples"]     # [["Niger", "neighbor of", "Chad"]]
    KGLLMChatModel(lm=session.lm).invoke("Where is Kenya located?").content
    for chunk in KGLLMChatModel(lm=session.lm).stream("Where is Kenya located?"):
        print(chunk.content, end="")

``examples/langchain_chain.py`` joins both in an LCEL chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kgllm.exceptions import InputError, MissingDependencyError
from kgllm.llm.base import GenerationConfig, LanguageModel, trimmed
from kgllm.llm.openai_compat import chat_prompt
from kgllm.types import Answer

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError(
        'kgllm.integrations.langchain needs langchain-core: pip install "kgllm[langchain]"'
    ) from exc

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class KGLLMRetriever(BaseRetriever):
    """Answers the query with a kgllm session; one ``Document`` per evidence path.

    Metadata: ``triples`` (labels), ``triple_ids``, ``path`` (node labels in walking order),
    ``score``, and the session's ``answer`` and ``confidence``. A question the graph does not
    answer gives its closest facts instead, with ``kind`` "context" and no score.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    session: Any = Field(description="A kgllm.Session (kgllm.connect()).")
    max_documents: int = Field(20, ge=1)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return answer_documents(self.session.ask(query), self.max_documents)


def answer_documents(answer: Answer, limit: int) -> list[Document]:
    """Documents for the evidence of an answer, at most ``limit``."""
    shared = {"question": answer.question, "answer": answer.text, "confidence": answer.confidence}
    if answer.evidence.paths:
        return [
            _document(
                answer,
                p.triples,
                {**shared, "kind": "path", "score": p.score, "path": [answer.label(n) for n in p.nodes]},
            )
            for p in answer.evidence.paths[:limit]
        ]
    return [
        _document(answer, (t,), {**shared, "kind": "context", "score": None}) for t in answer.evidence.triples[:limit]
    ]


def _document(answer: Answer, triples, metadata: dict[str, Any]) -> Document:
    labelled = [[answer.label(t.head), answer.label(t.relation), answer.label(t.tail)] for t in triples]
    return Document(
        page_content="; ".join(" ".join(fact) for fact in labelled) + ".",
        metadata={**metadata, "triples": labelled, "triple_ids": [t.as_list() for t in triples]},
    )


class KGLLMChatModel(BaseChatModel):
    """A LangChain chat model over a kgllm ``LanguageModel`` (the default model trained on the graph,
    a local Hugging Face model, or one behind an OpenAI-compatible server).

    Messages become a prompt as ``kgllm serve``'s ``/v1/chat/completions`` makes it
    (:func:`kgllm.llm.openai_compat.chat_prompt`); ``temperature=0`` decodes greedily.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    lm: LanguageModel = Field(description="The language model, e.g. session.lm.")
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)

    @property
    def _llm_type(self) -> str:
        return "kgllm"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, config = self._request(messages, stop)
        text = self.lm.generate(prompt, config)[0][0].strip()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The reply piece by piece as the model writes it (joined: what ``invoke`` returns)."""
        prompt, config = self._request(messages, stop)
        for piece in trimmed(self.lm.stream(prompt, config)):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def _request(self, messages: list[BaseMessage], stop: list[str] | None) -> tuple[str, GenerationConfig]:
        prompt, stops = chat_prompt([_turn(m) for m in messages], getattr(self.lm, "tokenizer", None))
        sampling = self.temperature > 0
        config = GenerationConfig(
            max_new_tokens=self.max_tokens,
            do_sample=sampling,
            temperature=self.temperature if sampling else 1.0,
            stop=tuple(stop or ()) + stops,
        )
        return prompt, config


def _turn(message: BaseMessage) -> tuple[str, str]:
    if message.type not in _ROLES or not isinstance(message.content, str):
        raise InputError(f"the chat model takes system, human and AI messages with text content, not {message.type!r}")
    return _ROLES[message.type], message.content
