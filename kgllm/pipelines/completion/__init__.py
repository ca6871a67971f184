"""KG completion: structural KGE models, re-rankers fused on a valid split, and resumable batch jobs.

A new KGE model is one :class:`~kgllm.pipelines.completion.kge.KGEModel` subclass and one
registration in :data:`~kgllm.pipelines.completion.kge.kge_models` (or the ``kgllm.kge_models``
entry-point group).
"""
