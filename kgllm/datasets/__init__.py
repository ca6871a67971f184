"""Readers of the public data sets kgllm trains and benchmarks on (WebNLG, PathQuestion)."""
