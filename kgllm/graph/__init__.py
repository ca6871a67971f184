"""Graph stores behind one protocol, loaders, and networkx algorithms."""

from kgllm.graph.base import Direction, GraphStore
from kgllm.registry import Registry

stores: Registry[GraphStore] = Registry("graph store", GraphStore)
stores.register("rdflib", "kgllm.graph.rdflib_store:RDFLibStore")
stores.register("neo4j", "kgllm.graph.neo4j_store:Neo4jStore")

__all__ = ["Direction", "GraphStore", "stores"]
