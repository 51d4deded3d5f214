"""llama.cpp's own row conversion and quantization, called through llama-cpp-python's libggml.

ctypes releases the GIL during each call, so chunks convert in parallel on a thread pool.
"""

from __future__ import annotations

import ctypes
from functools import cache, lru_cache

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

# Types converted with the CPU backend's vectorised row function (the one llama.cpp applies to activations).
# For Q8_0 it equals the reference quantizer except for rare rounding ties (a code off by one).
SIMD_TYPES = (T.Q8_0,)
_ROW_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _TypeTraitsCpu(ctypes.Structure):
    """struct ggml_type_traits_cpu (ggml-cpu.h)."""

    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


@cache
def _from_float(qtype: T):
    lib = _lib()
    lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_TypeTraitsCpu)
    traits = lib.ggml_get_type_traits_cpu(int(qtype)).contents
    return _ROW_FN(traits.from_float) if traits.from_float else None


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    from llama_cpp._ggml import libggml

    libggml.ggml_cpu_init()  # fills the CPU backend's fp16 tables
    libggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    libggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    for name in ("ggml_cpu_bf16_to_fp32", "ggml_cpu_fp32_to_fp16"):
        getattr(libggml, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(libggml, name).restype = None
    return libggml


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) -> float32, exactly (bf16 is the top half of a float32)."""
    src = np.ascontiguousarray(bits, dtype=np.uint16)
    out = np.empty(src.shape, dtype=np.float32)
    _lib().ggml_cpu_bf16_to_fp32(src.ctypes.data, out.ctypes.data, src.size)
    return out


def quantize_rows(values: np.ndarray, qtype: T) -> np.ndarray:
    """float32 rows [..., n] -> GGML type bytes, by llama.cpp's own row converters and quantizer."""
    src = np.ascontiguousarray(values, dtype=np.float32)
    n_per_row = src.shape[-1]
    nrows = src.size // n_per_row if n_per_row else 0
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if n_per_row % block:
        raise ValueError(f"row length {n_per_row} is not a multiple of {block} for {qtype.name}")
    out = np.empty(nrows * (n_per_row // block) * type_size, dtype=np.uint8)
    if qtype == T.F16:
        _lib().ggml_cpu_fp32_to_fp16(src.ctypes.data, out.ctypes.data, src.size)
    elif qtype in SIMD_TYPES and _from_float(qtype) is not None:
        _from_float(qtype)(src.ctypes.data, out.ctypes.data, src.size)
    elif nrows:
        written = _lib().ggml_quantize_chunk(int(qtype), src.ctypes.data, out.ctypes.data, 0, nrows,
                                             n_per_row, None)
        if written != out.nbytes:
            raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}")
    return out
