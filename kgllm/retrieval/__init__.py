"""The shared retriever: sentence encoder, FAISS indexes, entity linking and subgraph expansion."""

from kgllm.retrieval.encoder import Encoder, SentenceTransformerEncoder, encoder_from_settings, encoders
from kgllm.retrieval.index import VectorIndex
from kgllm.retrieval.linking import EntityLinker, LinkedEntity
from kgllm.retrieval.retriever import KGRetriever, RefreshStats

__all__ = [
    "Encoder",
    "EntityLinker",
    "KGRetriever",
    "LinkedEntity",
    "RefreshStats",
    "SentenceTransformerEncoder",
    "VectorIndex",
    "encoder_from_settings",
    "encoders",
]
