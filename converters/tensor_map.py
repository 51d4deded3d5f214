"""gpt-oss tensor layout: Hugging Face names and shapes, and their llama.cpp (GGUF) names and classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converters.snapshot import HParams

# Tensor classes: the unit recipes assign types to.
EXPERT_GATE_UP, EXPERT_DOWN = "expert_gate_up", "expert_down"
ATTN_Q, ATTN_K, ATTN_V, ATTN_O = "attn_q", "attn_k", "attn_v", "attn_o"
ROUTER, EMBED, OUTPUT = "router", "embed", "output"
NORM, SINK, BIAS = "norm", "sink", "bias"
EXPERT_CLASSES = (EXPERT_GATE_UP, EXPERT_DOWN)

FLOAT, MXFP4 = "float", "mxfp4"     # how an output tensor is produced from its source
EVEN, ODD = slice(0, None, 2), slice(1, None, 2)   # gate_up_proj: even rows gate, odd rows up


@dataclass(frozen=True)
class OutSpec:
    """One GGUF tensor: its name template, class, how it is produced, its source, and a row selection."""

    gguf: str
    cls: str
    kind: str
    source: str
    rows: slice | None = None   # selection on axis 1 of the source (gate/up split)


GLOBAL_TENSORS = (
    OutSpec("token_embd.weight", EMBED, FLOAT, "model.embed_tokens.weight"),
    OutSpec("output_norm.weight", NORM, FLOAT, "model.norm.weight"),
    OutSpec("output.weight", OUTPUT, FLOAT, "lm_head.weight"),
)

_L = "model.layers.{n}."
LAYER_TENSORS = (
    OutSpec("blk.{n}.attn_norm.weight", NORM, FLOAT, _L + "input_layernorm.weight"),
    OutSpec("blk.{n}.post_attention_norm.weight", NORM, FLOAT, _L + "post_attention_layernorm.weight"),
    OutSpec("blk.{n}.attn_q.weight", ATTN_Q, FLOAT, _L + "self_attn.q_proj.weight"),
    OutSpec("blk.{n}.attn_q.bias", BIAS, FLOAT, _L + "self_attn.q_proj.bias"),
    OutSpec("blk.{n}.attn_k.weight", ATTN_K, FLOAT, _L + "self_attn.k_proj.weight"),
    OutSpec("blk.{n}.attn_k.bias", BIAS, FLOAT, _L + "self_attn.k_proj.bias"),
    OutSpec("blk.{n}.attn_v.weight", ATTN_V, FLOAT, _L + "self_attn.v_proj.weight"),
    OutSpec("blk.{n}.attn_v.bias", BIAS, FLOAT, _L + "self_attn.v_proj.bias"),
    OutSpec("blk.{n}.attn_output.weight", ATTN_O, FLOAT, _L + "self_attn.o_proj.weight"),
    OutSpec("blk.{n}.attn_output.bias", BIAS, FLOAT, _L + "self_attn.o_proj.bias"),
    OutSpec("blk.{n}.attn_sinks.weight", SINK, FLOAT, _L + "self_attn.sinks"),
    OutSpec("blk.{n}.ffn_gate_inp.weight", ROUTER, FLOAT, _L + "mlp.router.weight"),
    OutSpec("blk.{n}.ffn_gate_inp.bias", BIAS, FLOAT, _L + "mlp.router.bias"),
    OutSpec("blk.{n}.ffn_gate_exps.weight", EXPERT_GATE_UP, MXFP4, _L + "mlp.experts.gate_up_proj", EVEN),
    OutSpec("blk.{n}.ffn_up_exps.weight", EXPERT_GATE_UP, MXFP4, _L + "mlp.experts.gate_up_proj", ODD),
    OutSpec("blk.{n}.ffn_down_exps.weight", EXPERT_DOWN, MXFP4, _L + "mlp.experts.down_proj"),
    OutSpec("blk.{n}.ffn_gate_exps.bias", BIAS, FLOAT, _L + "mlp.experts.gate_up_proj_bias", EVEN),
    OutSpec("blk.{n}.ffn_up_exps.bias", BIAS, FLOAT, _L + "mlp.experts.gate_up_proj_bias", ODD),
    OutSpec("blk.{n}.ffn_down_exps.bias", BIAS, FLOAT, _L + "mlp.experts.down_proj_bias"),
)


def output_specs(n_layers: int) -> list[OutSpec]:
    """Every GGUF tensor of a model with n_layers, in file order, with layer numbers filled in."""
    specs = list(GLOBAL_TENSORS)
    for n in range(n_layers):
        specs += [OutSpec(s.gguf.format(n=n), s.cls, s.kind, s.source.format(n=n), s.rows)
                  for s in LAYER_TENSORS]
    return specs


def expected_sources(hp: HParams) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every source tensor the checkpoint must hold: name -> (safetensors dtype, shape)."""
    h, v, e, i = hp.hidden, hp.vocab_size, hp.experts, hp.intermediate
    q, kv = hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim
    bf = "BF16"
    out = {"model.embed_tokens.weight": (bf, (v, h)), "model.norm.weight": (bf, (h,)),
           "lm_head.weight": (bf, (v, h))}
    for n in range(hp.layers):
        p = f"model.layers.{n}."
        out.update({
            p + "input_layernorm.weight": (bf, (h,)), p + "post_attention_layernorm.weight": (bf, (h,)),
            p + "self_attn.q_proj.weight": (bf, (q, h)), p + "self_attn.q_proj.bias": (bf, (q,)),
            p + "self_attn.k_proj.weight": (bf, (kv, h)), p + "self_attn.k_proj.bias": (bf, (kv,)),
            p + "self_attn.v_proj.weight": (bf, (kv, h)), p + "self_attn.v_proj.bias": (bf, (kv,)),
            p + "self_attn.o_proj.weight": (bf, (h, q)), p + "self_attn.o_proj.bias": (bf, (h,)),
            p + "self_attn.sinks": (bf, (hp.heads,)),
            p + "mlp.router.weight": (bf, (e, h)), p + "mlp.router.bias": (bf, (e,)),
            p + "mlp.experts.gate_up_proj_blocks": ("U8", (e, 2 * i, h // 32, 16)),
            p + "mlp.experts.gate_up_proj_scales": ("U8", (e, 2 * i, h // 32)),
            p + "mlp.experts.gate_up_proj_bias": (bf, (e, 2 * i)),
            p + "mlp.experts.down_proj_blocks": ("U8", (e, h, i // 32, 16)),
            p + "mlp.experts.down_proj_scales": ("U8", (e, h, i // 32)),
            p + "mlp.experts.down_proj_bias": (bf, (e, h)),
        })
    return out


def classify(gguf_name: str) -> str:
    """The class of a GGUF tensor name (blk.7.attn_q.weight -> attn_q); 'other' if unknown."""
    generic = gguf_name
    parts = gguf_name.split(".")
    if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
        generic = "blk.{n}." + ".".join(parts[2:])
    return _CLASS_BY_NAME.get(generic, "other")


_CLASS_BY_NAME = {s.gguf: s.cls for s in GLOBAL_TENSORS + LAYER_TENSORS}
