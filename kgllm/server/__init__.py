"""The HTTP server behind ``kgllm serve``: the graph API, the OpenAI-compatible model endpoints and the web page.

Example::

    session = kgllm.connect(use_model=False)
    with running_server(create_app(session)) as url:   # uvicorn in a thread on a free loopback port
        httpx.post(f"{url}/ask", json={"question": "Which countries border Chad?"}).json()
"""

from kgllm.server.app import create_app
from kgllm.server.run import running_server, serve

__all__ = ["create_app", "running_server", "serve"]
