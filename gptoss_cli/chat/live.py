"""A live region at the bottom of the terminal that is redrawn in place and never leaves copies behind.

Each frame is drawn with the terminal's autowrap off (DECAWM, `ESC [?7l` ... `ESC [?7h`), so every line
takes exactly one row even where the terminal measures a character wider than Rich does (wide, combining
or mixed-script text, U+FFFD): a line that does not fit is cut at the right edge instead of wrapping onto a
row the cursor-up of the next frame would miss. Only the last screenful minus one row is drawn, so the
region never scrolls its own top into the scrollback.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType

AUTOWRAP_OFF, AUTOWRAP_ON = "\x1b[?7l", "\x1b[?7h"
ERASE_DOWN = "\x1b[J"


class LiveRegion:
    """Redraws `render()` in place (at most `fps` times a second) until stop(), which erases it."""

    def __init__(self, console: Console, render: Callable[[], RenderableType], fps: float = 8) -> None:
        self.console, self.render = console, render
        self.interval = self.min_interval = 1 / fps
        self.drawn = 0      # rows of the region on the screen; the cursor is on its last one
        self.last = 0.0
        self.enabled = console.is_terminal

    def update(self, force: bool = False) -> None:
        """Draw the current state, unless the last frame was drawn less than an interval ago."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < self.interval):
            return
        lines = self._lines()
        # A frame costs a render of the whole text: keep drawing it at most a third of the time.
        self.interval = max(self.min_interval, 3 * (time.monotonic() - now))
        self.last = time.monotonic()
        self._write(self._erase() + AUTOWRAP_OFF + "\r\n".join(lines) + AUTOWRAP_ON)
        self.drawn = len(lines)

    def stop(self) -> None:
        """Erase the region; the cursor is left where it began."""
        if self.enabled and self.drawn:
            self._write(self._erase())
        self.drawn = 0

    def _erase(self) -> str:
        if not self.drawn:
            return ""
        return "\r" + (f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else "") + ERASE_DOWN

    def _lines(self) -> list[str]:
        """The rendered lines (with their styles) that fit: the last screen height minus one."""
        width, height = self.console.size
        with self.console.capture() as capture:
            self.console.print(self.render(), width=width, crop=True)
        lines = capture.get().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines[-max(height - 1, 1):]

    def _write(self, frame: str) -> None:
        # The whole frame or nothing: a Ctrl-C in the middle would leave autowrap off.
        with sigint_deferred():
            self.console.file.write(frame)
            self.console.file.flush()


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
