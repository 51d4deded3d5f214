"""The FastAPI app: routes, API key, body limit, OpenAI-shaped errors, SSE, cancellation on disconnect."""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import sys
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from converters.errors import BadInputError
from gptoss_cli.engine.backend import ContextFull
from gptoss_cli.engine.batch import BatchEngine
from gptoss_cli.engine.jobs import QueueFull, ShuttingDown
from gptoss_cli.engine.constrain import Controller
from gptoss_cli.serve import chat, responses
from gptoss_cli.serve.api_error import APIError
from gptoss_cli.serve.generation import Generation, now
from gptoss_cli.serve.plan import Defaults, Plan

DISCONNECT_POLL_S = 0.05


@dataclass
class ServeConfig:
    """What the app needs besides the engine."""

    defaults: Defaults
    api_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    log_requests: bool = False


class KeyCheck:
    """Every /v1 request must carry `Authorization: Bearer KEY` (compared in constant time). A plain ASGI
    middleware: Starlette's BaseHTTPMiddleware would pass every streamed chunk through an extra task."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        token = given[7:] if given[:7].lower() == b"bearer " else b""
        if hmac.compare_digest(token, self.key):
            return await self.app(scope, receive, send)
        msg = "Incorrect API key provided" if token else "Missing API key: send Authorization: Bearer KEY"
        await JSONResponse(APIError(401, msg, code="invalid_api_key").body(), status_code=401)(scope, receive, send)


def create_app(engine: BatchEngine, config: ServeConfig) -> FastAPI:
    """The ASGI app serving one loaded model."""
    app = FastAPI(title="gptoss", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.config = engine, config

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}: {exc}").body(), status_code=500)

    if config.api_key:
        app.add_middleware(KeyCheck, key=config.api_key)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **engine.health()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": config.defaults.model, "object": "model", "created": now(),
                                            "owned_by": "gptoss"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        plan = chat.parse(await _json_body(request, config), config.defaults)
        gen = await _start(engine, plan, config)
        if plan.stream:
            await _placed(request, gen)
            return _sse(request, gen, chat.chunks(plan, gen), done_marker=True)
        return JSONResponse(chat.completion(plan, await _finish(request, gen)))

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        plan = responses.parse(await _json_body(request, config), config.defaults)
        gen = await _start(engine, plan, config)
        if plan.stream:
            await _placed(request, gen)
            return _sse(request, gen, responses.events(plan, gen), done_marker=False)
        return JSONResponse(responses.response(plan, await _finish(request, gen)))

    return app


async def _json_body(request: Request, config: ServeConfig) -> dict:
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > config.max_body_bytes:
        raise APIError(413, f"request body over {config.max_body_bytes} bytes", code="request_too_large")
    raw = await request.body()
    if len(raw) > config.max_body_bytes:
        raise APIError(413, f"request body over {config.max_body_bytes} bytes", code="request_too_large")
    if config.log_requests:
        print(f"request {request.url.path}: {raw.decode('utf-8', 'replace')}", file=sys.stderr, flush=True)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    return body


async def _start(engine: BatchEngine, plan: Plan, config: ServeConfig) -> Generation:
    date = config.defaults.date or datetime.date.today().isoformat()
    backend = engine.backend   # tokenized off the event loop: a long prompt must not stall other streams
    prompt = await asyncio.to_thread(plan.tokens, date, backend.tokenize, backend.tokenize_plain)
    control = None
    if plan.constraint.active:
        control = Controller(plan.constraint, engine.tokenize, engine.backend.token_bytes)
    gen = Generation(engine, prompt, max_tokens=plan.max_tokens or engine.n_ctx_seq, temperature=plan.temperature,
                     top_p=plan.top_p, seed=plan.seed if plan.seed is not None else engine.backend.opts.seed,
                     control=control, stop=plan.stop)
    try:
        gen.start()
    except ContextFull as exc:
        raise APIError(400, exc.message(), param="messages", code="context_length_exceeded") from None
    except QueueFull as exc:
        raise APIError(429, exc.message(), code="server_busy") from None
    except ShuttingDown as exc:
        raise APIError(503, exc.message(), code="server_shutdown") from None
    except BadInputError as exc:
        raise APIError(400, exc.message()) from None
    return gen


async def _finish(request: Request, gen: Generation):
    """Wait for the end; a client that goes away cancels the job."""
    async def drain() -> None:
        async for _ in gen.events():
            pass

    await _watch(request, gen, drain())
    _raise_if_failed(gen.out)
    return gen.out


async def _placed(request: Request, gen: Generation) -> None:
    """Wait until a streamed request's job has a slot, so that one refused while it waited (shutdown, a lost
    worker) is answered with an HTTP error, as a request that is not streamed is."""
    if not await _watch(request, gen, gen.placed()):
        _raise_if_failed(gen.out)


async def _watch(request: Request, gen: Generation, work):
    """Await work, cancelling the job if the client goes away meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                gen.cancel()
    finally:
        if not task.done():
            gen.cancel()
            task.cancel()
    return task.result()


def _raise_if_failed(out) -> None:
    if out.finish_reason == "error":
        raise APIError(500, f"generation failed: {out.error}")
    if out.finish_reason in ("shutdown", "cancelled"):
        raise APIError(503, "the server is shutting down", code="server_shutdown")


def _sse(request: Request, gen: Generation, items: AsyncIterator[dict[str, Any]], *, done_marker: bool) -> Response:
    async def body() -> AsyncIterator[bytes]:
        failed = False
        try:
            async for item in items:
                failed = failed or "error" in item and "type" not in item   # chat's error chunk ends it
                name = item.get("type") if not done_marker else None
                head = f"event: {name}\n" if name else ""
                yield f"{head}data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()
            if done_marker and not failed:
                yield b"data: [DONE]\n\n"
        finally:
            gen.cancel()   # no-op once finished; frees the slot when the client went away

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
