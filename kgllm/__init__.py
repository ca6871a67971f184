"""kgllm: language models that answer from a knowledge graph, with the evidence."""

from kgllm.api import ask, connect
from kgllm.exceptions import KGLLMError
from kgllm.session import Session
from kgllm.settings import Settings
from kgllm.types import Answer, Entity, Evidence, GraphPath, Prediction, Triple

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Entity",
    "Evidence",
    "GraphPath",
    "KGLLMError",
    "Prediction",
    "Session",
    "Settings",
    "Triple",
    "__version__",
    "ask",
    "connect",
]
