# kgllm: the HTTP API, the web page and the OpenAI-compatible model endpoint on port 8000.
# docker compose up (see docker-compose.yml) runs it beside Neo4j.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    KGLLM_CACHE_DIR=/var/cache/kgllm

WORKDIR /app

# Layers from the least to the most often changed, so a code change rebuilds only the last ones.
# torch first, the CPU build from PyTorch's CPU wheel index: from the default index pip pulls a
# CUDA build of several GB. The package's own torch range admits this version, so it stays.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# the runtime dependencies, read from pyproject.toml alone: reinstalled only when that file changes
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# the package itself, its dependencies already in place
COPY README.md LICENSE ./
COPY kgllm ./kgllm
COPY graph ./graph
RUN pip install . --no-deps

# the model trained on first start and the retrieval indexes live in the cache (a volume in compose)
RUN useradd --create-home --uid 10001 kgllm && mkdir -p /var/cache/kgllm && chown kgllm /var/cache/kgllm
USER 10001

EXPOSE 8000
# Waits for the store, loads the demo graph when the store is empty, then serves.
CMD ["kgllm", "serve", "--host", "0.0.0.0", "--port", "8000", "--wait", "120", "--load-if-empty", "graph/demo/countries.ttl"]
