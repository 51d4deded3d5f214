"""`gptoss quantize --dry-run` on a checkpoint shaped exactly like openai/gpt-oss-120b: the release's config.json,
15 shards whose safetensors headers list every tensor of the release (names, dtypes, shapes; tests/data/README
of the shared data), and no weights (sparse files, ~65 GB that take no disk). The announced size is the known
one: the tensor data of the 120b GGUF, computed by hand in test_plan.py (63,374,323,968 bytes), plus the header."""

from __future__ import annotations

import json
import shutil
import struct

from conftest import DATA

H, FF, E, HEADS, KV, HEAD_DIM, LAYERS, VOCAB, SHARDS = 2880, 2880, 128, 64, 8, 64, 36, 201088, 15
TENSOR_DATA_120B = 63_374_323_968   # test_plan.py: 36 * (1,696,481,280 + 29,731,328) + 615,329,280 + 615,340,800
SIZE = {"BF16": 2, "U8": 1}


def _tensors() -> list[tuple[str, str, list[int]]]:
    """(name, dtype, shape) of every tensor of the release, in layer order."""
    out = [("model.embed_tokens.weight", "BF16", [VOCAB, H])]
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", "BF16", [H]), (p + "post_attention_layernorm.weight", "BF16", [H]),
                (p + "self_attn.q_proj.weight", "BF16", [HEADS * HEAD_DIM, H]),
                (p + "self_attn.q_proj.bias", "BF16", [HEADS * HEAD_DIM]),
                (p + "self_attn.k_proj.weight", "BF16", [KV * HEAD_DIM, H]),
                (p + "self_attn.k_proj.bias", "BF16", [KV * HEAD_DIM]),
                (p + "self_attn.v_proj.weight", "BF16", [KV * HEAD_DIM, H]),
                (p + "self_attn.v_proj.bias", "BF16", [KV * HEAD_DIM]),
                (p + "self_attn.o_proj.weight", "BF16", [H, HEADS * HEAD_DIM]),
                (p + "self_attn.o_proj.bias", "BF16", [H]),
                (p + "self_attn.sinks", "BF16", [HEADS]),
                (p + "mlp.router.weight", "BF16", [E, H]), (p + "mlp.router.bias", "BF16", [E]),
                (p + "mlp.experts.gate_up_proj_blocks", "U8", [E, 2 * FF, H // 32, 16]),
                (p + "mlp.experts.gate_up_proj_scales", "U8", [E, 2 * FF, H // 32]),
                (p + "mlp.experts.gate_up_proj_bias", "BF16", [E, 2 * FF]),
                (p + "mlp.experts.down_proj_blocks", "U8", [E, H, FF // 32, 16]),
                (p + "mlp.experts.down_proj_scales", "U8", [E, H, FF // 32]),
                (p + "mlp.experts.down_proj_bias", "BF16", [E, H])]
    return out + [("model.norm.weight", "BF16", [H]), ("lm_head.weight", "BF16", [VOCAB, H])]


def _write_shard(path, tensors) -> None:
    """A safetensors file with a real header and a hole where the data would be."""
    header, offset = {}, 0
    for name, dtype, shape in tensors:
        n = SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


def test_120b_shaped_dry_run_announces_the_known_size(tiny_checkpoint, tmp_path, cli):
    folder = tmp_path / "gpt-oss-120b"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja"):
        shutil.copyfile(tiny_checkpoint / name, folder / name)
    shutil.copyfile(DATA / "gpt-oss-120b.config.json", folder / "config.json")
    tensors = _tensors()
    per = -(-len(tensors) // SHARDS)
    weight_map = {}
    for i in range(SHARDS):
        shard = f"model-{i:05d}-of-{SHARDS - 1:05d}.safetensors"
        part = tensors[i * per:(i + 1) * per]
        _write_shard(folder / shard, part)
        weight_map.update({name: shard for name, _, _ in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert sum(p.stat().st_blocks for p in folder.iterdir()) * 512 < 200 << 20   # sparse: nothing was written

    r = cli("quantize", str(folder), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["recipe"] == "mxfp4" and not plan["via_llama_cpp"]
    assert sum(t["bytes"] for t in plan["tensors"]) == TENSOR_DATA_120B
    assert plan["bytes"] == plan["header_bytes"] + TENSOR_DATA_120B
    assert 0 < plan["header_bytes"] < 16 << 20     # key/values (the vocabulary) and tensor infos
    experts = [c for c in plan["classes"] if c["type"] == "MXFP4"]
    assert sum(c["bytes"] for c in experts) == LAYERS * 1_692_057_600
    assert sum(c["tensors"] for c in experts) == 3 * LAYERS   # gate, up, down
