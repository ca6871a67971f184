"""Load the demo graph into Neo4j (or any Bolt server) and ask it a question.

    KGLLM_NEO4J_URI=bolt://localhost:7687 KGLLM_NEO4J_USER=neo4j KGLLM_NEO4J_PASSWORD=secret \\
        python examples/neo4j_store.py

Without a Neo4j server, ArcadeDB speaks Bolt too: ``pip install arcadedb-embedded``, then in Python
``with kgllm.testing.arcadedb_bolt_server("/tmp/arcadedb") as server:`` gives ``server.uri``,
``server.user``, ``server.password`` and ``server.database`` to set as the KGLLM_NEO4J_* variables.
"""

import sys

import kgllm
from kgllm.exceptions import StoreUnavailableError
from kgllm.graph.demo import demo_graph_path
from kgllm.graph.loaders import load
from kgllm.graph.neo4j_store import Neo4jStore

settings = kgllm.Settings()
store = Neo4jStore.from_settings(settings)
try:
    print(f"{load(store, demo_graph_path())} new triples written")  # idempotent: 0 the second time
except StoreUnavailableError:
    sys.exit(
        f"No Bolt server answers at {settings.neo4j_uri}: set KGLLM_NEO4J_URI (and KGLLM_NEO4J_USER, "
        "KGLLM_NEO4J_PASSWORD) to a Neo4j server, or pip install arcadedb-embedded and start one with "
        "kgllm.testing.arcadedb_bolt_server (see this file's docstring)."
    )
session = kgllm.connect(store, use_model=False, settings=settings)
print(session.ask("Which countries border Kenya?").text)
