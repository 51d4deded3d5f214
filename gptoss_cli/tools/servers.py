"""Which MCP servers to start and what their tools are called: --mcp parsing, labels, names, schemas."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class ToolServerError(BadInputError):
    """An MCP server is missing, did not start, or did not complete the handshake."""

    what = "MCP server"


@dataclass(frozen=True)
class ServerSpec:
    """How to reach one MCP server: a command line (stdio) or a streamable-HTTP URL."""

    label: str
    command: tuple[str, ...] = ()
    url: str | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class RemoteTool:
    """A tool as its server lists it, and the name the model sees."""

    server: str
    name: str  # the name given to the model (unique across servers)
    remote_name: str  # the name on its server
    description: str = ""
    schema: dict | None = None


def parse_server(text: str, env_keys: list[str] | tuple[str, ...] = ()) -> ServerSpec:
    """`--mcp "COMMAND ARGS"` or `--mcp https://…/mcp`; env_keys: `KEY` (from our environment) or `KEY=VALUE`."""
    env: list[tuple[str, str]] = []
    for item in env_keys:
        key, eq, value = item.partition("=")
        if not key:
            raise BadInputError(None, f"--mcp-env {item!r} names no variable", "Use --mcp-env KEY or KEY=VALUE")
        if not eq:
            if key not in os.environ:
                raise BadInputError(None, f"--mcp-env {key}: the variable is not set",
                                    f"Set {key} or pass --mcp-env {key}=VALUE")
            value = os.environ[key]
        env.append((key, value))
    text = text.strip()
    if text.startswith(("http://", "https://")):
        return ServerSpec(label=text, url=text, env=tuple(env))
    try:
        argv = tuple(os.path.expanduser(a) for a in shlex.split(text))
    except ValueError as exc:
        raise BadInputError(None, f"--mcp {text!r}: {exc}", "Quote the server command as one argument") from None
    if not argv:
        raise BadInputError(None, "--mcp is empty", 'Pass a command, e.g. --mcp "python my_tools.py"')
    return ServerSpec(label=_label(argv), command=argv, env=tuple(env))


def _label(argv: tuple[str, ...]) -> str:
    """A short server name: the package or script, without flags and paths."""
    words = [a for a in argv if not a.startswith("-")] or list(argv)
    runner = Path(words[0]).name.rstrip("0123456789.") in ("npx", "uvx", "python", "node", "uv", "bunx", "deno")
    pick = words[1] if runner and len(words) > 1 else words[0]
    return Path(pick).name.removesuffix(".py").removesuffix(".js").removesuffix(".mjs")


def clean_schema(schema) -> dict | None:
    """An input schema for the model; an object with no properties is shown as a call without arguments.

    Titles that only repeat the property name (pydantic writes `"title": "City"` for `city`) are dropped:
    harmony would render each as a comment the model gains nothing from.
    """
    if not isinstance(schema, dict) or (schema.get("type") == "object" and not schema.get("properties")):
        return None
    return _untitled({k: v for k, v in schema.items() if k not in ("$schema", "additionalProperties", "title")})


def _untitled(schema: dict) -> dict:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return schema
    clean = {}
    for key, value in props.items():
        if isinstance(value, dict):
            if value.get("title") == key.replace("_", " ").title():
                value = {k: v for k, v in value.items() if k != "title"}
            value = _untitled(value)
        clean[key] = value
    return {**schema, "properties": clean}


def safe_name(text: str) -> str:
    """ASCII letters, digits and `_` kept; anything else becomes `_`."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in text)


def unique_labels(labels: list[str]) -> list[str]:
    """Server labels made unique: a repeated one gets `-2`, `-3`, …"""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def start_error(spec: ServerSpec, exc: BaseException, log: Path | None) -> ToolServerError:
    """The one-line error for a server that did not start."""
    where = spec.url or " ".join(spec.command)
    if isinstance(exc, FileNotFoundError):
        why, hint = f"{spec.command[0]} not found", "Install it or pass the full path to --mcp"
    elif isinstance(exc, TimeoutError):
        why, hint = str(exc), "Check that it is an MCP server speaking stdio (or streamable HTTP)"
    else:
        why = f"it did not start ({type(exc).__name__}: {exc})".replace("\n", " ")
        hint = "Check the command" + (f"; its log is {log}" if log else "")
    return ToolServerError(where, why, hint)


def model_name(name: str) -> str:
    """A tool name safe in a harmony header (`to=functions.NAME`): other characters become `_`."""
    return name if _NAME.fullmatch(name) else safe_name(name) or "tool"
