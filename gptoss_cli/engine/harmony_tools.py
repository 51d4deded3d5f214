"""Function tools in harmony: the `functions` namespace of the developer message, calls and results.

API (shared by `gptoss chat` and `gptoss serve`):
- `ToolSpec(name, description, parameters)`: one function tool; `parameters` is a JSON schema or None.
- `tools_section(specs)`: the `# Tools` text that goes into the developer message (render_prompt's
  `tools=` does this for you), byte-equal to openai-harmony's `template_tools_section`.
- `call_message(name, arguments)` / `result_message(name, text)`: the harmony messages of one call
  and of its result, to put after the user's message when the conversation is rendered again.
- `find_call(messages)`: the tool call that ended a generated reply (a `ParsedMessage` with a recipient),
  also when the model put it in the analysis channel, left out `<|constrain|>` or ended it with `<|end|>`.
- `parse_arguments(text)`: a call's arguments as a dict, or ValueError with a message for the model.

The schema -> TypeScript rendering is a port of openai-harmony's `json_schema_to_typescript`
(src/encoding.rs, v0.0.8), quirks included (oneOf layout, `// default:` comments, key order kept).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_stream import ParsedMessage, is_call

NAMESPACE = "functions"
CONSTRAIN_JSON = "<|constrain|>json"


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: its name, description and JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: dict | None = None


@dataclass(frozen=True)
class ToolCall:
    """A call read from a generated reply: tool name (without `functions.`), raw argument text."""

    name: str
    arguments: str
    recipient: str
    channel: str
    content_type: str | None = None


def tools_section(tools: Sequence[ToolSpec]) -> str:
    """The `# Tools` section with the `functions` namespace, as openai-harmony renders it."""
    parts = [f"## {NAMESPACE}\n", f"namespace {NAMESPACE} {{\n"]
    for tool in tools:
        parts.extend(f"// {line}" for line in _lines(tool.description))
        if tool.parameters is not None:
            parts.append(f"type {tool.name} = (_: {schema_to_typescript(tool.parameters, '')}) => any;\n")
        else:
            parts.append(f"type {tool.name} = () => any;\n")
    parts.append(f"}} // namespace {NAMESPACE}")
    return "# Tools\n\n" + "\n".join(parts)


def call_message(name: str, arguments: str) -> Message:
    """The assistant's call as harmony renders it back: commentary, to=functions.NAME, constrained JSON."""
    return Message("assistant", arguments, "commentary", recipient=f"{NAMESPACE}.{name}",
                   content_type=CONSTRAIN_JSON)


def result_message(name: str, text: str) -> Message:
    """A tool's result: `<|start|>functions.NAME to=assistant<|channel|>commentary<|message|>…<|end|>`."""
    return Message(f"{NAMESPACE}.{name}", text, "commentary", recipient="assistant")


def find_call(messages: Sequence[ParsedMessage]) -> ToolCall | None:
    """The call in the last generated message, if it has a recipient other than the user."""
    last = messages[-1] if messages else None
    if last is None or last.recipient is None or not is_call(last):
        return None
    return ToolCall(call_name(last.recipient), last.content, last.recipient, last.channel, last.content_type)


def call_name(recipient: str) -> str:
    """The tool's name in a recipient: `functions.NAME` -> NAME; other namespaces keep theirs."""
    return recipient.split(".", 1)[1] if recipient.startswith(NAMESPACE + ".") else recipient


def parse_arguments(text: str) -> dict:
    """A call's arguments as a JSON object; an empty text means no arguments."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("the arguments must be a JSON object")
    return value


# -- JSON schema -> TypeScript, as openai-harmony writes it ------------------------------------------

def _lines(text: str) -> list[str]:
    """Rust's str::lines(): split on \\n, drop one trailing empty line, strip a trailing \\r."""
    if not text:
        return []
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_enum(schema: Any) -> bool:
    return isinstance(schema, dict) and isinstance(schema.get("enum"), list) and bool(schema["enum"])


def _default_text(schema: dict) -> str:
    """`default: …` as harmony writes it for a property: strings quoted unless the schema is an enum."""
    default = schema["default"]
    if isinstance(default, str):
        return f'default: "{default}"' if not _is_enum(schema) else f"default: {default}"
    return f"default: {_json(default)}"


def _nullable(variant: Any, type_str: str) -> str:
    if isinstance(variant, dict) and variant.get("nullable") is True and "null" not in type_str:
        return f"{type_str} | null"
    return type_str


def _str(schema: dict, key: str) -> str | None:
    value = schema.get(key)
    return value if isinstance(value, str) else None


def schema_to_typescript(schema: Any, indent: str) -> str:
    """A JSON schema as the TypeScript-like type the model was trained on."""
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("oneOf"), list):
        return _one_of(schema["oneOf"], indent)
    ty = schema.get("type")
    if isinstance(ty, list):
        names = ["number" if t == "integer" else t for t in ty if isinstance(t, str)]
        if names:
            return " | ".join(names)
    if not isinstance(ty, str):
        return "any"
    if ty == "object":
        return _object(schema, indent)
    if ty == "string":
        enum = schema.get("enum")
        values = [f'"{v}"' for v in enum if isinstance(v, str)] if isinstance(enum, list) else []
        return " | ".join(values) if values else "string"
    if ty in ("number", "integer"):
        return "number"
    if ty == "boolean":
        return "boolean"
    if ty == "array":
        return f"{schema_to_typescript(schema['items'], indent)}[]" if "items" in schema else "Array<any>"
    return "any"


def _one_of(variants: list, indent: str) -> str:
    out = ""
    for variant in variants:
        out += f"\n{indent} | "
        out += _nullable(variant, schema_to_typescript(variant, indent + "   "))
        comments = []
        if isinstance(variant, dict):
            if _str(variant, "description") is not None:
                comments.append(variant["description"])
            if "default" in variant:
                d = variant["default"]
                comments.append(f'default: "{d}"' if isinstance(d, str) and not _is_enum(variant)
                                else f"default: {_json(d)}")
        if comments:
            out += f" // {' '.join(comments)}"
    return out


def _object(schema: dict, indent: str) -> str:
    out = ""
    if _str(schema, "description") is not None:
        out += f"{indent}// {schema['description']}\n"
    out += "{\n"
    props = schema.get("properties")
    required = {r for r in schema.get("required", []) if isinstance(r, str)} \
        if isinstance(schema.get("required"), list) else set()
    if isinstance(props, dict):
        for key, val in props.items():
            out += _property(key, val, key in required, indent)
    return out + f"{indent}}}"


def _property(key: str, val: Any, required: bool, indent: str) -> str:
    val = val if isinstance(val, dict) else {}
    mark = "" if required else "?"
    out = ""
    if _str(val, "title") is not None:
        out += f"{indent}// {val['title']}\n{indent}//\n"
    one_of = val.get("oneOf")
    if one_of is None and _str(val, "description") is not None:
        out += f"{indent}// {val['description']}\n"
    examples = val.get("examples")
    if isinstance(examples, list) and examples:
        out += f"{indent}// Examples:\n"
        out += "".join(f'{indent}// - "{ex}"\n' for ex in examples if isinstance(ex, str))
    if isinstance(one_of, list):
        return out + _one_of_property(key, val, one_of, mark, indent)
    out += f"{indent}{key}{mark}: "
    out += _nullable(val, schema_to_typescript(val, indent + "    ")) + ","
    if one_of is None and "default" in val:
        out += f" // {_default_text(val)}"
    return out + "\n"


def _one_of_property(key: str, val: dict, variants: list, mark: str, indent: str) -> str:
    desc = _str(val, "description")
    first = variants[0] if variants and isinstance(variants[0], dict) else {}
    skip_desc = desc is not None and _str(first, "description") == desc
    out = ""
    desc_above = False
    if desc is not None and not skip_desc:
        out += f"{indent}// {desc}\n"
        desc_above = True
    if "default" in val:
        out += f"{indent}// {_default_text(val)}\n"
    out += f"{indent}{key}{mark}:\n"
    for i, variant in enumerate(variants):
        out += f"{indent} | " + _nullable(variant, schema_to_typescript(variant, indent + "   "))
        comments = []
        if isinstance(variant, dict):
            vdesc = _str(variant, "description")
            if not (i == 0 and desc_above) and vdesc is not None and vdesc != desc:
                comments.append(vdesc)
            if "default" in variant:
                comments.append(_default_text(variant))
        if comments:
            out += f" // {' '.join(comments)}"
        out += "\n"
    return out + f"{indent},\n"
