"""KG + LLM reasoning: answers reached by walking relation paths, ranked by the encoder and the model."""

from kgllm.pipelines.synergize.reasoner import PathReasoner, ReasonerConfig

__all__ = ["PathReasoner", "ReasonerConfig"]
