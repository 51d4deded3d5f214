"""POST /v1/responses: the Responses API's input items -> harmony (its output: response_events.py).

Output items: `reasoning` (the analysis, as reasoning_text content), `message` (the final answer) and
`function_call`; `reasoning` and `function_call_output` items are accepted back in `input`.
"""

from __future__ import annotations

from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import call_message, result_message
from gptoss_cli.serve.api_error import invalid_request
from gptoss_cli.serve.request import (
    ParsedRequest,
    ServeDefaults,
    apply_sampling,
    constraint,
    field,
    function_name,
    json_schema,
    parse_call_id,
    parse_effort,
    text_of,
    tool_specs,
)
from gptoss_cli.serve.response_events import events, response

__all__ = ["events", "parse", "response"]


def parse(body: dict, defaults: ServeDefaults) -> ParsedRequest:
    """A Responses body as a ParsedRequest (400 on any bad field)."""
    plan = ParsedRequest(model=field(body, "model", str, defaults.model),
                         stream=bool(field(body, "stream", bool, False)))
    if body.get("previous_response_id") is not None:
        raise invalid_request("previous_response_id",
                              "this server keeps no state: send the whole conversation in input")
    apply_sampling(plan, body, defaults, ("max_output_tokens",))
    reasoning = field(body, "reasoning", dict, {})
    plan.effort = parse_effort(reasoning.get("effort"), "reasoning.effort", defaults.effort)
    instructions = field(body, "instructions", str)
    if instructions:
        plan.instructions.append(instructions)
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise invalid_request("input", "expected a string or a non-empty array of items",
                              code="missing_required_parameter")
    _items(plan, items)
    plan.tools = tool_specs(body.get("tools"), nested=False)
    text = field(body, "text", dict, {})
    schema = json_schema(text.get("format"), "text.format")
    plan.constraint = constraint(plan, body.get("tool_choice"), schema, body.get("thinking_budget"),
                                 nested=False, default_budget=defaults.thinking_budget)
    return plan


def _items(plan: ParsedRequest, items: list) -> None:
    names: dict[str, str] = {}   # call_id -> function name
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_request(where, "expected an object")
        kind = item.get("type", "message")
        if kind == "message":
            role, text = item.get("role"), text_of(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                plan.instructions.append(text)
            elif role == "user":
                plan.messages.append(Message("user", text))
            elif role == "assistant":
                plan.messages.append(Message("assistant", text, "final"))
            else:
                raise invalid_request(f"{where}.role", "must be system, developer, user or assistant")
        elif kind == "reasoning":
            text = text_of(item.get("content") or item.get("summary"), f"{where}.content")
            if text:
                plan.messages.append(Message("assistant", text, "analysis"))
        elif kind == "function_call":
            name, args = item.get("name"), item.get("arguments") or "{}"
            if name is None or not isinstance(args, str):
                raise invalid_request(where, "a function_call needs a name and string arguments")
            function_name(name, f"{where}.name")
            ids = parse_call_id(item.get("call_id"), f"{where}.call_id"), parse_call_id(item.get("id"), f"{where}.id")
            names[ids[0] or ids[1] or ""] = name
            plan.messages.append(call_message(name, args))
        elif kind == "function_call_output":
            call_id = parse_call_id(item.get("call_id"), f"{where}.call_id")
            name = names.get(call_id) if call_id is not None else None
            if name is None:
                raise invalid_request(f"{where}.call_id", "does not match an earlier function_call item")
            output = item.get("output")
            plan.messages.append(result_message(name, output if isinstance(output, str)
                                                else text_of(output, f"{where}.output")))
        else:
            raise invalid_request(f"{where}.type", f"unsupported item type {kind!r}")
