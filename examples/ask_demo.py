"""Ask the bundled geography graph a question and print the evidence paths.

python examples/ask_demo.py "Which subregion are the neighbours of Chad located in?"
"""

import sys

import kgllm

question = sys.argv[1] if len(sys.argv) > 1 else "Which countries border Chad?"
answer = kgllm.ask(question)
print(answer.text, f"(confidence {answer.confidence:.2f})")
for path in answer.evidence.paths:
    print(
        "  ",
        " | ".join(f"{answer.label(t.head)} {answer.label(t.relation)} {answer.label(t.tail)}" for t in path.triples),
    )
