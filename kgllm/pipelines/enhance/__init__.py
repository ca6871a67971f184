"""The KG-enhanced LLM pipeline: graph facts in front of the model, and what it says checked against the graph."""
