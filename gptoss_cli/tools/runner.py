"""The chat's side of a tool call: approval, the MCP call, a record for --json, the text for the model.

Approval rules: in the REPL the user is asked `[y]es / [n]o / [a]lways this tool`; a one-shot run never
asks, and a call runs only with --yes or for a tool named by --allow-tool. A declined call is answered
to the model with an error saying so; nothing runs without approval.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gptoss_cli.engine.harmony_tools import ToolCall, ToolSpec, parse_arguments
from gptoss_cli.tools.mcp_client import RemoteTool, ToolHub
from gptoss_cli.tools.results import ToolResult

Ask = Callable[[RemoteTool, dict], str]  # returns "y", "n" or "a"


@dataclass
class Approval:
    """Who may run what: --yes, --allow-tool names, `always` answers, else ask (REPL) or decline."""

    yes: bool = False
    allow: set[str] = field(default_factory=set)
    ask: Ask | None = None
    always: set[str] = field(default_factory=set)

    def decide(self, tool: RemoteTool, arguments: dict) -> bool:
        """True when this call may run; may ask the user."""
        if self.yes or tool.name in self.allow or tool.name in self.always:
            return True
        if self.ask is None:
            return False
        answer = self.ask(tool, arguments)
        if answer == "a":
            self.always.add(tool.name)
        return answer in ("y", "a")


def specs(hub: ToolHub) -> list[ToolSpec]:
    """The live tools as harmony function specs."""
    return [ToolSpec(t.name, t.description, t.schema) for t in hub.tools.values()]


class ToolRunner:
    """Runs the model's calls through a ToolHub after approval; keeps a record of each call."""

    def __init__(self, hub: ToolHub, approval: Approval, *,
                 on_result: Callable[[dict], None] | None = None,
                 on_withdrawn: Callable[[str], None] | None = None) -> None:
        self.hub, self.approval = hub, approval
        self.on_result, self.on_withdrawn = on_result, on_withdrawn
        self.records: list[dict] = []

    def __call__(self, call: ToolCall) -> str:
        """The text the model gets back for this call (a result, or an error it can act on)."""
        tool = self.hub.tools.get(call.name)
        record: dict[str, Any] = {"server": tool.server if tool else None, "name": call.name,
                                  "arguments": call.arguments, "approved": False, "seconds": 0.0}
        self.records.append(record)
        try:
            arguments = parse_arguments(call.arguments)
            record["arguments"] = arguments
        except ValueError as exc:
            return self._error(record, str(exc))
        if tool is None:
            names = ", ".join(self.hub.tools) or "none"
            return self._error(record, f"there is no tool {call.name!r} (the tools are: {names})")
        if not self.approval.decide(tool, arguments):
            why = "the user declined this call" if self.approval.ask else \
                "not approved: one-shot runs call tools only with --yes or --allow-tool NAME"
            return self._error(record, why, model_text="error: the user declined this call")
        record["approved"] = True
        try:
            result = self.hub.call(tool.name, arguments)
        except KeyboardInterrupt:
            record["error"] = "cancelled by the user"
            self._notify(record)
            raise
        record["seconds"] = round(result.seconds, 6)
        self._check_withdrawn()
        return self._answer(record, result)

    def _answer(self, record: dict, result: ToolResult) -> str:
        if result.is_error:
            return self._error(record, result.text or "the tool failed", seconds=record["seconds"])
        record["result"] = result.text
        self._notify(record)
        return result.text

    def _error(self, record: dict, why: str, model_text: str | None = None, seconds: float = 0.0) -> str:
        record["error"] = why
        self._notify(record)
        return model_text or f"error: {why}"

    def _notify(self, record: dict) -> None:
        if self.on_result:
            self.on_result(record)

    def _check_withdrawn(self) -> None:
        while self.hub.withdrawn:
            label = self.hub.withdrawn.pop(0)
            if self.on_withdrawn:
                self.on_withdrawn(label)


def arguments_text(arguments) -> str:
    """Arguments for display: compact JSON (or the raw text the model wrote)."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
