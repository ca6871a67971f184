"""The three pipelines around the core LLM module, a room each.

- ``synergize``: KG + LLM reasoning (KGQA): relation-path planning and walks.
- ``completion``: LLM-augmented KG completion (KGE models, re-rankers, batch jobs).
- ``construction``: documents to triples (extraction, resolution, provenance) and back (KG-to-text).

Every question-answering pipeline implements :class:`kgllm.pipelines.base.Answerer`.
"""
