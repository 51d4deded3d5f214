"""The interactive chat: line editing and history, slash commands, a streamed Markdown answer."""

from __future__ import annotations

import datetime as _dt
import shlex
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from converters.errors import GptossError
from gptoss_cli import paths, ui
from gptoss_cli.chat.view import ReplyView
from gptoss_cli.engine import harmony
from gptoss_cli.engine.session import Sampling, Session, TokenBackend, TurnResult, stats_rows

HISTORY_FILE = "chat_history"
PROMPT, MORE = ">>> ", "... "
FENCE = '"""'
HELP = [
    ("/help", "this list"),
    ("/effort low|medium|high", "reasoning effort of the next replies"),
    ("/think", "show or hide the model's thinking"),
    ("/system TEXT", "set the instructions (developer message); `/system -` clears, `/system` shows"),
    ("/reset", "start a new conversation (keeps effort and instructions)"),
    ("/save [FILE]", "write the conversation as a JSON transcript"),
    ("/load FILE", "continue a saved conversation"),
    ("/stats", "tokens, speed, time to first token, context used"),
    ("/tools", "the MCP tools by server"),
    ("/budget N", "at most N thinking tokens before the answer (`/budget off` lifts it)"),
    ("/exit", "quit (or Ctrl-D)"),
    ('"""', "start and end a multi-line message"),
]
APPROVE = "run it? [y]es / [n]o / [a]lways this tool: "


class Repl:
    """The read-eval-print loop over one session."""

    def __init__(self, session: Session, backend: TokenBackend, sampling: Sampling, *,
                 show_thinking: bool = False, model_name: str = "", console: Console | None = None,
                 controls=None) -> None:
        from gptoss_cli.chat.tooling import Controls, ToolOptions

        self.session, self.backend, self.sampling = session, backend, sampling
        self.controls = controls or Controls(ToolOptions())
        if self.controls.runner is not None:
            self.controls.runner.approval.ask = self._approve
        self._view: ReplyView | None = None
        self.show_thinking, self.model_name = show_thinking, model_name
        self.console = console or ui.out
        self.pending: str | None = None   # the message being answered (saved if a worker dies mid-reply)
        self.commands: dict[str, Callable[[str], bool]] = {
            "/help": self._help, "/effort": self._effort, "/think": self._think, "/system": self._system,
            "/reset": self._reset, "/save": self._save, "/load": self._load, "/stats": self._stats,
            "/tools": self._tools, "/budget": self._budget,
            "/exit": self._exit, "/quit": self._exit, "/bye": self._exit,
        }

    def run(self) -> None:
        """Chat until /exit or Ctrl-D."""
        history = _start_history()
        ui.info(f"gptoss chat · {self.model_name} · context {self.session.n_ctx} · effort "
                f"{self.session.effort}\nType /help for commands, {FENCE} for multi-line input, Ctrl-D to quit.")
        try:
            while True:
                try:
                    line = self._read()
                except KeyboardInterrupt:
                    self.console.print("\n(Ctrl-D or /exit to quit)", style="dim", markup=False)
                    continue
                if line is None:
                    self.console.print()
                    return
                if not line.strip():
                    continue
                try:
                    if line.startswith("/"):
                        if not self._command(line.strip()):
                            return
                    else:
                        self.ask(line)
                except KeyboardInterrupt:  # while a command ran or an answer was drawn
                    self.console.print("[interrupted]", style="dim", markup=False)
        finally:
            _save_history(history)

    def _read(self) -> str | None:
        """One message; None at end of input. A line of \"\"\" opens and closes a multi-line message."""
        try:
            line = input(PROMPT)
        except EOFError:
            return None
        if not line.lstrip().startswith(FENCE):
            return line
        first = line.lstrip()[len(FENCE):]
        if first.rstrip().endswith(FENCE) and first.strip():
            return first.rstrip()[:-len(FENCE)]
        lines = [first] if first else []
        while True:
            try:
                more = input(MORE)
            except EOFError:
                break
            if more.rstrip().endswith(FENCE):
                lines.append(more.rstrip()[:-len(FENCE)])
                break
            lines.append(more)
        return "\n".join(lines).strip("\n")

    def ask(self, text: str) -> TurnResult | None:
        """Send one message and stream the reply; Ctrl-C stops the reply and keeps the session."""
        view = self._view = ReplyView(self.console, self.show_thinking)
        result = None
        self.pending = text
        try:
            result = self.controls.run(self.session, self.backend, text, self.sampling, on_delta=view.on_delta)
        except KeyboardInterrupt:
            view.close(None)
            self.console.print("[interrupted]", style="dim", markup=False)
            return None
        except GptossError as exc:
            view.close(None)
            ui.error(exc.message())
            return None
        finally:
            self.pending = None
        view.close(result)
        if result.stats.dropped_turns:
            ui.warn(f"dropped the {result.stats.dropped_turns} oldest turn(s) to fit the "
                    f"{self.session.n_ctx}-token context")
        return result

    # -- slash commands: each returns False to quit --------------------------------------------------

    def _command(self, line: str) -> bool:
        name, _, arg = line.partition(" ")
        handler = self.commands.get(name.lower())
        if handler is None:
            ui.warn(f"unknown command {name}. Type /help for the list.")
            return True
        try:
            return handler(arg.strip())
        except GptossError as exc:
            ui.error(exc.message())
            return True

    def _help(self, _: str) -> bool:
        ui.table(None, ["command", "what it does"], HELP)
        return True

    def _effort(self, arg: str) -> bool:
        if arg.lower() in harmony.EFFORTS:
            self.session.effort = arg.lower()
        elif arg:
            ui.warn(f"unknown effort {arg!r}: use /effort low, /effort medium or /effort high")
            return True
        self._note(f"effort: {self.session.effort}")
        return True

    def _think(self, _: str) -> bool:
        self.show_thinking = not self.show_thinking
        self._note(f"thinking: {'shown' if self.show_thinking else 'hidden'}")
        return True

    def _system(self, arg: str) -> bool:
        if arg == "-":
            self.session.instructions = ""
        elif arg:
            self.session.instructions = arg
        self._note(f"instructions: {self.session.instructions or '(none)'}")
        return True

    def _reset(self, _: str) -> bool:
        self.session.reset()
        self._note("new conversation")
        return True

    def _save(self, arg: str) -> bool:
        name = _one_path(arg) or f"gptoss-chat-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
        path = self.session.save(Path(name), model=self.model_name)
        self._note(f"saved {len(self.session.turns)} turn(s) to {path}")
        return True

    def _load(self, arg: str) -> bool:
        name = _one_path(arg)
        if not name:
            ui.warn("usage: /load FILE")
            return True
        self.session.load(Path(name))
        self._note(f"loaded {len(self.session.turns)} turn(s) from {name}; effort {self.session.effort}")
        return True

    def _stats(self, _: str) -> bool:
        ui.table(None, ["stat", "value"], stats_rows(self.session))
        return True

    def _tools(self, _: str) -> bool:
        from gptoss_cli.chat.tooling import tool_rows

        rows = tool_rows(self.controls.hub)
        if not rows:
            self._note("no tools (start gptoss chat with --mcp \"COMMAND\" or --mcp URL)")
        else:
            ui.table(None, ["server", "tool", "description"], rows)
        return True

    def _budget(self, arg: str) -> bool:
        if arg.lower() in ("off", "none", "-"):
            self.controls.thinking_budget = None
        elif arg.isdigit():
            self.controls.thinking_budget = int(arg)
        elif arg:
            ui.warn(f"/budget takes a number of tokens or off, not {arg!r}")
            return True
        budget = self.controls.thinking_budget
        self._note(f"thinking budget: {budget if budget is not None else 'none'}")
        return True

    def _approve(self, tool, arguments: dict) -> str:
        """Ask before a call: the tool, its server and its arguments (shown as plain text)."""
        import json

        if self._view is not None:
            self._view.pause()
        self.console.print(f"tool call: {tool.name} (server {tool.server})", style="bold", markup=False)
        self.console.print(json.dumps(arguments, indent=2, ensure_ascii=False), markup=False, highlight=False)
        while True:
            answer = input(APPROVE).strip().lower()
            if answer[:1] in ("y", "n", "a"):
                return answer[:1]
            if answer == "":
                return "n"

    def _exit(self, _: str) -> bool:
        return False

    def _note(self, text: str) -> None:
        self.console.print(text, style="dim", markup=False)


def _one_path(arg: str) -> str:
    try:
        parts = shlex.split(arg)
    except ValueError:
        parts = [arg]
    return " ".join(parts)


def _start_history():
    """Enable readline line editing with the persistent history file; returns the module or None."""
    try:
        import readline
    except ImportError:  # no readline on this platform: plain input() still works
        return None
    path = paths.state_dir() / HISTORY_FILE
    try:
        readline.read_history_file(path)
    except (OSError, ValueError):
        pass
    readline.set_history_length(2000)
    return readline


def _save_history(readline) -> None:
    if readline is None:
        return
    path = paths.state_dir() / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass
