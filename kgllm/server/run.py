"""Run an app with uvicorn: in the foreground (``kgllm serve``) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import sys
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from kgllm.exceptions import ConfigurationError, KGLLMError
from kgllm.testing import free_port

log = logging.getLogger(__name__)

KEEP_ALIVE_SECONDS = 30


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool = False) -> None:
    """Refuse to listen beyond loopback without an API key, unless ``insecure`` (then warn).

    Example: ``check_exposure("0.0.0.0", api_key=None)`` raises ``ConfigurationError``.
    """
    if is_loopback(host) or api_key:
        return
    if not insecure:
        raise ConfigurationError(
            f"refusing to serve on {host} without an API key: anyone who reaches this address could use the "
            "API. Set KGLLM_API_KEY, listen on 127.0.0.1, or pass --insecure if something in front of the "
            "server (a firewall, a private network) already restricts who reaches it."
        )
    log.warning(
        "SERVING ON %s WITHOUT AN API KEY (--insecure): every client that reaches this address can use the whole API",
        host,
    )


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (this process is the server's alone)."""
    # The event loop's thread shares the GIL with the worker threads; a shorter switch interval
    # (5 ms by default) lets it answer /health and static files sooner while they compute.
    sys.setswitchinterval(0.001)
    # Idle connections are kept longer than clients keep theirs (httpx: 5 s, uvicorn's default too):
    # with equal timeouts a busy client reuses a connection the server is closing, and the request fails.
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_SECONDS)


@contextlib.contextmanager
def running_server(
    app: FastAPI, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` from a background thread; yields its base URL and stops it on exit."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise KGLLMError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
