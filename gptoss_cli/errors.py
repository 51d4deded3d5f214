"""The one error map: exception type -> exit code and one-line message."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from converters.errors import BadInputError, GptossError, RunFailure

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# Checked in order; the first matching type wins. A renderer gets an instance of its entry's type (Any: a list
# type cannot tie each renderer's parameter to its own entry).
ERROR_MAP: list[tuple[type[BaseException], int, Callable[[Any], str]]] = [
    (BadInputError, EXIT_BAD_INPUT, lambda e: e.message()),
    (RunFailure, EXIT_FAILED, lambda e: e.message()),
    (GptossError, EXIT_FAILED, lambda e: e.message()),
    (MemoryError, EXIT_FAILED, lambda e: "out of memory. Try a smaller model or context size."),
    (OSError, EXIT_FAILED, lambda e: f"{e.strerror or e} ({e.filename})." if getattr(e, "filename", None)
     else f"{e}."),
]


def exit_code_and_message(exc: BaseException) -> tuple[int, str]:
    """Exit code and message for an exception, by the error map."""
    for exc_type, code, render in ERROR_MAP:
        if isinstance(exc, exc_type):
            return code, render(exc)
    return EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc}. Rerun with GPTOSS_DEBUG=1 and report it."


def run_guarded(fn: Callable[[], T]) -> T:
    """Run a command body; map errors to one stderr line and the documented exit code."""
    from gptoss_cli import ui

    try:
        return fn()
    except KeyboardInterrupt:
        ui.error("interrupted.")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - this is the one place errors are formatted
        if os.environ.get("GPTOSS_DEBUG") == "1":
            traceback.print_exc()
        code, message = exit_code_and_message(exc)
        ui.error(message)
        sys.exit(code)
