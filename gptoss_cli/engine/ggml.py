"""ctypes bindings to ggml's backend API (devices, buffer types) that llama-cpp-python does not wrap.

ggml.h's handles (`ggml_backend_dev_t`, `ggml_backend_buffer_type_t`, ...) are opaque pointers here. Every
function is looked up once per process in the libraries llama-cpp-python installed (`llama_cpp/lib`).
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path
from types import SimpleNamespace

# enum ggml_backend_dev_type (ggml-backend.h)
DEV_CPU, DEV_GPU, DEV_IGPU, DEV_ACCEL = 0, 1, 2, 3

_P, _S = ctypes.c_void_p, ctypes.c_char_p
# name: (library, argtypes, restype); the registry lives in libggml, everything else in libggml-base.
_SIGNATURES = {
    "ggml_backend_dev_count": ("ggml", [], ctypes.c_size_t),
    "ggml_backend_dev_get": ("ggml", [ctypes.c_size_t], _P),
    "ggml_backend_dev_by_type": ("ggml", [ctypes.c_int], _P),
    "ggml_backend_reg_by_name": ("ggml", [_S], _P),
    "ggml_backend_dev_type": ("ggml-base", [_P], ctypes.c_int),
    "ggml_backend_dev_name": ("ggml-base", [_P], _S),
    "ggml_backend_dev_description": ("ggml-base", [_P], _S),
    "ggml_backend_dev_memory": ("ggml-base", [_P, ctypes.POINTER(ctypes.c_size_t),
                                              ctypes.POINTER(ctypes.c_size_t)], None),
    "ggml_backend_dev_backend_reg": ("ggml-base", [_P], _P),
    "ggml_backend_dev_buffer_type": ("ggml-base", [_P], _P),
    "ggml_backend_reg_get_proc_address": ("ggml-base", [_P, _S], _P),
    "ggml_backend_buft_name": ("ggml-base", [_P], _S),
    "ggml_backend_cpu_buffer_type": ("ggml-base", [], _P),
    "ggml_backend_cpu_buffer_from_ptr": ("ggml-base", [_P, ctypes.c_size_t], _P),
    "ggml_backend_buffer_get_type": ("ggml-base", [_P], _P),
    "ggml_backend_buffer_free": ("ggml-base", [_P], None),
    "ggml_backend_register": ("ggml", [_P], None),
    "ggml_backend_reg_name": ("ggml-base", [_P], _S),
    "ggml_backend_reg_dev_count": ("ggml-base", [_P], ctypes.c_size_t),
    "ggml_backend_reg_dev_get": ("ggml-base", [_P, ctypes.c_size_t], _P),
    "ggml_set_abort_callback": ("ggml-base", [_P], _P),
}
# ggml-rpc.h functions, reached through the RPC backend's get_proc_address as llama.cpp's tools do.
RPC_ADD_SERVER = ctypes.CFUNCTYPE(_P, _S)
RPC_START_SERVER = ctypes.CFUNCTYPE(None, _S, _S, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(_P))
# ggml_abort_callback_t: void (*)(const char * error_message)
ABORT_CALLBACK = ctypes.CFUNCTYPE(None, _S)
# ggml_backend_dev_get_extra_bufts_t: the CPU backend's list of extra buffer types (AMX, CPU_REPACK, ...)
_EXTRA_BUFTS_FN = ctypes.CFUNCTYPE(ctypes.POINTER(_P), _P)


@cache
def lib() -> SimpleNamespace:
    """ggml's backend functions with their C signatures; llama.cpp's backends are initialised first."""
    import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library

    from gptoss_cli.engine.llama_glue import llama_log

    llama_log()
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    libs = {name: _loaded(name) or load_shared_library(name, lib_dir) for name in ("ggml", "ggml-base")}
    fns = {}
    for name, (where, args, res) in _SIGNATURES.items():
        fn = getattr(libs[where], name)
        fn.argtypes, fn.restype = args, res
        fns[name.removeprefix("ggml_backend_")] = fn
    return SimpleNamespace(**fns)


def _loaded(name: str) -> ctypes.CDLL | None:
    """The copy of lib{name} that libllama itself loaded, by its soname; None where that does not apply.

    A wheel holds libggml.so, libggml.so.0 and libggml.so.0.x as separate files, and libllama links the
    `.so.0` one: dlopen'ing another by path maps a second, separate ggml (its own backend registry, its
    own abort callback), which llama.cpp never sees.
    """
    if not hasattr(os, "RTLD_NOLOAD"):
        return None
    for soname in (f"lib{name}.so.0", f"lib{name}.0.dylib"):
        try:
            return ctypes.CDLL(soname, mode=os.RTLD_NOLOAD)
        except OSError:
            continue
    return None


def devices() -> list[int]:
    """Every registered device handle, in llama.cpp's order."""
    g = lib()
    return [g.dev_get(i) for i in range(g.dev_count())]


def has_gpu_device() -> bool:
    """Whether llama.cpp can offload layers: a GPU (or a registered RPC worker, which ggml types as a GPU).

    Not `llama_supports_gpu_offload()`: that is true in every build with the RPC backend, GPU or not.
    """
    g = lib()
    return any(g.dev_type(d) in (DEV_GPU, DEV_IGPU) for d in devices())


def rpc_proc(name: str, prototype):
    """A function of ggml's RPC backend by name, as prototype; None when this build has no RPC backend."""
    g = lib()
    reg = g.reg_by_name(b"RPC")
    addr = g.reg_get_proc_address(reg, name.encode()) if reg else None
    return prototype(addr) if addr else None


def device_memory(dev: int) -> tuple[int, int]:
    """(free, total) bytes of a device; for an RPC device this asks the worker."""
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    lib().dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value


def cpu_device() -> int:
    """The CPU device's handle."""
    return lib().dev_by_type(DEV_CPU)


def cpu_extra_buffer_types() -> dict[str, int]:
    """The CPU device's extra buffer types by name (e.g. AMX, CPU_REPACK), in llama.cpp's preference order."""
    g = lib()
    dev = cpu_device()
    addr = g.reg_get_proc_address(g.dev_backend_reg(dev), b"ggml_backend_dev_get_extra_bufts")
    if not addr:
        return {}
    arr = _EXTRA_BUFTS_FN(addr)(dev)
    out: dict[str, int] = {}
    i = 0
    while arr and arr[i]:
        out[g.buft_name(arr[i]).decode()] = arr[i]
        i += 1
    return out


@cache
def plain_cpu_buffer_type() -> int:
    """A host buffer type llama.cpp takes as is in a tensor override: ggml's "CPU_Mapped" type.

    An override to `ggml_backend_cpu_buffer_type()` itself is re-resolved by llama.cpp over the CPU's extra
    buffer types (AMX first); this twin (same allocator, host memory, standard layout) is not.
    """
    g = lib()
    scratch = ctypes.create_string_buffer(256)
    aligned = -(-ctypes.addressof(scratch) // 64) * 64   # ggml asserts TENSOR_ALIGNMENT (32)
    buf = g.cpu_buffer_from_ptr(aligned, 64)
    try:
        return g.buffer_get_type(buf)
    finally:
        g.buffer_free(buf)


class ThreadpoolParams(ctypes.Structure):
    """struct ggml_threadpool_params (ggml.h), as ggml_threadpool_params_init fills it."""

    _fields_ = [("cpumask", ctypes.c_bool * 512), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


@cache
def vec_soft_max():
    """ggml-cpu's vectorised `y[i] = exp(x[i] - max)` over float32 arrays, returning the sum as a double
    (`ggml_vec_soft_max_f32(n, y, x, max)`, the SIMD kernel of llama.cpp's softmax op);
    None where this build's CPU backend does not export it (a backend loaded by path, GGML_BACKEND_DL)."""
    lib()
    cpu = _loaded("ggml-cpu")
    fn = getattr(cpu, "ggml_vec_soft_max_f32", None) if cpu is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_int, _P, _P, ctypes.c_float], ctypes.c_double
    return fn


_THREADPOOL_NEW = ctypes.CFUNCTYPE(_P, ctypes.POINTER(ThreadpoolParams))
_THREADPOOL_FREE = ctypes.CFUNCTYPE(None, _P)


def threadpool_new(n_threads: int) -> tuple[int, object] | None:
    """A persistent CPU threadpool (llama.cpp's tools attach one; without it every decode starts and joins
    its worker threads): (handle, free function), or None when the CPU backend does not offer one."""
    g = lib()
    cpu = g.reg_by_name(b"CPU")
    new = g.reg_get_proc_address(cpu, b"ggml_threadpool_new") if cpu else None
    free = g.reg_get_proc_address(cpu, b"ggml_threadpool_free") if cpu else None
    if not new or not free:
        return None
    params = ThreadpoolParams(n_threads=n_threads, prio=0, poll=50, strict_cpu=False, paused=False)
    pool = _THREADPOOL_NEW(new)(ctypes.byref(params))
    return (pool, _THREADPOOL_FREE(free)) if pool else None


def missing_backends(names: list[str]) -> list[str]:
    """The backend registry names (RPC, CUDA, MTL) the installed llama.cpp lacks; all of them without one."""
    try:
        g = lib()
    except ImportError:
        return list(names)
    return [n for n in names if not g.reg_by_name(n.encode())]


if __name__ == "__main__":
    # `make install`: python -m gptoss_cli.engine.ggml RPC [CUDA|MTL] exits 1 when a backend is missing.
    import sys

    missing = missing_backends(sys.argv[1:])
    if missing:
        print(f"llama-cpp-python lacks the ggml backend(s): {', '.join(missing)}", file=sys.stderr)
    sys.exit(1 if missing else 0)
