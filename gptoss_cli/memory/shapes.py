"""What the memory planner needs of a model: tensor bytes per layer and attention geometry, read exactly
from a GGUF header or estimated from config.json as the default recipe would write it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from converters.errors import BadInputError
from gptoss_cli.engine.gguf_header import TensorInfo, read_header
from gptoss_cli.engine.loader import FFN_EXPS_REGEX

FFN_EXPS = re.compile(FFN_EXPS_REGEX)
BLK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a model: sizes per layer and attention geometry."""

    name: str
    n_layers: int
    n_embd: int
    n_head: int
    n_kv_heads: int
    head_dim: int
    n_vocab: int
    n_experts_used: int
    n_ff: int
    sliding_window: int
    swa_layers: tuple[bool, ...]     # per layer: sliding-window attention (else full)
    expert_bytes: tuple[int, ...]    # per layer: ffn_{gate,up,down}_exps weights and biases
    layer_bytes: tuple[int, ...]     # per layer: everything else (attention, norms, router, sinks)
    input_bytes: int                 # token_embd: llama.cpp always keeps it in system RAM
    output_bytes: int                # output + output_norm: on the GPU when all layers are

    @property
    def weight_bytes(self) -> int:
        """All weights."""
        return sum(self.expert_bytes) + sum(self.layer_bytes) + self.input_bytes + self.output_bytes


_ESTIMATE_TYPES = {  # the default recipe (mxfp4): experts MXFP4, dense Q8_0, the rest F32
    "expert": gguf.GGMLQuantizationType.MXFP4, "dense": gguf.GGMLQuantizationType.Q8_0,
    "f32": gguf.GGMLQuantizationType.F32,
}


def _nbytes(kind: str, *shape: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[_ESTIMATE_TYPES[kind]]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def shape_from_config(config: dict, name: str = "model") -> ModelShape:
    """Estimate tensor sizes from a Hugging Face config.json, as the default recipe would write them."""
    try:
        L, h, i = config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]
        e, heads, kvh = config["num_local_experts"], config["num_attention_heads"], config["num_key_value_heads"]
        hd, vocab = config.get("head_dim") or h // heads, config["vocab_size"]
        k_used = config.get("num_experts_per_tok") or config["experts_per_token"]
        window = config.get("sliding_window") or 0
    except KeyError as exc:
        raise BadInputError(name, f"config.json lacks {exc.args[0]!r}", "Is this a gpt-oss checkpoint?") from None
    types = config.get("layer_types") or [("sliding_attention", "full_attention")[n % 2] for n in range(L)]
    q, kv = heads * hd, kvh * hd
    experts = (3 * _nbytes("expert", e, i, h)                         # gate, up, down: E x I x H each
               + _nbytes("f32", e, i) * 2 + _nbytes("f32", e, h))     # their biases
    dense = (_nbytes("dense", q, h) + 2 * _nbytes("dense", kv, h) + _nbytes("dense", h, q)
             + _nbytes("f32", q + 2 * kv + h)                          # q, k, v, o biases
             + _nbytes("f32", 2 * h) + _nbytes("f32", heads)           # two norms, sinks
             + _nbytes("f32", e, h) + _nbytes("f32", e))               # router weight and bias
    return ModelShape(name, L, h, heads, kvh, hd, vocab, k_used, i, window,
                      tuple(t == "sliding_attention" for t in types[:L]),
                      (experts,) * L, (dense,) * L,
                      _nbytes("dense", vocab, h), _nbytes("dense", vocab, h) + _nbytes("f32", h))


def shape_from_tensors(meta: dict, tensors: list[TensorInfo], name: str) -> ModelShape:
    """Exact sizes from GGUF metadata and its tensors' infos (engine/gguf_header.py's read_header)."""
    arch = meta.get("general.architecture")
    if arch != "gpt-oss":
        raise BadInputError(name, f"its architecture is {arch!r}, not gpt-oss", "Pass a gpt-oss GGUF")
    a = arch + "."
    L = int(meta[a + "block_count"])
    experts, layers = [0] * L, [0] * L
    input_bytes = output_bytes = 0
    n_vocab = 0
    for info in tensors:
        tensor, dims, nbytes = info.name, info.shape, info.n_bytes
        m = BLK.match(tensor)
        if m:
            (experts if FFN_EXPS.search(tensor) else layers)[int(m.group(1))] += nbytes
        elif tensor.startswith("token_embd."):
            input_bytes += nbytes
            n_vocab = dims[-1] if dims else 0
        else:
            output_bytes += nbytes
    heads = int(meta[a + "attention.head_count"])
    n_embd = int(meta[a + "embedding_length"])
    head_dim = int(meta.get(a + "attention.key_length", n_embd // heads))
    return ModelShape(
        name, L, n_embd, heads, int(meta[a + "attention.head_count_kv"]), head_dim, n_vocab,
        int(meta.get(a + "expert_used_count", 4)), int(meta.get(a + "expert_feed_forward_length", n_embd)),
        int(meta.get(a + "attention.sliding_window", 0)),
        tuple(n % 2 == 0 for n in range(L)),  # llama.cpp's gpt-oss: even layers slide (pattern 2)
        tuple(experts), tuple(layers), input_bytes, output_bytes)


_RELEASE = {  # the official config.json of both sizes differ only in these two fields (tests check it)
    "hidden_size": 2880, "intermediate_size": 2880, "num_attention_heads": 64, "num_key_value_heads": 8,
    "head_dim": 64, "vocab_size": 201088, "num_experts_per_tok": 4, "sliding_window": 128,
}
KNOWN_CONFIGS = {
    "20b": {**_RELEASE, "num_hidden_layers": 24, "num_local_experts": 32},
    "120b": {**_RELEASE, "num_hidden_layers": 36, "num_local_experts": 128},
}


def config_of(path: Path) -> dict:
    """The parsed config.json (path is the file or a snapshot folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot read config.json: {exc}") from None


def shape_from_config_file(path: Path) -> ModelShape:
    """shape_from_config on a config.json file (or a snapshot folder holding one)."""
    path = Path(path)
    return shape_from_config(config_of(path), (path if path.is_dir() else path.parent).name)


def check_keep(keep: int, used: int, n_expert: int, name: str) -> None:
    """BadInputError unless keep experts per layer is within used..n_expert."""
    if not used <= keep <= n_expert:
        raise BadInputError(str(keep), f"--keep must be between {used} (the experts each token uses) and "
                                       f"{n_expert} (the experts per layer of {name})",
                            f"For example --keep {max(used, n_expert * 3 // 4)}")


def shape_from_gguf(path: Path, keep: int | None = None) -> ModelShape:
    """Exact tensor sizes from a gpt-oss GGUF header (no tensor data is read); with keep, after pruning."""
    header = read_header(path)
    meta, tensors = header.metadata, header.tensors
    if keep is not None:
        n_expert = int(meta.get("gpt-oss.expert_count", 0))
        check_keep(keep, int(meta.get("gpt-oss.expert_used_count", 1)), n_expert, Path(path).name)
        tensors = [TensorInfo(t.name, *_pruned(t, n_expert, keep)) for t in tensors]
    return shape_from_tensors(meta, tensors, Path(path).name)


def _pruned(t: TensorInfo, n_expert: int, keep: int):
    from converters.prune import pruned_nbytes

    dims, nbytes = pruned_nbytes(t.name, t.shape, t.n_bytes, n_expert, keep)
    return dims, t.type, nbytes
