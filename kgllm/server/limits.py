"""Bounds on what one request may send and receive."""

MAX_BODY_BYTES = 64 * 1024  # any request body
MAX_QUESTION_CHARS = 1000
MAX_RESULTS = 200  # search hits, neighbours and evidence paths in one response
MAX_PROMPT_CHARS = 16_000  # one prompt or chat message for the model endpoints
MAX_PROMPTS = 32  # prompts in one /v1/completions request
MAX_NEW_TOKENS = 512
