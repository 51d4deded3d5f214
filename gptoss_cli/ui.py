"""All Rich output: consoles, progress bars, tables, JSON. Results on stdout, the rest on stderr."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

# C0 controls (but tab and newline), DEL and the C1 controls: shown as symbols, so no escape sequence
# (CSI, OSC, DCS...) from a model, a tool, a file name or a transcript ever reaches the terminal as one.
# The bidi embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069) are shown as \u202e: they
# reorder what the terminal shows (Trojan Source, CVE-2021-42574). The marks LRM, RLM and ALM stay: RTL text
# uses them, and they cannot override the order of letters.
_CONTROL = re.compile(r"\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _shown(match: re.Match) -> str:
    ch = match.group()
    if ch == "\r\n":
        return "\n"  # a CRLF line end is a line end
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # ␛ ␇ ␈ ␍ ...: Unicode's control pictures
    if code == 0x7f:
        return "\u2421"
    return f"\\x{code:02x}" if code <= 0xff else f"\\u{code:04x}"


def visible(text: str) -> str:
    """Text that is safe to write to a terminal: control and bidi characters made visible, tabs and newlines kept."""
    return _CONTROL.sub(_shown, text)


def result(text: str, stream=None) -> None:
    """Write a command's result text to stdout: as is when piped, control characters made visible on a terminal."""
    stream = stream or sys.stdout
    stream.write(visible(text) if stream.isatty() else text)
    stream.flush()


class Writer:
    """Streams model text to a stream: as is when piped, control characters made visible on a terminal
    (a CR that ends one piece waits for the next, so a CRLF split between pieces is still a line end)."""

    def __init__(self, stream) -> None:
        self.stream, self.tty, self.held = stream, stream.isatty(), ""

    def shown(self, text: str) -> str:
        """One piece with control characters made visible (a trailing CR is held for the next piece)."""
        text, self.held = self.held + text, ""
        if text.endswith("\r"):
            text, self.held = text[:-1], "\r"
        return visible(text)

    def write(self, text: str) -> None:
        """Write one piece and flush."""
        self.stream.write(self.shown(text) if self.tty else text)
        self.stream.flush()

    def close(self) -> None:
        """Write what is held back."""
        if self.held:
            self.stream.write(visible(self.held))
            self.held = ""
            self.stream.flush()


def _label(text: str) -> str:
    """A progress or spinner label (Rich reads those as markup): control characters and brackets made inert."""
    return escape(visible(text))


def _color_ok(stream) -> bool:
    return not os.environ.get("NO_COLOR") and stream.isatty()


def _console(stream) -> Console:
    color = _color_ok(stream)
    # color_system=None makes Rich emit no ANSI styling at all (no_color alone still writes bold/dim).
    return Console(file=stream, color_system="auto" if color else None, force_terminal=color or None,
                   highlight=False, soft_wrap=not stream.isatty())


out = _console(sys.stdout)
err = _console(sys.stderr)


def info(message: str) -> None:
    """A status line on stderr."""
    err.print(visible(message), markup=False)


def warn(message: str) -> None:
    """A warning line on stderr."""
    err.print(f"warning: {visible(message)}", markup=False, style="yellow")


def error(message: str) -> None:
    """The one-line error of the conventions, on stderr."""
    err.print(f"error: {visible(message)}", markup=False, style="bold red")


def print_json(data: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]],
          right: Iterable[str] = (), to_stderr: bool = False) -> None:
    """Print a table of rows to stdout (or stderr); columns named in `right` are right-aligned."""
    right = set(right)
    t = Table(title=Text(visible(title)) if title else None, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        t.add_row(*[Text(visible(str(v))) for v in row])
    (err if to_stderr else out).print(t)


@contextmanager
def byte_progress(description: str, total: int | None = None) -> Iterator[Any]:
    """A progress bar on stderr over bytes, with MB/s and ETA; yields advance(n_bytes, total=None, label=None)."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False,
                        disable=not err.is_terminal and not os.environ.get("GPTOSS_PROGRESS"))
    with progress:
        task = progress.add_task(_label(description), total=total)

        def advance(n: int, total: int | None = None, label: str | None = None) -> None:
            progress.update(task, advance=n, total=total, description=_label(label or description))

        yield advance


class _Transfer:
    """Overall + per-file byte bars for parallel downloads (methods match hub.Callbacks; thread-safe)."""

    def __init__(self, progress: Progress, overall: Any, done: dict[str, int]) -> None:
        self.progress, self.overall, self.done = progress, overall, dict(done)
        self.tasks: dict[str, TaskID] = {}

    def start(self, name: str, total: int, done: int) -> None:
        self.progress.update(self.overall, advance=done - self.done.get(name, 0))
        self.done[name] = done
        if name in self.tasks:
            self.progress.reset(self.tasks[name], total=total, completed=done)
        else:
            self.tasks[name] = self.progress.add_task(_label(f"  {name}"), total=total, completed=done)

    def advance(self, name: str, n: int) -> None:
        self.done[name] = self.done.get(name, 0) + n
        self.progress.update(self.overall, advance=n)
        if name in self.tasks:
            self.progress.update(self.tasks[name], advance=n)

    def finish(self, name: str, size: int) -> None:
        task = self.tasks.pop(name, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.console.print(f"  done {visible(name)} ({human_bytes(size)})", markup=False, highlight=False)

    def retry(self, name: str, why: str) -> None:
        self.progress.console.print(f"warning: {visible(name)}: {visible(why)}", markup=False, style="yellow")

    def stopping(self) -> None:
        self.progress.console.print("interrupted: stopping the downloads; finished bytes are kept for the "
                                    "next run", markup=False, highlight=False)


@contextmanager
def transfer_progress(total: int, done: dict[str, int]) -> Iterator[_Transfer]:
    """An overall bar plus one bar per active file on stderr (bytes, MB/s, ETA); `done` = bytes already here."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False,
                        disable=not err.is_terminal and not os.environ.get("GPTOSS_PROGRESS"))
    with progress:
        overall = progress.add_task("[bold]total", total=total, completed=sum(done.values()))
        yield _Transfer(progress, overall, done)


def confirm(question: str) -> bool:
    """Ask a yes/no question on stderr; default no."""
    err.print(f"{visible(question)} [y/N] ", markup=False, end="")
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


@contextmanager
def status(message: str) -> Iterator[None]:
    """A transient spinner with a message on stderr while work runs (nothing when stderr is not a terminal)."""
    if not err.is_terminal:
        yield
        return
    with err.status(_label(message)):
        yield


def err_table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]],
              right: Iterable[str] = ()) -> None:
    """Like `table`, but on stderr (information printed alongside another command's result)."""
    table(title, columns, rows, right, to_stderr=True)


@contextmanager
def count_progress(description: str, total: int | None = None) -> Iterator[Any]:
    """A progress bar on stderr over items (chunks, tensors) with rate and ETA; yields advance(n, total=None)."""
    from rich.progress import MofNCompleteColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
                        disable=not err.is_terminal and not os.environ.get("GPTOSS_PROGRESS"))
    with progress:
        task = progress.add_task(_label(description), total=total)

        def advance(n: int, total: int | None = None) -> None:
            progress.update(task, advance=n, total=total)

        yield advance
