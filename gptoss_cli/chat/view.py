"""One streamed reply on the terminal: the thinking dimmed (or counted), the answer as live Markdown, and a
note on how the turn ended."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.markdown import Markdown
from rich.text import Text

from gptoss_cli import ui
from gptoss_cli.chat.live import LiveRegion, sigint_deferred
from gptoss_cli.engine.session import TurnResult

STOP_NOTES = {"length": "stopped at the token limit (--max-tokens or the context size)",
              "interrupted": "interrupted", "call": "the model asked for a tool call; start gptoss chat with --mcp "
              "to give it tools", "tool_limit": "stopped: too many tool calls (--max-tool-calls)",
              "eos": "the model ended the text"}


def answer_markdown(text: str) -> Markdown:
    """The answer as Markdown, control characters made visible; a link shows its address, never hides it."""
    return Markdown(ui.visible(text), hyperlinks=False)


class ReplyView:
    """Streams one reply: thinking dimmed (or a counter), then the answer as live Markdown.

    Everything the model wrote is shown with control characters made visible (ui.visible)."""

    def __init__(self, console: Console, show_thinking: bool) -> None:
        self.console, self.show_thinking = console, show_thinking
        self.final: list[str] = []
        self.thinking = 0
        self.live: LiveRegion | None = None
        self.mid_line = False
        self.thought = ui.Writer(console.file)

    def _frame(self) -> RenderableType:
        if self.final:
            return answer_markdown("".join(self.final))
        return Text(f"thinking… {self.thinking} tokens" if self.thinking else "…", style="dim")

    def on_delta(self, channel: str, text: str) -> None:
        """Show one piece of generated text."""
        if channel == "final":
            self.final.append(text)
            self._live()
        elif self.show_thinking and self.live is None:
            self.console.print(self.thought.shown(text), style="dim", end="", markup=False, highlight=False,
                               soft_wrap=True)
            self.mid_line = not text.endswith("\n")
        else:
            self.thinking += 1
            self._live()

    def _live(self) -> None:
        if self.live is None:
            if self.mid_line:
                self.console.print()
            self.live = LiveRegion(self.console, self._frame)
        self.live.update()

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
            self.console.print(answer_markdown(result.turn.final))
        note = STOP_NOTES.get(stats.stop_reason)
        if note:
            self.console.print(f"[{note}]", style="dim", markup=False)
