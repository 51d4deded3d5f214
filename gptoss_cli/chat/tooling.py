"""Chat's tools and constraints: MCP servers, approvals, --schema, --thinking-budget, --tool-choice."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from converters.errors import BadInputError
from gptoss_cli import paths, ui
from gptoss_cli.engine.session import Sampling, Session, TurnResult
from gptoss_cli.engine.turn import run_turn
from gptoss_cli.tools.mcp_client import ToolHub, parse_server
from gptoss_cli.tools.runner import Approval, ToolRunner, arguments_text, specs

SHOWN_RESULT_CHARS = 300
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}
# JSON-schema keywords llama-cpp-python's schema -> grammar converter does not enforce.
UNENFORCED = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "not",
              "if", "then", "else", "patternProperties", "dependentRequired", "dependentSchemas")


@dataclass
class ToolOptions:
    """The tool and constraint flags of `gptoss chat`."""

    mcp: list[str] = field(default_factory=list)
    mcp_env: list[str] = field(default_factory=list)
    yes: bool = False
    allow_tool: list[str] = field(default_factory=list)
    max_tool_calls: int = 16
    schema: str | None = None
    thinking_budget: int | None = None
    tool_choice: str = "auto"


class Controls:
    """What a turn runs with besides the model: the tool hub and runner, the answer schema, the budget."""

    def __init__(self, opts: ToolOptions, hub: ToolHub | None = None) -> None:
        self.opts, self.hub = opts, hub
        self.schema = load_schema(opts.schema) if opts.schema else None
        self.thinking_budget = opts.thinking_budget
        self.runner: ToolRunner | None = None
        if hub is not None:
            self.runner = ToolRunner(hub, Approval(yes=opts.yes, allow=set(opts.allow_tool)),
                                     on_result=show_call, on_withdrawn=self._withdrawn)
        self.session: Session | None = None
        choice = opts.tool_choice
        if choice not in ("auto", "none") and (hub is None or choice not in hub.tools):
            names = ", ".join(hub.tools) if hub else "none (no --mcp)"
            raise BadInputError(None, f"--tool-choice {choice}: no such tool", f"The tools are: {names}")

    def attach(self, session: Session) -> None:
        """Show the live tools to the model in this session (none with --tool-choice none)."""
        self.session = session
        session.tools = specs(self.hub) if self.hub is not None and self.opts.tool_choice != "none" else []

    def run(self, session: Session, backend, text: str, sampling: Sampling,
            on_delta: Callable[[str, str], None] | None = None) -> TurnResult:
        """One turn with tools and constraints; the calls it made are kept on the turn."""
        if self.runner is not None:
            self.runner.records = []
        result = run_turn(session, backend, text, sampling, on_delta,
                          run_tool=self.runner if session.tools else None,
                          max_tool_calls=self.opts.max_tool_calls, constraint_for=self.constraint_for)
        if self.runner is not None:
            result.turn.tool_calls = list(self.runner.records)
        return result

    def constraint_for(self, calls: int):
        """The constraint of the next generation: the forced first call, then the schema and the budget."""
        choice = self.opts.tool_choice
        if self.schema is None and self.thinking_budget is None and choice in ("auto", "none"):
            return None
        from gptoss_cli.engine.constrain import Constraint

        if choice not in ("auto", "none") and calls == 0 and self.hub and choice in self.hub.tools:
            return Constraint(tool=choice, tool_schema=self.hub.tools[choice].schema or NO_ARGUMENTS,
                              thinking_budget=self.thinking_budget)
        return Constraint(schema=self.schema, thinking_budget=self.thinking_budget)

    def _withdrawn(self, label: str) -> None:
        ui.warn(f"the MCP server {label} stopped; its tools are withdrawn and the chat goes on")
        if self.session is not None:
            self.attach(self.session)


def start_hub(opts: ToolOptions) -> ToolHub | None:
    """Start the --mcp servers (exit 2 naming the one that fails; nothing is left running)."""
    if not opts.mcp:
        return None
    servers = [parse_server(text, opts.mcp_env) for text in opts.mcp]
    hub = ToolHub(servers, log_dir=paths.state_dir() / "mcp")
    with ui.status(f"starting {len(servers)} MCP server(s)"):
        hub.start()
    for note in hub.renamed:
        ui.warn(note)
    for name in opts.allow_tool:
        if name not in hub.tools:
            ui.warn(f"--allow-tool {name}: no tool has that name (the tools are: {', '.join(hub.tools)})")
    ui.info(f"tools: {len(hub.tools)} from {', '.join(hub.servers)}")
    return hub


def load_schema(text: str) -> dict:
    """--schema FILE|JSON: a JSON schema from a file or given inline."""
    source = text.strip()
    where = None
    if not source.startswith(("{", "[")):
        where = Path(source).expanduser()
        try:
            source = where.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInputError(where, "no such file", "Pass a JSON schema file or inline JSON") from None
        except OSError as exc:
            raise BadInputError(where, f"cannot read it: {exc.strerror}") from None
    try:
        schema = json.loads(source)
    except json.JSONDecodeError as exc:
        raise BadInputError(where or "--schema", f"not valid JSON ({exc.msg}, line {exc.lineno})",
                            "Pass a JSON schema") from None
    if not isinstance(schema, dict):
        raise BadInputError(where or "--schema", "a JSON schema must be an object", 'e.g. {"type": "object"}')
    from gptoss_cli.engine.constrain import grammar_for

    grammar_for(schema)  # unsupported schemas fail here, before the model loads
    ignored = unenforced(schema)
    if ignored:
        ui.warn(f"--schema: {', '.join(ignored)} cannot be enforced while generating; the answer has the "
                "schema's shape but may break these")
    return schema


def unenforced(schema) -> list[str]:
    """The keywords in a schema that the grammar cannot enforce (sorted, each once)."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.update(k for k in node if k in UNENFORCED)
            stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default", "examples"))
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(found)


def show_call(record: dict) -> None:
    """One line per finished call on stderr: tool, server, arguments, the start of the result."""
    args = arguments_text(record["arguments"])
    outcome = f"error: {record['error']}" if "error" in record else record.get("result", "")
    outcome = outcome.replace("\n", " ")
    if len(outcome) > SHOWN_RESULT_CHARS:
        outcome = outcome[:SHOWN_RESULT_CHARS] + "…"
    ui.info(f"tool {record['name']} ({record['server'] or '?'}) {args} -> {outcome}")


def tool_rows(hub: ToolHub | None) -> list[tuple[str, str, str]]:
    """Rows for /tools: server, tool name, first line of its description."""
    if hub is None:
        return []
    return [(server, t.name, (t.description.strip().splitlines() or [""])[0])
            for server, tools in hub.by_server().items() for t in tools]
