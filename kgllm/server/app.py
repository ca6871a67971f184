"""The FastAPI app: one session shared by every request, API-key check, bounded bodies, JSON errors.

Each group of endpoints is a router in its own module, listed in ``API_ROUTERS``; a new group
(KG completion, say) is one more module and one more entry there. How requests share the
session (worker threads, locks, background jobs) is in ``state.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kgllm.api import Session
from kgllm.exceptions import ConfigurationError, EntityNotFoundError, InputError, KGLLMError, StoreUnavailableError
from kgllm.server import complete, graph, openai, review, sparql
from kgllm.server.limits import MAX_BODY_BYTES, REQUEST_SECONDS
from kgllm.server.state import ServerState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
API_ROUTERS = (
    graph.router,
    complete.router,
    review.router,
    openai.router,
    sparql.router,
)  # behind the API key when one is set
OPEN_ROUTERS = (graph.health_router,)  # for container health checks
PUBLIC_PATHS = ("/", "/health", "/docs", "/openapi.json", "/static/")  # never behind the API key


class ErrorDetail(BaseModel):
    message: str
    type: str


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"message", "type"}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad input (a value the schema allows but the server cannot use)"),
        (401, "Missing or wrong API key (when the server has one)"),
        (404, "Not found"),
        (413, "Request body too large"),
        (422, "The request does not match the schema"),
        (503, "The store does not answer, no model is loaded, or the server is too busy (Retry-After)"),
    )
}
_BEARER = HTTPBearer(auto_error=False, description="The server's API key (KGLLM_API_KEY), when it has one.")


def create_app(
    session: Session,
    api_key: str | None = None,
    completion_config=None,
    *,
    time_budget: float = REQUEST_SECONDS,
    workers: int | None = None,
) -> FastAPI:
    """The HTTP app over ``session``; with ``api_key``, API calls need ``Authorization: Bearer <key>``.

    ``completion_config`` (a ``CompletionConfig``) sets how ``/complete`` trains its model;
    ``time_budget`` is the seconds one request may work, from its arrival (a question whose search
    runs longer is answered with what it says was cut); ``workers`` the threads that do the work.

    Example::

        app = create_app(kgllm.connect(use_model=False), api_key="s3cret", time_budget=5)
    """
    from kgllm import __version__

    state = ServerState(session, completion_config, time_budget=time_budget, workers=workers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="kgllm",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        description="Answers with evidence from a knowledge graph, graph browsing, and the "
        "project's language model behind OpenAI-compatible endpoints.",
    )
    app.state.kgllm = state
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    _add_error_handlers(app)
    protected = [Depends(_bearer_key(api_key))] if api_key else []
    for router in API_ROUTERS:
        app.include_router(router, dependencies=protected, responses=ERROR_RESPONSES)
    for router in OPEN_ROUTERS:
        app.include_router(router, responses={503: ERROR_RESPONSES[503]})
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:  # Swagger UI from the package's own copy, not a CDN
        assert app.openapi_url is not None  # FastAPI's default, left on
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="kgllm API",
            swagger_favicon_url="data:,",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
        )

    return app


def _bearer_key(expected: str):
    def check(credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def error_response(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    """Every error as ``{"error": {"message", "type"}}``, the shape OpenAI clients read too."""
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


_STATUS_OF = ((EntityNotFoundError, 404), (StoreUnavailableError, 503), (InputError, 400), (ConfigurationError, 400))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "http_error", getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors())
        return error_response(422, problems, "invalid_request")

    @app.exception_handler(KGLLMError)
    async def kgllm_error(request: Request, exc: KGLLMError) -> JSONResponse:
        status = next((code for cls, code in _STATUS_OF if isinstance(exc, cls)), 500)
        if status == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(status, " ".join(str(exc).split()), type(exc).__name__)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(
            500, f"internal error ({type(exc).__name__}); the server log has the details", "internal_error"
        )


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets 413, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(413, f"request body larger than {self.max_bytes} bytes", "request_too_large")
            return await response(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # FastAPI re-raises an HTTPException met while reading the body
                raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)
