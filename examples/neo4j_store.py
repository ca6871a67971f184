"""Load the demo graph into Neo4j (or any Bolt server) and ask it a question.

    KGLLM_NEO4J_URI=bolt://localhost:7687 KGLLM_NEO4J_USER=neo4j KGLLM_NEO4J_PASSWORD=secret \\
        python examples/neo4j_store.py
"""

import kgllm
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.loaders import load
from kgllm.graph.neo4j_store import Neo4jStore

settings = kgllm.Settings()
store = Neo4jStore.from_settings(settings)
print(f"{load(store, demo_graph_path())} new triples written")  # idempotent: 0 the second time
session = kgllm.connect(store, use_model=False, settings=settings)
print(session.ask("Which countries border Kenya?").text)
