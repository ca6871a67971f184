"""Streaming with the default model: LanguageModel.stream, Session.ask_stream, POST /ask as
server-sent events, chat completions token by token, LangChain, and ``kgllm ask --stream``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

import kgllm
from kgllm.exceptions import InputError
from kgllm.llm.base import GenerationConfig, trimmed, until_stop
from kgllm.server import create_app, running_server
from kgllm.types import Answer, Evidence

pytestmark = pytest.mark.slow

PROMPT = "Question: Where is Kenya located?\nAnswer:"
QUESTION = "Where is Kenya located?"


class ClosedBookAnswerer:
    """The session's model answering from what it learned, streaming as it writes; the claims of
    its answer are checked against the graph. It records how far its last stream went."""

    def __init__(self, session: kgllm.Session, config: GenerationConfig):
        self.session = session
        self.config = config
        self.pieces = 0
        self.finished = threading.Event()

    def answer(self, question: str, **options) -> Answer:
        *_, final = self.stream(question, **options)
        return final

    def stream(self, question: str, **options) -> Iterator[str | Answer]:
        if options:
            raise InputError(f"unknown options {sorted(options)}")
        self.pieces, text = 0, ""
        self.finished.clear()
        try:
            for piece in self.session.lm.stream(f"Question: {question}\nAnswer:", self.config):
                self.pieces += 1
                text += piece
                yield piece
        finally:
            self.finished.set()
        claims = self.session.check(text).to_dict() if text.strip() else {}
        yield Answer(question, text, [], Evidence(), 0.0, metadata={"claims": claims})


@pytest.fixture(scope="module")
def session(encoder):
    with kgllm.connect(encoder=encoder, progress=False) as session:
        session.answerers["closed-book"] = ClosedBookAnswerer(session, GenerationConfig(max_new_tokens=16))
        yield session


@pytest.fixture(scope="module")
def url(session):
    with running_server(create_app(session)) as url:
        yield url


def events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event, data) of each server-sent event of ``response``."""
    found, event = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            found.append((event, json.loads(line.removeprefix("data: "))))
            event = "message"
    return found


# ---------------------------------------------------------------- the model


def test_the_stream_joins_to_the_generated_text(session):
    config = GenerationConfig(max_new_tokens=16, stop=("\n",))
    pieces = list(session.lm.stream(PROMPT, config))
    assert len(pieces) > 1 and "".join(pieces) == session.lm.generate(PROMPT, config)[0][0]


def test_leaving_the_stream_stops_the_generation_thread(session):
    stream = session.lm.stream(PROMPT, GenerationConfig(max_new_tokens=400, min_new_tokens=400, stop=()))
    next(stream)
    stream.close()  # joins the generation thread, which stops at its next token
    assert not [t for t in threading.enumerate() if t.name == "kgllm-stream"]


def test_beams_cannot_stream(session):
    with pytest.raises(InputError, match="one sequence"):
        session.lm.stream(PROMPT, GenerationConfig(num_beams=2))


def test_stop_strings_are_cut_across_pieces():
    assert "".join(until_stop(iter(["Eastern Af", "rica\nNext", " line"]), ("\n",))) == "Eastern Africa"
    assert "".join(until_stop(iter(["a E", "N", "D b"]), ("END",))) == "a "
    assert list(trimmed(iter([" ", " Eastern", " ", " Africa ", " "]))) == ["Eastern", "  Africa"]


# ---------------------------------------------------------------- session and /ask


def test_ask_stream_gives_deltas_then_the_answer(session):
    items = list(session.ask_stream(QUESTION, mode="closed-book"))
    *pieces, final = items
    assert pieces and all(isinstance(p, str) for p in pieces) and isinstance(final, Answer)
    assert "".join(pieces) == final.text
    [only] = session.ask_stream("Which countries border Chad?")  # paths cannot stream: the answer only
    assert isinstance(only, Answer) and "Niger" in only.text


def test_ask_streams_server_sent_events_ending_with_the_answer(url):
    body = {"question": QUESTION, "answerer": "closed-book", "stream": True}
    with httpx.stream("POST", f"{url}/ask", json=body, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        received = events(response)
    *tokens, (last, answer) = received
    assert tokens and {event for event, _ in tokens} == {"token"} and last == "answer"
    assert "".join(data["text"] for _, data in tokens) == answer["answer"]
    assert "claims" in answer["metadata"] and "graph" in answer


def test_an_answer_that_cannot_stream_comes_as_one_answer_event(url):
    body = {"question": "Which countries border Chad?", "stream": True, "mode": "graph"}
    with httpx.stream("POST", f"{url}/ask", json=body, timeout=120) as response:
        [(event, answer)] = events(response)
    assert event == "answer" and "Niger" in answer["answer"] and answer["found"]


class FailingAnswerer:
    """Writes one piece, then fails."""

    def answer(self, question: str, **options) -> Answer:
        raise InputError("the oracle is out")

    def stream(self, question: str, **options) -> Iterator[str | Answer]:
        yield "The"
        raise InputError("the oracle is out")


def test_a_failure_while_streaming_is_an_error_event(session, url):
    session.answerers["oracle"] = FailingAnswerer()
    with httpx.stream("POST", f"{url}/ask", json={"question": "Hi", "answerer": "oracle", "stream": True}) as response:
        [(first, piece), (event, error)] = events(response)
    assert (first, piece) == ("token", {"text": "The"})
    assert event == "error" and error["type"] == "InputError" and "oracle is out" in error["message"]


def test_an_unknown_answerer_is_refused_before_any_stream(url):
    response = httpx.post(f"{url}/ask", json={"question": "Hi", "answerer": "nobody", "stream": True}, timeout=60)
    assert response.status_code == 400 and "nobody" in response.text
    assert response.headers["content-type"].startswith("application/json")


def test_a_client_that_disconnects_stops_the_generation(session, url):
    long = ClosedBookAnswerer(session, GenerationConfig(max_new_tokens=500, min_new_tokens=500, stop=()))
    session.answerers["long"] = long
    with httpx.stream("POST", f"{url}/ask", json={"question": QUESTION, "answerer": "long", "stream": True}) as r:
        next(r.iter_lines())  # the first token arrived; then the client goes away
    assert long.finished.wait(120)
    assert long.pieces < 500


def test_check_marks_each_claim(url):
    reply = httpx.post(f"{url}/check", json={"text": "Chad borders Niger. Chad lies in Europe."}, timeout=120)
    assert [c["status"] for c in reply.json()["claims"]] == ["supported", "contradicted"]
    assert httpx.post(f"{url}/check", json={"text": ""}).status_code == 422


# ---------------------------------------------------------------- OpenAI-compatible chat


def test_chat_streams_token_by_token_and_ends_with_usage(url):
    body = {"messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 16}
    whole = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=streamed, timeout=120) as response:
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    contents = [
        c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert len(contents) > 1 and "".join(contents) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_a_remote_model_streams_what_the_local_one_generates(session, url):
    from kgllm.llm.openai_compat import OpenAICompatibleLM

    remote = OpenAICompatibleLM(f"{url}/v1")
    config = GenerationConfig(max_new_tokens=16, stop=("\n",))
    try:
        assert "".join(remote.stream(PROMPT, config)) == session.lm.generate(PROMPT, config)[0][0]
    finally:
        remote.close()


# ---------------------------------------------------------------- LangChain and the CLI


def test_langchain_chat_model_streams_in_an_lcel_chain_with_the_retriever(session):
    pytest.importorskip("langchain_core")
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from kgllm.integrations.langchain import KGLLMChatModel, KGLLMRetriever

    prompt = ChatPromptTemplate.from_messages([("system", "Facts: {evidence}"), ("human", "{question}")])
    retriever = KGLLMRetriever(session=session, max_documents=8)
    chain = (
        {
            "evidence": retriever | (lambda docs: " ".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | KGLLMChatModel(lm=session.lm, max_tokens=32)
        | StrOutputParser()
    )
    question = "Which countries border Chad?"
    pieces = list(chain.stream(question))
    assert len(pieces) > 1 and "".join(pieces) == chain.invoke(question)


def test_kgllm_ask_stream_prints_pieces_then_the_answer(session, monkeypatch):
    from kgllm.cli import app

    monkeypatch.setattr("kgllm.api.connect", lambda *args, **kwargs: session)
    result = CliRunner().invoke(app, ["ask", QUESTION, "--mode", "closed-book", "--stream", "--json"])
    assert result.exit_code == 0, result.output
    *pieces, final = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(pieces) > 1 and "".join(p["text"] for p in pieces) == final["answer"]
    plain = CliRunner().invoke(app, ["ask", QUESTION, "--mode", "closed-book", "--stream"])
    assert plain.exit_code == 0 and final["answer"].strip() in plain.stdout
