"""One streamed reply on the terminal: the thinking dimmed (or counted), the answer as live Markdown, and a
note on how the turn ended."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from gptoss_cli.engine.session import TurnResult

STOP_NOTES = {"length": "stopped at the token limit (--max-tokens or the context size)",
              "interrupted": "interrupted", "call": "the model asked for a tool call; start gptoss chat with --mcp "
              "to give it tools", "tool_limit": "stopped: too many tool calls (--max-tool-calls)",
              "eos": "the model ended the text"}


class _Tail:
    """A Markdown renderable that shows only its last screenful, so Live never scrolls."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(Markdown("".join(self.parts)), options, pad=False)
        for line in lines[-max(console.size.height - 2, 3):]:
            yield from line
            yield Segment.line()


class ReplyView:
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
            with sigint_deferred():  # a half-started Live cannot be stopped
                self.live.start()

    def pause(self) -> None:
        """Take the live view off the screen (before a question); the next text starts a new one."""
        if self.live is not None:
            with sigint_deferred(reraise=False):
                self.live.stop()
            self.live, self.final = None, []
        elif self.mid_line:
            self.console.print()
            self.mid_line = False

    def close(self, result: TurnResult | None) -> None:
        """Replace the live view with the finished answer and a note on how it ended."""
        if self.live is not None:
            with sigint_deferred(reraise=False):  # the reply is over; a late Ctrl-C changes nothing
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


@contextmanager
def sigint_deferred(reraise: bool = True) -> Iterator[None]:
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
