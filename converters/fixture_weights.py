"""The random tensors of a fixture checkpoint: names and shapes of the release, an init that keeps the model
non-degenerate, values generated (and experts MXFP4-quantized) one bounded chunk at a time."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from converters.hf_tokenizer import VOCAB_SIZE
from converters.mxfp4_ref import float32_to_bf16_bits, quantize_mxfp4

if TYPE_CHECKING:
    from converters.fixture import FixtureShape

# Standard deviation of the output logits (next-token entropy about 10 nats, top-1 still well defined).
# With larger logits, or expert outputs as large as the residual stream, llama.cpp's own arithmetic noise
# (it quantizes activations to Q8_0 in MXFP4 and Q8_0 matmuls) alone exceeds the parity thresholds.
LOGIT_STD = 2.0
EXPERT_OUT_SCALE = 0.25  # expert down-projection output relative to a unit-variance init
DEAD_ROUTER_BIAS = -1e4  # a router bias that keeps an expert out of every token's top-k
CHUNK_VALUES = 4 << 20  # float32 values generated at once (16 MB)


@dataclass
class Tensor:
    """One safetensors entry whose bytes come from chunks(), generated on demand."""

    name: str
    dtype: str  # safetensors dtype: "BF16" or "U8"
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[bytes]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (2 if self.dtype == "BF16" else 1)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _normal_bf16(seed: int, name: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> Tensor:
    """A bf16 tensor of N(mean, std^2) values, generated a bounded number of rows at a time."""

    def chunks() -> Iterator[bytes]:
        rng = _rng(seed, name)
        row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        rows, step = shape[0], max(1, CHUNK_VALUES // row)
        for start in range(0, rows, step):
            count = min(step, rows - start) * row
            values = rng.standard_normal(count, dtype=np.float32) * np.float32(std) + np.float32(mean)
            yield float32_to_bf16_bits(values).tobytes()

    return Tensor(name, "BF16", shape, chunks)


class _Experts:
    """One MXFP4 expert projection [E, rows, cols]: blocks stream per expert, scales are kept for later."""

    def __init__(self, seed: int, name: str, experts: int, rows: int, cols: int, std: float) -> None:
        self.seed, self.name, self.std = seed, name, std
        self.experts, self.rows, self.cols = experts, rows, cols
        self._scales: list[bytes] | None = None

    def tensors(self) -> list[Tensor]:
        groups = self.cols // 32
        return [
            Tensor(f"{self.name}_blocks", "U8", (self.experts, self.rows, groups, 16), self._blocks),
            Tensor(f"{self.name}_scales", "U8", (self.experts, self.rows, groups), self._scales_chunks),
        ]

    def _blocks(self) -> Iterator[bytes]:
        rng, scales = _rng(self.seed, self.name), []
        for _ in range(self.experts):
            weight = rng.standard_normal((self.rows, self.cols), dtype=np.float32) * np.float32(self.std)
            blocks, expert_scales = quantize_mxfp4(weight)
            scales.append(expert_scales.tobytes())
            yield blocks.tobytes()
        self._scales = scales

    def _scales_chunks(self) -> Iterator[bytes]:
        if self._scales is None:
            for _ in self._blocks():
                pass
        yield from self._scales or []
        self._scales = None


def _with_values(tensor: Tensor, index: tuple[int, ...], value: float) -> Tensor:
    """tensor (1-D bf16) with the given entries replaced by value."""

    def chunks() -> Iterator[bytes]:
        bits = np.frombuffer(b"".join(tensor.chunks()), np.uint16).copy()
        bits[list(index)] = float32_to_bf16_bits(np.array([value], np.float32))[0]
        yield bits.tobytes()

    return Tensor(tensor.name, tensor.dtype, tensor.shape, chunks)


def plan_tensors(shape: FixtureShape, seed: int, dead_experts: dict[int, tuple[int, ...]] | None = None
                 ) -> list[Tensor]:
    """Every tensor of the checkpoint, in file order, with the init that keeps the model non-degenerate;
    dead_experts {layer: expert ids} get a router bias that no token's routing ever picks."""
    h, q_dim, kv_dim = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    out = [_normal_bf16(seed, "model.embed_tokens.weight", (VOCAB_SIZE, h), 1.0)]
    for n in range(shape.layers):
        p = f"model.layers.{n}."
        out += [
            _normal_bf16(seed, p + "input_layernorm.weight", (h,), 0.1, mean=1.0),
            _normal_bf16(seed, p + "self_attn.q_proj.weight", (q_dim, h), h**-0.5),
            _normal_bf16(seed, p + "self_attn.q_proj.bias", (q_dim,), 0.1),
            _normal_bf16(seed, p + "self_attn.k_proj.weight", (kv_dim, h), h**-0.5),
            _normal_bf16(seed, p + "self_attn.k_proj.bias", (kv_dim,), 0.1),
            _normal_bf16(seed, p + "self_attn.v_proj.weight", (kv_dim, h), h**-0.5),
            _normal_bf16(seed, p + "self_attn.v_proj.bias", (kv_dim,), 0.1),
            _normal_bf16(seed, p + "self_attn.o_proj.weight", (h, q_dim), q_dim**-0.5),
            _normal_bf16(seed, p + "self_attn.o_proj.bias", (h,), 0.1),
            _normal_bf16(seed, p + "self_attn.sinks", (shape.heads,), 1.0),
            _normal_bf16(seed, p + "post_attention_layernorm.weight", (h,), 0.1, mean=1.0),
            _normal_bf16(seed, p + "mlp.router.weight", (shape.experts, h), h**-0.5),
        ]
        bias = _normal_bf16(seed, p + "mlp.router.bias", (shape.experts,), 0.5)
        dead = (dead_experts or {}).get(n)
        out.append(_with_values(bias, dead, DEAD_ROUTER_BIAS) if dead else bias)
        e, i = shape.experts, shape.intermediate
        out += _Experts(seed, p + "mlp.experts.gate_up_proj", e, 2 * i, h, h**-0.5).tensors()
        out.append(_normal_bf16(seed, p + "mlp.experts.gate_up_proj_bias", (e, 2 * i), 0.1))
        out += _Experts(seed, p + "mlp.experts.down_proj", e, h, i, EXPERT_OUT_SCALE * i**-0.5).tensors()
        out.append(_normal_bf16(seed, p + "mlp.experts.down_proj_bias", (e, h), 0.1 * EXPERT_OUT_SCALE))
    out.append(_normal_bf16(seed, "model.norm.weight", (h,), 0.1, mean=1.0))
    out.append(_normal_bf16(seed, "lm_head.weight", (VOCAB_SIZE, h), LOGIT_STD * h**-0.5))
    return out
