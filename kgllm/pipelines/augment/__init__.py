"""Augmenting the graph: completing it with predicted facts and building it from documents."""
