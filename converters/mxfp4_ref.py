"""Reference number formats in numpy: bf16 (round to nearest even) and OCP MXFP4 (e2m1 + e8m0 scale).

MXFP4 follows the OCP Microscaling spec v1.0: blocks of 32 elements share one power-of-two scale
X = 2^(floor(log2(amax)) - 2) (2 is e2m1's emax), each element is v / X rounded to the nearest e2m1
value (ties to even, saturating at +-6). The layout is gpt-oss's: one byte holds two 4-bit codes,
low nibble the even element, high nibble the odd one; the scale byte is the exponent + 127.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
SCALE_BIAS = 127
E2M1_EMAX = 2
# Midpoints between consecutive magnitudes and whether a tie there rounds up (to the even code).
_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) of float32 values, rounded to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out


def _e2m1_codes(scaled: np.ndarray) -> np.ndarray:
    """4-bit e2m1 codes of values already divided by their block scale."""
    mag = np.abs(scaled)
    code = np.zeros(scaled.shape, dtype=np.uint8)
    for mid, tie_up in _MIDPOINTS:
        code += (mag >= mid) if tie_up else (mag > mid)
    code |= np.signbit(scaled).astype(np.uint8) << np.uint8(3)
    return code


def quantize_mxfp4(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 of x along its last axis (a multiple of 32): blocks uint8 [..., K/32, 16], scales uint8 [..., K/32]."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % BLOCK:
        raise ValueError(f"last dimension {x.shape[-1]} is not a multiple of {BLOCK}")
    lead = x.shape[:-1]
    groups = x.reshape(-1, BLOCK)
    amax = np.abs(groups).max(axis=1)
    # frexp: amax = m * 2^e with m in [0.5, 1), so floor(log2(amax)) = e - 1 exactly.
    _, e = np.frexp(amax)
    exponent = np.where(amax > 0, e.astype(np.int32) - 1 - E2M1_EMAX, -SCALE_BIAS)
    # e8m0 encodes 2^-127 .. 2^127; 255 is NaN, so the byte stays within 0..254.
    exponent = np.clip(exponent, -SCALE_BIAS, SCALE_BIAS)
    scaled = np.ldexp(groups, -exponent[:, None]).astype(np.float32)
    codes = _e2m1_codes(scaled)
    packed = codes[:, 0::2] | (codes[:, 1::2] << np.uint8(4))
    blocks = packed.reshape(*lead, x.shape[-1] // BLOCK, BLOCK // 2)
    scales = (exponent + SCALE_BIAS).astype(np.uint8).reshape(*lead, x.shape[-1] // BLOCK)
    return blocks, scales
