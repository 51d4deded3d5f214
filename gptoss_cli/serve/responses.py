"""POST /v1/responses: the Responses API's input items -> harmony (its output: response_events.py).

Output items: `reasoning` (the analysis, as reasoning_text content), `message` (the final answer) and
`function_call`; `reasoning` and `function_call_output` items are accepted back in `input`.
"""

from __future__ import annotations

from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import call_message, result_message
from gptoss_cli.serve import plan as P
from gptoss_cli.serve.api_error import bad
from gptoss_cli.serve.response_events import events, response

__all__ = ["events", "parse", "response"]


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
            call_id = P.call_id(item.get("call_id"), f"{where}.call_id")
            name = names.get(call_id) if call_id is not None else None
            if name is None:
                raise bad(f"{where}.call_id", "does not match an earlier function_call item")
            output = item.get("output")
            plan.messages.append(result_message(name, output if isinstance(output, str)
                                                else P.text_of(output, f"{where}.output")))
        else:
            raise bad(f"{where}.type", f"unsupported item type {kind!r}")
