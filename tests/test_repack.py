"""The compiled MXFP4 repack (converters/_repack.c) against the numpy one and against gguf-py's dequantizer."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from converters import mxfp4
from converters.mxfp4 import Scratch, repack_hf_to_ggml, repack_rows
from converters.tensor_map import EVEN, ODD

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def _hf_values(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """OCP MXFP4 in gpt-oss's layout, decoded directly: low nibble first, scale 2^(e - 127)."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    return E2M1[codes] * np.ldexp(1.0, scales.astype(np.int32) - 127)[..., None]


@pytest.fixture
def expert():
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (12, 5, 16), dtype=np.uint8)
    blocks[0, 0] = np.arange(16, dtype=np.uint8) * 17     # every nibble value at every position
    blocks[1, 0] = np.arange(240, 256, dtype=np.uint8)
    scales = rng.integers(100, 150, (12, 5), dtype=np.uint8)
    return blocks, scales


def test_the_kernel_is_built():
    assert mxfp4._kernel is not None, "`make install` builds converters/_repack.c (pip install -e .)"


@pytest.mark.parametrize("rows", [None, EVEN, ODD, slice(2, 11, 3), slice(5, 6)], ids=str)
def test_compiled_and_numpy_repack_give_the_same_bytes(expert, rows):
    blocks, scales = expert
    got = repack_rows(blocks, scales, rows, Scratch()).copy()
    want = repack_hf_to_ggml(blocks[rows or slice(None)], scales[rows or slice(None)])
    np.testing.assert_array_equal(got, want)
    decoded = dequantize(got, T.MXFP4).reshape(got.shape[0], -1)
    np.testing.assert_array_equal(decoded, _hf_values(blocks[rows or slice(None)],
                                                      scales[rows or slice(None)]).reshape(got.shape[0], -1))


def test_the_kernel_refuses_buffers_that_do_not_match(expert):
    blocks, scales = expert
    if mxfp4._kernel is None:
        pytest.skip("kernel not built")
    out = np.empty((12, 5 * 17), np.uint8)
    with pytest.raises(ValueError, match="do not match"):
        mxfp4._kernel(blocks, scales, out, 5, 1, 1)          # 12 rows from row 1 run past the end
    with pytest.raises(ValueError, match="do not match"):
        mxfp4._kernel(blocks[:, :4].copy(), scales, out, 5, 0, 1)
