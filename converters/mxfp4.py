"""MXFP4 facts and the bit-exact repack from the Hugging Face layout to GGML's block_mxfp4."""

from __future__ import annotations

import numpy as np

GGML_BLOCK_BYTES = 17      # block_mxfp4 = { uint8 e; uint8 qs[16]; }

# Nibble order differs:
#   Hugging Face: byte j of a block holds element 2j in its low nibble and element 2j+1 in its high nibble.
#   GGML:         qs[j] holds element j in its low nibble and element j+16 in its high nibble.
# The scale byte is the same E8M0 value in both (GGML stores doubled fp4 values and halves the scale).
_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_GGML_BLOCK = np.dtype([("e", np.uint8), ("qs", "V16")])   # packed: itemsize 17


def repack_hf_to_ggml(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """HF blocks [..., nb, 16] + scales [..., nb] -> GGML block_mxfp4 bytes [..., nb * 17]."""
    if blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not match")
    # Eight HF bytes at a time: byte k of `lo` holds elements 2k, 2k+1; byte k of `hi` holds 2k+16, 2k+17.
    halves = np.ascontiguousarray(blocks).reshape(-1, 2, 8).view("<u8")[..., 0]
    lo, hi = halves[:, 0], halves[:, 1]
    even = (lo & _LOW_NIBBLES) | ((hi & _LOW_NIBBLES) << np.uint64(4))   # GGML qs[2k]
    odd = ((lo >> np.uint64(4)) & _LOW_NIBBLES) | (hi & ~_LOW_NIBBLES)    # GGML qs[2k+1]
    qs = np.empty((lo.size, 8, 2), dtype=np.uint8)
    qs[..., 0] = even.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    qs[..., 1] = odd.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    out = np.empty(lo.size, dtype=_GGML_BLOCK)
    out["e"] = scales.reshape(-1)
    out["qs"] = qs.reshape(-1, 16).view("V16")[:, 0]
    return out.view(np.uint8).reshape(scales.shape[:-1] + (scales.shape[-1] * GGML_BLOCK_BYTES,))
