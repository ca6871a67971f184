"""Benchmark runners behind ``kgllm bench``; each returns rows and prints a table."""
