"""The interactive chat: line editing and history, slash commands, a streamed Markdown answer."""

from __future__ import annotations

import datetime as _dt
import shlex
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from converters.errors import GptossError
from gptoss_cli import paths, ui
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
STOP_NOTES = {"length": "stopped at the token limit (--max-tokens or the context size)",
              "interrupted": "interrupted", "call": "the model asked for a tool call; start gptoss chat with --mcp "
              "to give it tools", "tool_limit": "stopped: too many tool calls (--max-tool-calls)",
              "eos": "the model ended the text"}
APPROVE = "run it? [y]es / [n]o / [a]lways this tool: "


class _Tail:
    """A Markdown renderable that shows only its last screenful, so Live never scrolls."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(Markdown("".join(self.parts)), options, pad=False)
        for line in lines[-max(console.size.height - 2, 3):]:
            yield from line
            yield Segment.line()


class _ReplyView:
    """Streams one reply: thinking dimmed (or a counter), then the answer as live Markdown."""

    def __init__(self, console: Console, show_thinking: bool) -> None:
        self.console, self.show_thinking = console, show_thinking
        self.final: list[str] = []
        self.thinking = 0
        self.live: Live | None = None
        self.mid_line = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.final:
            yield _Tail(self.final)
        else:
            yield Text(f"thinking… {self.thinking} tokens" if self.thinking else "…", style="dim")

    def on_delta(self, channel: str, text: str) -> None:
        """Show one piece of generated text."""
        if channel == "final":
            self.final.append(text)
            self._live()
        elif self.show_thinking and self.live is None:
            self.console.print(text, style="dim", end="", markup=False, highlight=False, soft_wrap=True)
            self.mid_line = not text.endswith("\n")
        else:
            self.thinking += 1
            self._live()

    def _live(self) -> None:
        if self.live is None:
            if self.mid_line:
                self.console.print()
            self.live = Live(self, console=self.console, refresh_per_second=8, transient=True,
                             redirect_stdout=False, redirect_stderr=False)
            with _sigint_deferred():  # a half-started Live cannot be stopped
                self.live.start()

    def pause(self) -> None:
        """Take the live view off the screen (before a question); the next text starts a new one."""
        if self.live is not None:
            with _sigint_deferred(reraise=False):
                self.live.stop()
            self.live, self.final = None, []
        elif self.mid_line:
            self.console.print()
            self.mid_line = False

    def close(self, result: TurnResult | None) -> None:
        """Replace the live view with the finished answer and a note on how it ended."""
        if self.live is not None:
            with _sigint_deferred(reraise=False):  # the reply is over; a late Ctrl-C changes nothing
                self.live.stop()
        elif self.mid_line:
            self.console.print()
        if result is None:
            return
        stats = result.stats
        if stats.analysis_tokens and not self.show_thinking:
            self.console.print(f"thought for {stats.analysis_tokens} tokens", style="dim", markup=False)
        if result.turn.final:
            self.console.print(Markdown(result.turn.final))
        note = STOP_NOTES.get(stats.stop_reason)
        if note:
            self.console.print(f"[{note}]", style="dim", markup=False)


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
        self._view: _ReplyView | None = None
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
        view = self._view = _ReplyView(self.console, self.show_thinking)
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


@contextmanager
def _sigint_deferred(reraise: bool = True) -> Iterator[None]:
    """Hold Ctrl-C while the block runs; raise it afterwards (if reraise)."""
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: caught.append(1))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and reraise:
        raise KeyboardInterrupt


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
