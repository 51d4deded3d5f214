"""The converter: bit-exact experts, readable GGUF, metadata llama.cpp needs, info counts, atomic output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize

from converters import data_writer
from converters.convert import convert_checkpoint
from converters.snapshot import Snapshot


@pytest.fixture(scope="module")
def reader(tiny_gguf):
    return GGUFReader(tiny_gguf)


def _tensor(reader: GGUFReader, name: str):
    return next(t for t in reader.tensors if t.name == name)


def _reference_dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """transformers' own MXFP4 dequantizer (what GptOssForCausalLM loads the release with), float32, [E, rows, cols]."""
    torch = pytest.importorskip("torch")
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    out = convert_moe_packed_tensors(torch.from_numpy(blocks.copy()), torch.from_numpy(scales.copy()),
                                     dtype=torch.float32)
    return out.transpose(1, 2).numpy()  # transformers keeps [E, in, out]; the checkpoint rows are [E, out, in]


def test_every_expert_tensor_is_bit_exact_mxfp4(tiny_checkpoint, reader):
    """Source values from transformers' dequantizer, written values from gguf-py's: neither is our code."""
    snap = Snapshot(tiny_checkpoint)
    hp = snap.hparams
    checked = 0
    for n in range(hp.layers):
        src = f"model.layers.{n}.mlp.experts."
        gu = _reference_dequantize(snap.array(src + "gate_up_proj_blocks"), snap.array(src + "gate_up_proj_scales"))
        down = _reference_dequantize(snap.array(src + "down_proj_blocks"), snap.array(src + "down_proj_scales"))
        expected = {"ffn_gate_exps": gu[:, 0::2], "ffn_up_exps": gu[:, 1::2], "ffn_down_exps": down}
        for short, want in expected.items():
            t = _tensor(reader, f"blk.{n}.{short}.weight")
            assert t.tensor_type == T.MXFP4
            got = dequantize(np.asarray(t.data), T.MXFP4).reshape(want.shape)
            np.testing.assert_array_equal(got, want)
            assert np.count_nonzero(want) > want.size // 2  # real values, not an all-zero match
            checked += 1
    snap.close()
    assert checked == 3 * hp.layers


def test_expert_biases_are_split_even_gate_odd_up(tiny_checkpoint, reader):
    snap = Snapshot(tiny_checkpoint)
    bits = snap.array("model.layers.1.mlp.experts.gate_up_proj_bias")
    full = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(np.asarray(_tensor(reader, "blk.1.ffn_gate_exps.bias").data), full[:, 0::2])
    np.testing.assert_array_equal(np.asarray(_tensor(reader, "blk.1.ffn_up_exps.bias").data), full[:, 1::2])
    snap.close()


def test_gguf_has_the_hyperparameters_llama_cpp_reads(tiny_checkpoint, reader):
    config = json.loads((tiny_checkpoint / "config.json").read_text())

    def val(key):
        return reader.get_field(key).contents()

    assert val("general.architecture") == "gpt-oss"
    assert val("gpt-oss.block_count") == config["num_hidden_layers"]
    assert val("gpt-oss.embedding_length") == config["hidden_size"]
    assert val("gpt-oss.attention.head_count") == config["num_attention_heads"]
    assert val("gpt-oss.attention.head_count_kv") == config["num_key_value_heads"]
    assert val("gpt-oss.attention.key_length") == config["head_dim"]
    assert val("gpt-oss.expert_count") == config["num_local_experts"]
    assert val("gpt-oss.expert_used_count") == config["num_experts_per_tok"]
    assert val("gpt-oss.expert_feed_forward_length") == config["intermediate_size"]
    assert val("gpt-oss.attention.sliding_window") == config["sliding_window"]
    assert val("gpt-oss.context_length") == config["max_position_embeddings"]
    assert val("gpt-oss.rope.freq_base") == pytest.approx(config["rope_theta"])
    assert val("gpt-oss.rope.scaling.type") == "yarn"
    assert val("gpt-oss.rope.scaling.factor") == pytest.approx(config["rope_scaling"]["factor"])
    assert val("gpt-oss.rope.scaling.original_context_length") == \
        config["rope_scaling"]["original_max_position_embeddings"]
    assert val("gpt-oss.attention.layer_norm_rms_epsilon") == pytest.approx(config["rms_norm_eps"])
    assert val("tokenizer.ggml.pre") == "gpt-4o"
    assert len(reader.get_field("tokenizer.ggml.tokens").data) == 201088
    assert val("tokenizer.ggml.eos_token_id") == 200002
    assert val("tokenizer.ggml.bos_token_id") == 199998
    assert "<|start|>" in val("tokenizer.chat_template")
    assert val("gptoss.recipe") == "mxfp4"


def test_mxfp4_recipe_types_by_class(reader):
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == T.Q8_0
    assert types["output.weight"] == T.Q8_0
    assert types["blk.0.attn_q.weight"] == T.Q8_0
    assert types["blk.0.attn_output.weight"] == T.Q8_0
    for f32_name in ("blk.0.ffn_gate_inp.weight", "blk.0.attn_sinks.weight", "blk.0.attn_norm.weight",
                     "output_norm.weight", "blk.0.attn_q.bias", "blk.0.ffn_down_exps.bias"):
        assert types[f32_name] == T.F32, f32_name


def test_bf16_file_is_the_same_whatever_the_copy_piece_size_and_threads(tiny_checkpoint, tmp_path, monkeypatch):
    # The data section is filled out of order (kernel copies in pieces, converted chunks at fixed offsets):
    # odd piece sizes and one thread versus four must give the same bytes, padding included.
    first = convert_checkpoint(tiny_checkpoint, tmp_path / "a.gguf", recipe="bf16", workers=4).path
    monkeypatch.setattr(data_writer, "COPY_PIECE", 4097)
    second = convert_checkpoint(tiny_checkpoint, tmp_path / "b.gguf", recipe="bf16", workers=1).path
    assert first.read_bytes() == second.read_bytes()
    emb = _tensor(GGUFReader(second), "token_embd.weight")
    assert emb.n_bytes > 3 * 4097  # so the copy really was split


@pytest.mark.parametrize("recipe", ["f16", "bf16"])
def test_lossless_recipes(tiny_checkpoint, tmp_path, recipe):
    out = convert_checkpoint(tiny_checkpoint, tmp_path / f"{recipe}.gguf", recipe=recipe).path
    reader = GGUFReader(out)
    emb = _tensor(reader, "token_embd.weight")
    snap = Snapshot(tiny_checkpoint)
    src = snap.array("model.embed_tokens.weight")
    if recipe == "bf16":
        assert emb.tensor_type == T.BF16
        np.testing.assert_array_equal(np.asarray(emb.data).view(np.uint16).reshape(src.shape), src)
    else:
        assert emb.tensor_type == T.F16
        want = (src.astype(np.uint32) << 16).view(np.float32).astype(np.float16)
        np.testing.assert_array_equal(np.asarray(emb.data).reshape(src.shape), want)
    snap.close()


def test_info_shows_counts(cli, tiny_gguf, reader):
    result = cli("info", str(tiny_gguf), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["tensors"] == len(reader.tensors)
    by_class = {(c["class"], c["type"]): c["tensors"] for c in info["classes"]}
    layers = reader.get_field("gpt-oss.block_count").contents()
    assert by_class[("expert_gate_up", "MXFP4")] == 2 * layers
    assert by_class[("expert_down", "MXFP4")] == layers
    assert by_class[("embed", "Q8_0")] == 1
    assert sum(c["bytes"] for c in info["classes"]) <= info["size"]
    table = cli("info", str(tiny_gguf))
    assert table.returncode == 0 and "expert_gate_up" in table.stdout and "MXFP4" in table.stdout


def test_quantize_cli_writes_default_name_and_summary(cli, tiny_checkpoint, isolated_home):
    result = cli("quantize", str(tiny_checkpoint))
    assert result.returncode == 0, result.stderr
    models = isolated_home / "gptoss" / "models"
    written = list(models.glob("*.gguf"))
    assert [p.name for p in written] == [f"gpt-oss-{tiny_checkpoint.name.split('gpt-oss-')[-1]}-mxfp4.gguf"]
    assert "expert_gate_up" in result.stdout and "total" in result.stdout
    assert not list(models.glob("*.partial"))
    again = cli("quantize", str(tiny_checkpoint))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    # `gptoss info` with no argument finds the GGUF just written
    assert cli("info").returncode == 0


def test_f16_keeps_out_of_range_tensor_f32_and_says_so(tiny_checkpoint, tmp_path, cli):
    import shutil
    import struct

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    shard = next(p for p in sorted(ckpt.glob("model-*.safetensors"))
                 if b"model.layers.1.self_attn.q_proj.weight" in p.read_bytes()[:100000])
    raw = bytearray(shard.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    entry = json.loads(raw[8:8 + n])["model.layers.1.self_attn.q_proj.weight"]
    at = 8 + n + entry["data_offsets"][0]
    raw[at:at + 2] = struct.pack("<H", 0x4800)  # bf16 131072.0: beyond F16's largest finite value 65504
    shard.write_bytes(bytes(raw))
    out = tmp_path / "f16.gguf"
    result = cli("quantize", str(ckpt), "--recipe", "f16", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "blk.1.attn_q.weight" in result.stderr  # the summary names the tensor kept F32
    assert any("attn_q" in line and "F32" in line for line in result.stdout.splitlines())
    types = {t.name: t.tensor_type for t in GGUFReader(out).tensors}
    assert types["blk.1.attn_q.weight"] == T.F32
    assert types["blk.0.attn_q.weight"] == T.F16
