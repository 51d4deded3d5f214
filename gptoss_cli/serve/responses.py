"""POST /v1/responses: the Responses API's input items -> harmony, output items and its event stream.

Output items: `reasoning` (the analysis, as reasoning_text content), `message` (the final answer) and
`function_call`; `reasoning` and `function_call_output` items are accepted back in `input`.
"""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import call_message, result_message
from gptoss_cli.serve import plan as P
from gptoss_cli.serve.api_error import bad
from gptoss_cli.serve.generation import Generation, Outcome, now


class StreamEnded(Exception):
    """A stream that ends without an answer (shutdown, error)."""

    def __init__(self, reason: str, why: str = "") -> None:
        super().__init__(why or reason)
        self.reason = reason


def parse(body: dict, defaults: P.Defaults) -> P.Plan:
    """A Responses body as a Plan (400 on any bad field)."""
    plan = P.Plan(model=P.get(body, "model", str, defaults.model), stream=bool(P.get(body, "stream", bool, False)))
    if body.get("previous_response_id") is not None:
        raise bad("previous_response_id", "this server keeps no state: send the whole conversation in input")
    P.sampling(plan, body, defaults, ("max_output_tokens",))
    reasoning = P.get(body, "reasoning", dict, {})
    plan.effort = P.effort(reasoning.get("effort"), "reasoning.effort", defaults.effort)
    instructions = P.get(body, "instructions", str)
    if instructions:
        plan.instructions.append(instructions)
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise bad("input", "expected a string or a non-empty array of items", code="missing_required_parameter")
    _items(plan, items)
    plan.tools = P.tool_specs(body.get("tools"), nested=False)
    text = P.get(body, "text", dict, {})
    schema = P.json_schema(text.get("format"), "text.format")
    plan.constraint = P.constraint(plan, body.get("tool_choice"), schema, body.get("thinking_budget"),
                                   nested=False, default_budget=defaults.thinking_budget)
    return plan


def _items(plan: P.Plan, items: list) -> None:
    names: dict[str, str] = {}   # call_id -> function name
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(where, "expected an object")
        kind = item.get("type", "message")
        if kind == "message":
            role, text = item.get("role"), P.text_of(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                plan.instructions.append(text)
            elif role == "user":
                plan.messages.append(Message("user", text))
            elif role == "assistant":
                plan.messages.append(Message("assistant", text, "final"))
            else:
                raise bad(f"{where}.role", "must be system, developer, user or assistant")
        elif kind == "reasoning":
            text = P.text_of(item.get("content") or item.get("summary"), f"{where}.content")
            if text:
                plan.messages.append(Message("assistant", text, "analysis"))
        elif kind == "function_call":
            name, args = item.get("name"), item.get("arguments") or "{}"
            if name is None or not isinstance(args, str):
                raise bad(where, "a function_call needs a name and string arguments")
            P.function_name(name, f"{where}.name")
            ids = P.call_id(item.get("call_id"), f"{where}.call_id"), P.call_id(item.get("id"), f"{where}.id")
            names[ids[0] or ids[1] or ""] = name
            plan.messages.append(call_message(name, args))
        elif kind == "function_call_output":
            name = names.get(P.call_id(item.get("call_id"), f"{where}.call_id"))
            if name is None:
                raise bad(f"{where}.call_id", "does not match an earlier function_call item")
            output = item.get("output")
            plan.messages.append(result_message(name, output if isinstance(output, str)
                                                else P.text_of(output, f"{where}.output")))
        else:
            raise bad(f"{where}.type", f"unsupported item type {kind!r}")


# --- output -------------------------------------------------------------------------------------------

def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _reasoning_item(item_id: str, text: str) -> dict:
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(out: Outcome, status: str = "completed") -> dict:
    return {"type": "function_call", "id": _id("fc"), "call_id": _id("call"), "name": out.call.name,
            "arguments": out.call.arguments, "status": status}


def _envelope(plan: P.Plan, rid: str, created: int, status: str, output: list, out: Outcome | None) -> dict:
    incomplete = out is not None and out.finish_reason == "length"
    usage = None
    if out is not None:
        usage = {"input_tokens": out.prompt_tokens, "input_tokens_details": {"cached_tokens": out.reused_tokens},
                 "output_tokens": out.completion_tokens,
                 "output_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
                 "total_tokens": out.prompt_tokens + out.completion_tokens}
    return {"id": rid, "object": "response", "created_at": created, "model": plan.model,
            "status": "incomplete" if incomplete else status, "output": output, "usage": usage, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": "\n\n".join(plan.instructions) or None, "parallel_tool_calls": False,
            "tool_choice": "auto", "tools": [], "reasoning": {"effort": plan.effort, "summary": None},
            "temperature": plan.temperature, "top_p": plan.top_p, "max_output_tokens": plan.max_tokens,
            "text": {"format": {"type": "text"}}, "metadata": {}}


def response(plan: P.Plan, out: Outcome) -> dict[str, Any]:
    """The non-streamed response object."""
    output = []
    if out.reasoning:
        output.append(_reasoning_item(_id("rs"), out.reasoning))
    if out.content or out.call is None:
        output.append(_message_item(_id("msg"), out.content))
    if out.call is not None:
        output.append(_call_item(out))
    return _envelope(plan, _id("resp"), now(), "completed", output, out)


async def events(plan: P.Plan, gen: Generation) -> AsyncIterator[dict[str, Any]]:
    """The Responses event stream, each event with its type and sequence_number."""
    rid, created, seq = _id("resp"), now(), 0
    output: list[dict] = []
    open_item: dict | None = None   # {"kind", "id", "index", "text"}

    def ev(kind: str, **fields) -> dict:
        nonlocal seq
        seq += 1
        return {"type": kind, "sequence_number": seq - 1, **fields}

    def close() -> list[dict]:
        nonlocal open_item
        it, open_item = open_item, None
        if it is None:
            return []
        if it["kind"] == "reasoning":
            item = _reasoning_item(it["id"], it["text"])
            done = [ev("response.reasoning_text.done", item_id=it["id"], output_index=it["index"],
                       content_index=0, text=it["text"])]
        else:
            item = _message_item(it["id"], it["text"])
            part = item["content"][0]
            done = [ev("response.output_text.done", item_id=it["id"], output_index=it["index"], content_index=0,
                       text=it["text"], logprobs=[]),
                    ev("response.content_part.done", item_id=it["id"], output_index=it["index"], content_index=0,
                       part=part)]
        output.append(item)
        return done + [ev("response.output_item.done", output_index=it["index"], item=item)]

    def opening(kind: str) -> list[dict]:
        nonlocal open_item
        evs = close() if open_item is not None and open_item["kind"] != kind else []
        if open_item is not None:
            return evs
        open_item = {"kind": kind, "id": _id("rs" if kind == "reasoning" else "msg"), "index": len(output), "text": ""}
        if kind == "reasoning":
            item = {"type": "reasoning", "id": open_item["id"], "summary": [], "content": []}
            return evs + [ev("response.output_item.added", output_index=open_item["index"], item=item)]
        item = _message_item(open_item["id"], "", "in_progress")
        item["content"] = []
        return evs + [ev("response.output_item.added", output_index=open_item["index"], item=item),
                      ev("response.content_part.added", item_id=open_item["id"], output_index=open_item["index"],
                         content_index=0, part={"type": "output_text", "text": "", "annotations": []})]

    start = _envelope(plan, rid, created, "in_progress", [], None)
    yield ev("response.created", response=start)
    yield ev("response.in_progress", response=start)
    async for event in gen.events():
        if event.kind in ("reasoning", "content"):
            kind = "reasoning" if event.kind == "reasoning" else "message"
            for e in opening(kind):
                yield e
            open_item["text"] += event.text
            name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
            extra = {} if kind == "reasoning" else {"logprobs": []}
            yield ev(name, item_id=open_item["id"], output_index=open_item["index"], content_index=0,
                     delta=event.text, **extra)
            continue
        if event.reason in ("cancelled", "shutdown", "error"):
            raise StreamEnded(event.reason, gen.out.error)
        for e in close():
            yield e
        if gen.out.call is not None:
            item = _call_item(gen.out)
            index = len(output)
            yield ev("response.output_item.added", output_index=index, item={**item, "arguments": "",
                                                                              "status": "in_progress"})
            yield ev("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                     delta=item["arguments"])
            yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                     arguments=item["arguments"])
            yield ev("response.output_item.done", output_index=index, item=item)
            output.append(item)
        final = _envelope(plan, rid, created, "completed", output, gen.out)
        yield ev("response.completed" if final["status"] == "completed" else "response.incomplete", response=final)
