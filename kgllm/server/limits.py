"""Bounds on what one request may send and receive."""

MAX_BODY_BYTES = 64 * 1024  # any request body
MAX_QUESTION_CHARS = 1000
MAX_RESULTS = 200  # search hits, neighbours and evidence paths in one response
MAX_PROMPT_CHARS = 16_000  # one prompt or chat message for the model endpoints
MAX_PROMPTS = 32  # prompts in one /v1/completions request
MAX_NEW_TOKENS = 512
REQUEST_SECONDS = 10.0  # time budget of one request's work, counted from its arrival (queueing included)
HEALTH_REFRESH_SECONDS = 5.0  # /health recounts the store at most this often, in the background
HEALTH_STALE_SECONDS = 60.0  # /health fails when the store has not answered for this long
ANSWER_CACHE_SECONDS = 10.0  # how long a complete /ask answer is reused for the same request
ANSWER_CACHE_SIZE = 1024  # answers kept
MAX_JOBS_KEPT = 100  # background jobs remembered for polling
SWITCH_INTERVAL = 0.001  # seconds a thread keeps the interpreter while others wait (Python's: 0.005)
