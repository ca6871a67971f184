# kgllm: the HTTP API, the web page and the OpenAI-compatible model endpoint on port 8000.
# docker compose up (see docker-compose.yml) runs it beside Neo4j.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    KGLLM_CACHE_DIR=/var/cache/kgllm

WORKDIR /app

# torch first, the CPU build from PyTorch's CPU wheel index: from the default index pip pulls a
# CUDA build of several GB. The package's own torch range admits this version, so it stays.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY kgllm ./kgllm
COPY graph ./graph
RUN pip install .

# the model trained on first start and the retrieval indexes live in the cache (a volume in compose)
RUN useradd --create-home kgllm && mkdir -p /var/cache/kgllm && chown kgllm /var/cache/kgllm
USER kgllm

EXPOSE 8000
# Waits for the store, loads the demo graph when the store is empty, then serves.
CMD ["kgllm", "serve", "--host", "0.0.0.0", "--port", "8000", "--wait", "120", "--load-if-empty", "graph/demo/countries.ttl"]
