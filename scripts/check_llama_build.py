"""Exit 0 when the installed llama-cpp-python's ggml has every backend named on the command line (e.g. RPC CUDA).

`make install` runs it to catch a llama.cpp built without the RPC backend (pip reuses a cached wheel
whatever CMAKE_ARGS say). It needs only llama-cpp-python, not gptoss itself.

    python scripts/check_llama_build.py RPC [CUDA|MTL]
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path


def missing_backends(names: list[str]) -> list[str]:
    """The backend registry names llama.cpp's ggml lacks; all of names when llama-cpp-python is absent."""
    try:
        import llama_cpp
        from llama_cpp._ctypes_extensions import load_shared_library
    except ImportError:
        return names
    llama_cpp.llama_backend_init()
    ggml = load_shared_library("ggml", Path(llama_cpp.__file__).parent / "lib")
    ggml.ggml_backend_reg_by_name.argtypes, ggml.ggml_backend_reg_by_name.restype = [ctypes.c_char_p], ctypes.c_void_p
    return [n for n in names if not ggml.ggml_backend_reg_by_name(n.encode())]


if __name__ == "__main__":
    missing = missing_backends(sys.argv[1:])
    if missing:
        print(f"llama-cpp-python lacks the ggml backend(s): {', '.join(missing)}", file=sys.stderr)
    sys.exit(1 if missing else 0)
