"""The FastAPI app: routes, OpenAI-shaped errors, SSE, cancellation on disconnect (edge.py: who may ask, bodies)."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from converters.errors import BadInputError
from gptoss_cli.engine.backend import ContextFull
from gptoss_cli.engine.batch import BatchEngine
from gptoss_cli.engine.constrain import Controller
from gptoss_cli.engine.jobs import QueueFull, ShuttingDown
from gptoss_cli.serve import chat, responses
from gptoss_cli.serve.api_error import APIError
from gptoss_cli.serve.edge import Guard, read_json
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
    loopback: bool = True                    # bound to loopback: only loopback Host headers are answered
    allow_origins: tuple[str, ...] = ()      # browser origins allowed in (normalized; "*": any)


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

    app.add_middleware(Guard, check_host=config.loopback, origins=config.allow_origins, key=config.api_key)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **engine.health()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": config.defaults.model, "object": "model", "created": now(),
                                            "owned_by": "gptoss"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        plan = chat.parse(await read_json(request, config.max_body_bytes, config.log_requests), config.defaults)
        gen = await _start(engine, plan, config)
        if plan.stream:
            await _placed(request, gen)
            return _sse(request, gen, chat.chunks(plan, gen), done_marker=True)
        return JSONResponse(chat.completion(plan, await _finish(request, gen)))

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        plan = responses.parse(await read_json(request, config.max_body_bytes, config.log_requests), config.defaults)
        gen = await _start(engine, plan, config)
        if plan.stream:
            await _placed(request, gen)
            return _sse(request, gen, responses.events(plan, gen), done_marker=False)
        return JSONResponse(responses.response(plan, await _finish(request, gen)))

    return app


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
