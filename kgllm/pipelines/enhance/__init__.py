"""The KG-enhanced pipeline: retrieved facts injected into the prompt, answers written by a model with
citations, and what a model says checked against the graph.

- :mod:`.retrieval`: linking, FAISS fact search, k-hop expansion and personalized PageRank, fused by
  reciprocal rank fusion (with question rewrites when asked: RAG-Fusion);
- :mod:`.prompt`: templates with declared inputs, numbered facts, ``[n]`` citations parsed back;
- :mod:`.answerer`: :class:`GenerationAnswerer` (``ask(mode="generate")``);
- :mod:`.reading`: training kgllm's own small model to read the facts and cite them;
- :mod:`.claims`: each claim of a text marked supported, contradicted or not in the graph.
"""

from kgllm.pipelines.enhance.answerer import GenerationAnswerer, PreparedPrompt
from kgllm.pipelines.enhance.prompt import (
    INSTRUCTED_TEMPLATE,
    NO_ANSWER,
    READER_TEMPLATE,
    AnswerItem,
    ParsedAnswer,
    PromptInputError,
    PromptTemplate,
    number_facts,
    parse_answer,
)
from kgllm.pipelines.enhance.retrieval import (
    FusionConfig,
    FusionRetriever,
    RankedFact,
    Retrieved,
    reciprocal_rank_fusion,
)

__all__ = [
    "INSTRUCTED_TEMPLATE",
    "NO_ANSWER",
    "READER_TEMPLATE",
    "AnswerItem",
    "FusionConfig",
    "FusionRetriever",
    "GenerationAnswerer",
    "ParsedAnswer",
    "PreparedPrompt",
    "PromptInputError",
    "PromptTemplate",
    "RankedFact",
    "Retrieved",
    "number_facts",
    "parse_answer",
    "reciprocal_rank_fusion",
]
