"""MXFP4 facts and the bit-exact repack from the Hugging Face layout to GGML's block_mxfp4."""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np

_kernel: Callable[[np.ndarray, np.ndarray, np.ndarray, int, int, int], None] | None
try:
    from converters._repack import repack as _kernel  # built from _repack.c at install; optional
except ImportError:  # pragma: no cover - a build without a C compiler
    _kernel = None

GGML_BLOCK_BYTES = 17      # block_mxfp4 = { uint8 e; uint8 qs[16]; }

# Nibble order differs:
#   Hugging Face: byte j of a block holds element 2j in its low nibble and element 2j+1 in its high nibble.
#   GGML:         qs[j] holds element j in its low nibble and element j+16 in its high nibble.
# The scale byte is the same E8M0 value in both (GGML stores doubled fp4 values and halves the scale).
_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_FOUR, _EIGHT = np.uint64(4), np.uint16(8)
TILE_BLOCKS = 8192         # blocks repacked at a time: their temporaries (~0.5 MB) stay in L2
_GGML_BLOCK = np.dtype([("e", np.uint8), ("qs", "V16")])   # packed: itemsize 17


class Scratch:
    """Buffers reused from one repack to the next (one per thread), so that large chunks do not fault in
    fresh zeroed pages each time."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised array of this shape and dtype, backed by the buffer named key."""
        nbytes = prod(shape) * np.dtype(dtype).itemsize
        buf = self._bufs.get(key)
        if buf is None or buf.nbytes < nbytes:
            buf = self._bufs[key] = np.empty(nbytes, dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)


def repack_hf_to_ggml(blocks: np.ndarray, scales: np.ndarray, scratch: Scratch | None = None,
                      key: str = "out") -> np.ndarray:
    """HF blocks [..., nb, 16] + scales [..., nb] -> GGML block_mxfp4 bytes [..., nb * 17].

    blocks may be strided except along its last axis; with scratch, the result lives in its buffer `key`
    (valid until the next call that uses that key). Rows go in tiles whose temporaries stay in the CPU cache."""
    if blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not match")
    scratch = scratch or Scratch()
    if blocks.strides[-1] != 1:
        blocks = np.ascontiguousarray(blocks)
    nb = blocks.shape[-2] if blocks.ndim > 1 else 1
    rows_blocks, rows_scales = blocks.reshape(-1, nb, 16), scales.reshape(-1, nb)
    out = scratch.get(key, rows_scales.shape, _GGML_BLOCK)
    step = max(1, TILE_BLOCKS // max(nb, 1))
    for r in range(0, out.shape[0], step):
        _repack_tile(rows_blocks[r:r + step], rows_scales[r:r + step], out[r:r + step], scratch)
    return out.view(np.uint8).reshape(scales.shape[:-1] + (scales.shape[-1] * GGML_BLOCK_BYTES,))


def repack_rows(blocks: np.ndarray, scales: np.ndarray, rows: slice | None, scratch: Scratch,
                key: str = "out") -> np.ndarray:
    """Rows `rows` of one expert's HF blocks [R, nb, 16] and scales [R, nb] -> GGML bytes [n, nb * 17] in scratch.

    Uses the compiled kernel when it is built and the inputs are contiguous, else repack_hf_to_ggml."""
    rows = rows or slice(None)
    first, _, step = rows.indices(scales.shape[0])
    contiguous = blocks.flags.c_contiguous and scales.flags.c_contiguous and blocks.ndim == 3
    if _kernel is None or not contiguous or step < 0:
        return repack_hf_to_ggml(blocks[rows], scales[rows], scratch, key)
    if blocks.shape[2] != 16 or blocks.shape[:2] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not match")
    n, nb = len(range(scales.shape[0])[rows]), scales.shape[1]
    out = scratch.get(key, (n, nb * GGML_BLOCK_BYTES), np.uint8)
    if n:
        _kernel(blocks, scales, out, nb, first, step)
    return out


def _repack_tile(blocks: np.ndarray, scales: np.ndarray, out: np.ndarray, scratch: Scratch) -> None:
    """blocks [rows, nb, 16] and scales [rows, nb] into out [rows, nb] of GGML blocks."""
    # Eight HF bytes at a time: byte k of `lo` holds elements 2k, 2k+1; byte k of `hi` holds 2k+16, 2k+17.
    words = blocks.view("<u8")
    lo, hi = words[..., 0], words[..., 1]
    shape, n = lo.shape, lo.size
    even, odd, tmp = (scratch.get(k, shape, np.uint64) for k in ("even", "odd", "tmp"))
    np.bitwise_and(lo, _LOW_NIBBLES, out=even)                       # GGML qs[2k]
    np.bitwise_and(hi, _LOW_NIBBLES, out=tmp)
    np.left_shift(tmp, _FOUR, out=tmp)
    np.bitwise_or(even, tmp, out=even)
    np.right_shift(lo, _FOUR, out=odd)                               # GGML qs[2k+1]
    np.bitwise_and(odd, _LOW_NIBBLES, out=odd)
    np.bitwise_and(hi, _HIGH_NIBBLES, out=tmp)
    np.bitwise_or(odd, tmp, out=odd)
    # Interleave the bytes: 16-bit lane k = qs[2k] | qs[2k+1] << 8 (little-endian).
    qs, hi16 = scratch.get("qs", (n * 8,), np.uint16), scratch.get("hi16", (n * 8,), np.uint16)
    np.copyto(qs, even.reshape(-1).view(np.uint8), casting="unsafe")
    np.copyto(hi16, odd.reshape(-1).view(np.uint8), casting="unsafe")
    np.left_shift(hi16, _EIGHT, out=hi16)
    np.bitwise_or(qs, hi16, out=qs)
    out["e"] = scales
    out["qs"] = qs.view("V16").reshape(shape)
