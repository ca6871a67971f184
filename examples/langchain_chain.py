"""An LCEL chain: kgllm retrieves the evidence paths, a chat model answers from them.

    python examples/langchain_chain.py "Which subregion are the neighbours of Chad located in?"

The chat model here is kgllm's own (the small model trained on the demo graph); any LangChain
chat model (e.g. one on an OpenAI-compatible server) drops in the same way.
"""

import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

import kgllm
from kgllm.integrations.langchain import KGLLMChatModel, KGLLMRetriever

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Facts: {evidence}"),
        ("human", "{question}"),
    ]
)


def format_evidence(documents) -> str:
    return " ".join(doc.page_content for doc in documents)


def build_chain(session: kgllm.Session):
    """question -> {evidence from the graph, question} -> prompt -> chat model -> text."""
    retriever = KGLLMRetriever(session=session, max_documents=8)
    return (
        {"evidence": retriever | format_evidence, "question": RunnablePassthrough()}
        | PROMPT
        | KGLLMChatModel(lm=session.lm)
        | StrOutputParser()
    )


if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else "Which subregion are the neighbours of Chad located in?"
    session = kgllm.connect()
    for doc in KGLLMRetriever(session=session, max_documents=3).invoke(question):
        print("evidence:", doc.page_content, f"(score {doc.metadata['score']:.2f})")
    print("model says:", end=" ", flush=True)
    for piece in build_chain(session).stream(question):  # token by token, as the model writes
        print(piece, end="", flush=True)
    print()
