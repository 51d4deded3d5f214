"""llama.cpp's log sink: quiet by default, echoed with --verbose, recorded while a model loads.

gptoss loads models with the low-level API rather than `llama_cpp.Llama` (engine/loader.py), because `Llama`
builds its `llama_model_params` and loads in one step, leaving no way to set `tensor_buft_overrides`.
"""

from __future__ import annotations

import ctypes
import sys
from collections import deque

_LOG_ERROR, _LOG_CONT = 4, 5   # enum ggml_log_level (ggml.h)


class LlamaLog:
    """llama.cpp's log sink: echoes to stderr when verbose, records lines while `capture` is a list."""

    def __init__(self) -> None:
        import llama_cpp

        self.verbose = False
        self.capture: list[str] | None = None
        self.recent_errors: deque[str] = deque(maxlen=8)
        self._partial = ""
        self._cb = llama_cpp.llama_log_callback(self._on_log)  # kept alive for the process
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        s = text.decode("utf-8", "replace") if text else ""
        if self.verbose:
            sys.stderr.write(s)
        pieces = (self._partial + s).split("\n")
        self._partial = pieces.pop()
        for line in pieces:
            if self.capture is not None:
                self.capture.append(line)
            if level == _LOG_ERROR or (level == _LOG_CONT and "error" in line):
                self.recent_errors.append(line.strip())

    def why(self, fallback: str) -> str:
        """The most telling error llama.cpp logged: its 'error loading model' line, else the last one."""
        errors = list(self.recent_errors)
        for line in reversed(errors):
            if "error loading model: " in line:
                return line.split("error loading model: ", 1)[1]
        return errors[-1] if errors else fallback


_LOG: LlamaLog | None = None


def llama_log() -> LlamaLog:
    """The process's one log sink; the first call installs it and initialises llama.cpp's backends."""
    global _LOG
    if _LOG is None:
        import llama_cpp

        _LOG = LlamaLog()
        llama_cpp.llama_backend_init()
    return _LOG


def stop_echo() -> None:
    """Stop echoing llama.cpp's log to stderr, if the sink is installed."""
    if _LOG is not None:
        _LOG.verbose = False
