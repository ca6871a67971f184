"""kgllm: language models that answer from a knowledge graph, with the evidence."""

from kgllm.api import Session, ask, connect
from kgllm.exceptions import KGLLMError
from kgllm.settings import Settings
from kgllm.types import Answer, Entity, Evidence, Path, Prediction, Triple

__version__ = "0.1.0"

__all__ = ["Answer", "Entity", "Evidence", "KGLLMError", "Path", "Prediction", "Session", "Settings", "Triple",
           "ask", "connect", "__version__"]
