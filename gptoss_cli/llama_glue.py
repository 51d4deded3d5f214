"""ctypes glue to llama.cpp that llama-cpp-python does not wrap: its log sink, and tensor buffer-type overrides.

The backend loads models with the low-level API rather than `llama_cpp.Llama`, because `Llama` builds its
`llama_model_params` and loads in one step, leaving no way to set `tensor_buft_overrides` (the mechanism
behind llama.cpp's `--cpu-moe` / `--n-cpu-moe`). The override array is built here.
"""

from __future__ import annotations

import ctypes
import sys
from collections import deque
from pathlib import Path

GGML_BACKEND_DEVICE_TYPE_CPU = 0
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


def default_gpu_layers() -> int:
    """All layers when this llama.cpp build has a GPU backend, else none."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def cpu_buffer_type() -> int:
    """The CPU buffer type pointer llama.cpp compares overrides against (ggml_backend_cpu_buffer_type)."""
    import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for name in ("ggml-base", "ggml-cpu", "ggml"):
        try:
            lib = load_shared_library(name, lib_dir)
            fn = lib.ggml_backend_cpu_buffer_type
        except (OSError, RuntimeError, FileNotFoundError, AttributeError):
            continue
        fn.argtypes, fn.restype = [], ctypes.c_void_p
        return fn()
    lib = load_shared_library("ggml", lib_dir)  # dynamic-backend builds: ask the CPU device
    lib.ggml_backend_dev_by_type.argtypes, lib.ggml_backend_dev_by_type.restype = [ctypes.c_int], ctypes.c_void_p
    dev = lib.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
    base = load_shared_library("ggml-base", lib_dir)
    base.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    return base.ggml_backend_dev_buffer_type(dev)


class _BuftOverride(ctypes.Structure):
    # struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def override_array(patterns: list[str]) -> ctypes.Array | None:
    """A NULL-terminated C array of overrides sending every pattern to the CPU buffer type."""
    if not patterns:
        return None
    buft = cpu_buffer_type()
    arr = (_BuftOverride * (len(patterns) + 1))()
    for slot, pattern in zip(arr, patterns):
        slot.pattern, slot.buft = pattern.encode(), buft
    return arr  # the last slot stays {NULL, NULL}; ctypes keeps the pattern bytes alive with arr
