"""POST /v1/chat/completions: OpenAI messages -> harmony, and the answer back as a completion or chunks.

Reasoning goes out as `reasoning_content` and comes back on assistant messages (also as `reasoning`),
so a client that returns it keeps the chain of thought across tool calls, as harmony requires.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import call_message, result_message
from gptoss_cli.serve import plan as P
from gptoss_cli.serve.api_error import APIError, bad
from gptoss_cli.serve.generation import FAILED, Generation, Outcome, now


def parse(body: dict, defaults: P.Defaults) -> P.Plan:
    """A chat-completions body as a Plan (400 on any bad field)."""
    plan = P.Plan(model=P.get(body, "model", str, defaults.model), stream=bool(P.get(body, "stream", bool, False)))
    opts = P.get(body, "stream_options", dict, {})
    plan.include_usage = bool(opts.get("include_usage"))
    if P.get(body, "n", int, 1) != 1:
        raise bad("n", "only n=1 is supported")
    P.sampling(plan, body, defaults, ("max_completion_tokens", "max_tokens"))
    plan.effort = P.effort(body.get("reasoning_effort"), "reasoning_effort", defaults.effort)
    messages = P.get(body, "messages", list)
    if not messages:
        raise bad("messages", "at least one message is required", code="missing_required_parameter")
    _messages(plan, messages)
    plan.tools = P.tool_specs(body.get("tools"), nested=True)
    schema = P.json_schema(body.get("response_format"), "response_format")
    plan.constraint = P.constraint(plan, body.get("tool_choice"), schema, body.get("thinking_budget"),
                                   nested=True, default_budget=defaults.thinking_budget)
    return plan


def _messages(plan: P.Plan, messages: list) -> None:
    names: dict[str, str] = {}   # tool_call_id -> function name
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(where, "expected an object")
        role = m.get("role")
        text = P.text_of(m.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            plan.instructions.append(text)
        elif role == "user":
            plan.messages.append(Message("user", text))
        elif role == "assistant":
            _assistant(plan, m, text, names, where)
        elif role == "tool":
            name = m.get("name")
            if name not in (None, ""):
                P.function_name(name, f"{where}.name")
            else:
                name = names.get(P.call_id(m.get("tool_call_id"), f"{where}.tool_call_id") or "")
            if name is None:
                raise bad(f"{where}.tool_call_id", "does not match a tool call of an earlier assistant message")
            plan.messages.append(result_message(name, text))
        else:
            raise bad(f"{where}.role", "must be system, developer, user, assistant or tool")


def _assistant(plan: P.Plan, m: dict, text: str, names: dict[str, str], where: str) -> None:
    reasoning = m.get("reasoning_content") or m.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise bad(f"{where}.reasoning_content", "expected a string")
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad(f"{where}.tool_calls", "expected an array")
    if reasoning:
        plan.messages.append(Message("assistant", reasoning, "analysis"))
    if text:   # text next to a call is a preamble, which harmony keeps on the commentary channel
        plan.messages.append(Message("assistant", text, "commentary" if calls else "final"))
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or fn.get("name") is None:
            raise bad(f"{where}.tool_calls[{j}].function", "needs a name and arguments")
        P.function_name(fn["name"], f"{where}.tool_calls[{j}].function.name")
        args = fn.get("arguments") or "{}"
        if not isinstance(args, str):
            args = json.dumps(args)
        names[P.call_id(call.get("id"), f"{where}.tool_calls[{j}].id") or f"#{j}"] = fn["name"]
        plan.messages.append(call_message(fn["name"], args))


# --- answers ------------------------------------------------------------------------------------------

def _usage(out: Outcome) -> dict[str, Any]:
    return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": out.reused_tokens},
            "completion_tokens_details": {"reasoning_tokens": out.reasoning_tokens}}


def _tool_calls(out: Outcome, call_id: str) -> list[dict] | None:
    if out.call is None:
        return None
    return [{"id": call_id, "type": "function",
             "function": {"name": out.call.name, "arguments": out.call.arguments}}]


def completion(plan: P.Plan, out: Outcome) -> dict[str, Any]:
    """The non-streamed response."""
    content = out.content if out.call is None else (out.content or None)
    message: dict[str, Any] = {"role": "assistant", "content": content, "reasoning_content": out.reasoning or None}
    calls = _tool_calls(out, "call_" + uuid.uuid4().hex[:24])
    if calls:
        message["tool_calls"] = calls
    return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": now(),
            "model": plan.model, "system_fingerprint": "gptoss",
            "choices": [{"index": 0, "message": message, "finish_reason": out.finish_reason, "logprobs": None}],
            "usage": _usage(out)}


async def chunks(plan: P.Plan, gen: Generation) -> AsyncIterator[dict[str, Any]]:
    """The streamed response: a role chunk, reasoning/content deltas, the call (its name, then its arguments
    as they are generated), a finish chunk, usage; a generation that fails ends with an error chunk
    (`{"error": {...}}`, as OpenAI sends it) instead."""
    base = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion.chunk", "created": now(),
            "model": plan.model, "system_fingerprint": "gptoss"}
    call_id = ""

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def call_head(name: str) -> dict:
        nonlocal call_id
        call_id = "call_" + uuid.uuid4().hex[:24]
        return chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                      "function": {"name": name, "arguments": ""}}]})

    yield chunk({"role": "assistant", "content": ""})
    async for event in gen.events():
        if event.kind == "reasoning":
            yield chunk({"reasoning_content": event.text})
        elif event.kind == "content":
            yield chunk({"content": event.text})
        elif event.kind == "call":
            if not call_id:
                yield call_head(event.name)
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": event.text}}]})
        elif event.reason in FAILED:
            yield error_chunk(gen.out)
        else:
            if gen.out.call is not None and not call_id:   # a call whose arguments were empty
                yield call_head(gen.out.call.name)
            yield chunk({}, event.reason)
            if plan.include_usage:
                yield {**base, "choices": [], "usage": _usage(gen.out)}


def error_chunk(out: Outcome) -> dict[str, Any]:
    """The chunk that ends a stream whose generation failed: OpenAI's error object."""
    if out.finish_reason == "error":
        return APIError(500, f"generation failed: {out.error}").body()
    return APIError(503, "the server is shutting down", code="server_shutdown").body()
