"""An LCEL chain over kgllm: the retriever's evidence, then an answer written from numbered graph facts.

    python examples/langchain_chain.py "Which subregion are the neighbours of Chad located in?"

The answer comes from kgllm's generate mode: the facts retrieved for the question are numbered in
the prompt and the model (kgllm's own reader, trained on the demo graph on first use) names each
answer citing the fact that holds it, so every name it prints is backed by a fact shown beside it.
"""

import sys

from langchain_core.runnables import RunnableLambda

import kgllm
from kgllm.integrations.langchain import KGLLMRetriever


def cited_answer(answer: kgllm.Answer) -> str:
    """The answer line and the facts it cites, one per line."""
    facts = {fact["n"]: fact["fact"] for fact in answer.metadata.get("facts", [])}
    cited = [f"  [{n}] {facts[n]}" for n in answer.metadata.get("citations", [])]
    return "\n".join([answer.text, *cited])


def build_chain(session: kgllm.Session):
    """question -> generate mode (retrieve, inject, cite) -> the answer with its cited facts."""
    return RunnableLambda(lambda question: session.ask(question, mode="generate")) | RunnableLambda(cited_answer)


if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else "Which subregion are the neighbours of Chad located in?"
    session = kgllm.connect()
    for doc in KGLLMRetriever(session=session, max_documents=3).invoke(question):
        print("evidence:", doc.page_content, f"(score {doc.metadata['score']:.2f})")
    print("model says:", end=" ", flush=True)
    for piece in build_chain(session).stream(question):  # token by token, as the model writes
        print(piece, end="", flush=True)
    print()
