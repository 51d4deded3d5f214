"""What both APIs ask for, checked field by field: sampling, tools, tool_choice, JSON output, effort.

A request becomes a `ParsedRequest`: harmony messages, developer instructions, tool specs and a Constraint.
Every bad field is a 400 naming it (`param`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from converters.errors import BadInputError
from gptoss_cli.engine import harmony
from gptoss_cli.engine.constrain import Constraint
from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import ToolSpec
from gptoss_cli.serve.api_error import invalid_request

EFFORT_ALIASES = {"minimal": "low", "none": "low"}
MAX_STOPS = 4               # as OpenAI's API
MAX_STOP_CHARS = 1000       # bounds what a stop string makes the server hold back and precompute
# A function name goes into harmony headers (`to=functions.NAME`), which are tokenized with special
# tokens: only the characters MCP tool names use, so no name can spell `<|end|>` or `<|message|>`.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


@dataclass
class ServeDefaults:
    """Server-wide defaults from the command line."""

    model: str = "gpt-oss"
    effort: str = "medium"
    thinking_budget: int | None = None
    max_tokens: int | None = None
    date: str | None = None


@dataclass
class ParsedRequest:
    """One request, ready to render and generate."""

    messages: list[Message] = dataclasses.field(default_factory=list)
    instructions: list[str] = dataclasses.field(default_factory=list)
    tools: list[ToolSpec] = dataclasses.field(default_factory=list)
    effort: str = "medium"
    constraint: Constraint = dataclasses.field(default_factory=Constraint)
    schema_param: str = "response_format"   # the field the answer's schema came from
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = dataclasses.field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    model: str = "gpt-oss"

    def parts(self, date: str | None) -> list[harmony.Part]:
        """The harmony prompt as parts (control text, plain content), ending with `<|start|>assistant`."""
        return harmony.prompt_parts(self.messages, effort=self.effort, date=date,
                                    instructions="\n\n".join(self.instructions), tools=self.tools)

    def tokens(self, date: str | None, tokenize, tokenize_plain) -> list[int]:
        """Prompt token ids; message contents are plain text, so a message that spells `<|end|>` cannot
        end itself (as openai-harmony renders it)."""
        return harmony.tokenize_parts(self.parts(date), tokenize, tokenize_plain)


def field(body: dict, key: str, kinds: type | tuple, default: Any = None, *, param: str | None = None) -> Any:
    """body[key] if it has one of the types, default if absent or null; a 400 otherwise."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise invalid_request(param or key, f"expected {_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise invalid_request(param or key, f"expected {_names(kinds)}, got {type(value).__name__}")
    return value


def _names(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    words = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
             dict: "an object"}
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def function_name(value: Any, param: str) -> str:
    """A function name safe in a harmony header; a 400 naming param otherwise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise invalid_request(param, "a function name is 1 to 128 letters, digits, '_', '.' or '-' (not "
                                     "starting with '.' or '-')")
    return value


def parse_call_id(value: Any, param: str) -> str | None:
    """A tool call id: a string or absent; a 400 naming param otherwise."""
    if value is not None and not isinstance(value, str):
        raise invalid_request(param, f"expected a string, got {type(value).__name__}")
    return value


def apply_sampling(plan: ParsedRequest, body: dict, defaults: ServeDefaults, max_keys: tuple[str, ...]) -> None:
    """temperature, top_p, seed, stop and the first of max_keys that is set."""
    plan.temperature = float(field(body, "temperature", (int, float), 1.0))
    if not 0 <= plan.temperature <= 2:
        raise invalid_request("temperature", "must be between 0 and 2")
    plan.top_p = float(field(body, "top_p", (int, float), 1.0))
    if not 0 < plan.top_p <= 1:
        raise invalid_request("top_p", "must be in (0, 1]")
    plan.seed = field(body, "seed", int)
    stop = field(body, "stop", (str, list), [])
    plan.stop = [stop] if isinstance(stop, str) else stop
    if len(plan.stop) > MAX_STOPS or not all(isinstance(s, str) for s in plan.stop):
        raise invalid_request("stop", f"must be a string or up to {MAX_STOPS} strings")
    if any(len(s) > MAX_STOP_CHARS for s in plan.stop):
        raise invalid_request("stop", f"a stop string may be at most {MAX_STOP_CHARS} characters long")
    plan.max_tokens = defaults.max_tokens
    for key in max_keys:
        value = field(body, key, int)
        if value is not None:
            if value < 1:
                raise invalid_request(key, "must be at least 1")
            plan.max_tokens = value
            break


def parse_effort(value: Any, param: str, default: str) -> str:
    """A reasoning effort: low, medium or high (minimal counts as low)."""
    if value is None:
        return default
    if not isinstance(value, str) or EFFORT_ALIASES.get(value, value) not in harmony.EFFORTS:
        raise invalid_request(param, "must be one of low, medium, high")
    return EFFORT_ALIASES.get(value, value)


def tool_specs(tools: Any, *, nested: bool) -> list[ToolSpec]:
    """Function tools; chat completions nest them under "function", the Responses API does not. Other tool
    types are left out: gpt-oss only sees functions."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid_request("tools", "expected an array")
    specs = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_request(f"tools[{i}]", "expected an object")
        if tool.get("type", "function") != "function":
            continue   # hosted or custom tools (web_search, local_shell, ...) that clients like Codex also send
        fn = tool.get("function") if nested else tool
        if not isinstance(fn, dict) or not fn.get("name"):
            raise invalid_request(f"tools[{i}].name", "a function tool needs a name")
        function_name(fn["name"], f"tools[{i}]" + (".function.name" if nested else ".name"))
        params, description = fn.get("parameters"), fn.get("description")
        if params is not None and not isinstance(params, dict):
            raise invalid_request(f"tools[{i}].parameters", "expected a JSON schema object")
        if description is not None and not isinstance(description, str):
            raise invalid_request(f"tools[{i}].description", "expected a string")
        specs.append(ToolSpec(fn["name"], description or "", params))
    return specs


def constraint(plan: ParsedRequest, tool_choice: Any, schema: dict | None, budget: Any, *, nested: bool,
               default_budget: int | None) -> Constraint:
    """The Constraint for tool_choice, a JSON-schema answer and the thinking budget; drops the tools
    for tool_choice "none"."""
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 0):
        raise invalid_request("thinking_budget", "must be an integer >= 0")
    budget = default_budget if budget is None else budget
    tools = {t.name: t.parameters for t in plan.tools}
    tool = tools_all = None
    if tool_choice in (None, "auto"):
        pass
    elif tool_choice == "none":
        plan.tools = []
    elif tool_choice == "required":
        if not tools:
            raise invalid_request("tool_choice", '"required" needs at least one tool in tools')
        tools_all = tools
    elif isinstance(tool_choice, dict):
        fn = tool_choice.get("function") if nested else tool_choice
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or name not in tools:
            raise invalid_request("tool_choice", f"names a function that is not in tools: {name!r}")
        tool = name
    else:
        raise invalid_request("tool_choice", 'must be "auto", "none", "required" or a named function')
    plan.schema_param = "response_format" if nested else "text.format"
    return Constraint(schema=schema, tool=tool, tool_schema=tools.get(tool) if tool else None, tools=tools_all,
                      thinking_budget=budget)


def compile_constraint(plan: ParsedRequest) -> None:
    """Compile every grammar the plan's Constraint samples under (CPU work: call it off the event loop);
    a schema that cannot be enforced is a 400 naming its field."""
    from gptoss_cli.engine.structured import compile_schema

    c = plan.constraint
    if c.schema is not None:
        try:
            compile_schema(c.schema)
        except BadInputError as exc:
            raise invalid_request(plan.schema_param, exc.why) from None
    forced = [c.tool] if c.tool else list(c.tools or [])
    for i, spec in enumerate(plan.tools):
        if spec.name in forced:
            try:
                compile_schema(spec.parameters)
            except BadInputError as exc:
                raise invalid_request(f"tools[{i}]", f"the parameters of {spec.name}: {exc.why}") from None


def json_schema(fmt: Any, param: str) -> dict | None:
    """The schema a response format asks for: json_object (any object), json_schema, text (none)."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise invalid_request(param, "expected an object")
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        inner = fmt.get("json_schema", fmt)   # chat nests it, the Responses API's text.format does not
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if not isinstance(schema, dict):
            raise invalid_request(param, "json_schema needs a schema object")
        return schema
    raise invalid_request(param, "type must be text, json_object or json_schema")


def text_of(content: Any, param: str) -> str:
    """Message content as text: a string, or the text of its text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                parts.append(part["refusal"])
            else:
                raise invalid_request(f"{param}[{i}]", "only text parts are supported")
        return "".join(parts)
    raise invalid_request(param, "expected a string or an array of text parts")
