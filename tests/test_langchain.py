"""LangChain: the retriever's documents carry the evidence, the chat model runs the core model,
and the example LCEL chain joins them."""

import importlib.util
from pathlib import Path

import pytest

import kgllm
from kgllm.exceptions import InputError
from kgllm.llm.base import GenerationConfig
from kgllm.llm.openai_compat import chat_prompt
from kgllm.pipelines.enhance import parse_answer

pytest.importorskip("langchain_core", reason='needs langchain-core: pip install "kgllm[langchain]"')
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from kgllm.integrations.langchain import KGLLMChatModel, KGLLMRetriever

pytestmark = pytest.mark.slow

QUESTION = "Which subregion are the neighbours of Chad located in?"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "langchain_chain.py"


@pytest.fixture(scope="module")
def session(encoder):
    with kgllm.connect(encoder=encoder) as session:
        yield session


def test_retriever_documents_carry_triples_paths_and_scores(session):
    documents = KGLLMRetriever(session=session).invoke(QUESTION)
    assert len(documents) == 7
    niger = next(d for d in documents if d.metadata["path"][1] == "Niger")
    assert niger.metadata["triples"] == [["Niger", "neighbor of", "Chad"], ["Niger", "located in", "Western Africa"]]
    assert niger.metadata["path"] == ["Chad", "Niger", "Western Africa"]
    assert niger.metadata["triple_ids"][0][0] == "https://kgllm.dev/countries/niger"
    assert niger.page_content == "Niger neighbor of Chad; Niger located in Western Africa."
    assert niger.metadata["kind"] == "path" and niger.metadata["score"] > 0
    assert niger.metadata["answer"] == "Middle Africa, Northern Africa and Western Africa."
    assert len(KGLLMRetriever(session=session, max_documents=2).invoke(QUESTION)) == 2


def test_retriever_gives_context_facts_when_the_graph_has_no_answer(session):
    documents = KGLLMRetriever(session=session).invoke("What is the capital of France?")
    assert documents and all(d.metadata["kind"] == "context" and d.metadata["score"] is None for d in documents)
    assert all(len(d.metadata["triples"]) == 1 for d in documents)


def test_chat_model_replies_as_the_core_model_continues_the_chat(session):
    chat = KGLLMChatModel(lm=session.lm, max_tokens=16)
    reply = chat.invoke([SystemMessage("Answer briefly."), HumanMessage("Where is Kenya located?")])
    prompt, stops = chat_prompt([("system", "Answer briefly."), ("user", "Where is Kenya located?")])
    assert prompt == "Answer briefly.\nQuestion: Where is Kenya located?\nAnswer:"
    expected = session.lm.generate(prompt, GenerationConfig(max_new_tokens=16, stop=stops))[0][0].strip()
    assert isinstance(reply, AIMessage) and reply.content == expected and expected
    with pytest.raises(InputError, match="tool"):
        chat.invoke([ToolMessage("42", tool_call_id="t1"), HumanMessage("and?")])


def test_the_example_lcel_chain_prints_an_answer_grounded_in_cited_facts(session):
    spec = importlib.util.spec_from_file_location("langchain_chain", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    said = example.build_chain(session).invoke(QUESTION)
    answer_line, *cited = said.splitlines()
    if not cited:  # the reader's training is budgeted in minutes, so on a slow machine it may refuse instead
        assert answer_line.startswith("I cannot answer this from the graph"), said
        return
    facts = " ".join(cited)
    for item in parse_answer(answer_line).items:  # every name the model wrote is in a fact it cites
        assert item.citations and item.name in facts
