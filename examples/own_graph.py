"""Answer questions over your own triples: a TSV file becomes an in-memory graph.

python examples/own_graph.py
"""

import tempfile
from pathlib import Path

import kgllm

TRIPLES = """\
ada_lovelace\tcollaboratedWith\tcharles_babbage
charles_babbage\tdesigned\tanalytical_engine
ada_lovelace\twroteAbout\tanalytical_engine
analytical_engine\tinfluenced\tmodern_computer
"""

with tempfile.TemporaryDirectory() as folder:
    graph = Path(folder) / "computing.tsv"
    graph.write_text(TRIPLES)
    # use_model=False answers with the graph and the sentence encoder only; drop it to train a
    # small model on this graph first (a few minutes on a CPU).
    session = kgllm.connect(graph, use_model=False)
    for question in (
        "Who collaborated with Ada Lovelace?",
        "What did Charles Babbage design?",
        "What did the machine Charles Babbage designed influence?",
    ):
        answer = session.ask(question)
        print(f"{question}\n  -> {answer.text} (confidence {answer.confidence:.2f})")
