"""The fixture generator writes what the real gpt-oss release holds, checked against tiktoken, torch,
safetensors and transformers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters import hf_tokenizer
from converters.errors import OutputError
from converters.fixture import PRESETS, FixtureShape, make_config, write_checkpoint
from converters.mxfp4_ref import (
    E2M1_VALUES,
    bf16_bits_to_float32,
    dequantize_mxfp4,
    float32_to_bf16_bits,
    quantize_mxfp4,
)

DATA = Path(__file__).resolve().parent / "data"
ROOT = DATA.parent.parent

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def main(argv):\n    for i in range(10):\n\tprint(f'{i:>4}')  # comment\r\n    return 0\n",
    "    leading spaces,   runs   of   spaces\n\n\n  trailing  \t\n",
    "3.14159 1234567890 1,000,000 0x1F 2026-11-25 12:30:00",
    "Café naïve résumé Ångström façade coöperate ÆØÅ ß İstanbul",
    "日本語のテキストと中文文本，还有한국어 텍스트.",
    "emoji 😀👍🏽👨‍👩‍👧 flags 🇫🇷 ✨",
    "I'm sure they'll say it's YOU'RE and We'VE",
    "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>final<|message|>hello<|return|>",
    "<|startoftext|>x<|endoftext|><|constrain|>json<|call|><|reserved_200100|>",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी",
    "",
]


@pytest.fixture(scope="module")
def harmony_encoding():
    """tiktoken's own o200k_harmony definition, with its ranks read from tests/data instead of the network."""
    tiktoken = pytest.importorskip("tiktoken")
    import tiktoken_ext.openai_public as public
    from tiktoken.load import load_tiktoken_bpe

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(public, "load_tiktoken_bpe",
                   lambda url, expected_hash=None: load_tiktoken_bpe(str(DATA / "o200k_base.tiktoken"), expected_hash))
        return tiktoken.Encoding(**public.o200k_harmony())


@pytest.fixture(scope="module")
def hf_tok():
    tokenizers = pytest.importorskip("tokenizers")
    data = hf_tokenizer.tokenizer_json_bytes((DATA / "o200k_base.tiktoken").resolve())
    return tokenizers.Tokenizer.from_str(data.decode())


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_encodes_like_tiktoken(hf_tok, harmony_encoding, text):
    expected = harmony_encoding.encode(text, allowed_special="all")
    ids = hf_tok.encode(text, add_special_tokens=False).ids
    assert ids == expected
    assert hf_tok.decode(ids, skip_special_tokens=False) == text


def test_tokenizer_json_specials_match_harmony(hf_tok, harmony_encoding):
    assert hf_tok.get_vocab_size(with_added_tokens=True) == 201_088
    names = {}
    for name, token_id in harmony_encoding._special_tokens.items():
        names.setdefault(token_id, set()).add(name)
    assert sorted(names) == list(range(199_998, 201_088))
    for token_id, aliases in names.items():
        assert hf_tok.id_to_token(token_id) in aliases
    assert [hf_tok.token_to_id(t) for t in ("<|return|>", "<|endoftext|>", "<|call|>")] == [200002, 199999, 200012]


def test_bf16_rounds_like_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(10_000).astype(np.float32) * 100,
                        # exact ties between two bf16 values, both parities
                        np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3e38, 1e-40], dtype=np.float32)])
    expected = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16_bits(x), expected)
    np.testing.assert_array_equal(bf16_bits_to_float32(expected), torch.from_numpy(x).to(torch.bfloat16).float())


def _transformers_dequantize(blocks, scales):
    """transformers' own MXFP4 dequantizer; it returns [E, cols, rows]."""
    torch = pytest.importorskip("torch")
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    out = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    return out.transpose(1, 2).numpy()


def test_mxfp4_exact_values_round_trip():
    rng = np.random.default_rng(1)
    signs = rng.choice([-1.0, 1.0], size=(3, 8, 64))
    values = (rng.choice(E2M1_VALUES, size=(3, 8, 64)) * signs).astype(np.float32)
    values[..., ::32] = rng.choice([4.0, -4.0, 6.0, -6.0], size=(3, 8, 2))  # fixes each block's amax range
    exponents = rng.integers(-20, 20, size=(3, 8, 2))
    x = np.ldexp(values, np.repeat(exponents, 32, axis=-1)).astype(np.float32)
    blocks, scales = quantize_mxfp4(x)
    assert blocks.shape == (3, 8, 2, 16) and blocks.dtype == np.uint8
    assert scales.shape == (3, 8, 2) and scales.dtype == np.uint8
    np.testing.assert_array_equal(scales, exponents + 127)
    np.testing.assert_array_equal(_transformers_dequantize(blocks, scales), x)
    np.testing.assert_array_equal(dequantize_mxfp4(blocks, scales), x)


def test_mxfp4_rounds_to_nearest_within_half_a_step():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 16, 256)) * np.exp(rng.uniform(-6, 6, size=(4, 16, 1)))).astype(np.float32)
    blocks, scales = quantize_mxfp4(x)
    got = _transformers_dequantize(blocks, scales)
    unit = np.repeat(np.ldexp(1.0, scales.astype(np.int32) - 127), 32, axis=-1)
    mag = np.abs(x) / unit  # |x| in units of its block scale, at most 8
    half_step = np.where(mag < 2, 0.25, np.where(mag < 4, 0.5, 1.0)) * unit
    clipped = mag > 6
    assert np.all(np.abs(got - x)[~clipped] <= half_step[~clipped])
    np.testing.assert_array_equal(got[clipped], np.sign(x[clipped]) * 6 * unit[clipped])
    assert clipped.any() and (np.abs(got - x) > 0).any()


def test_mxfp4_ties_round_to_even_and_zero_blocks_stay_zero():
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, -5.0], dtype=np.float32)
    row = np.zeros(64, dtype=np.float32)
    row[: len(ties)], row[31] = ties, 4.0  # block 0 has scale 2^0; block 1 is all zeros
    blocks, scales = quantize_mxfp4(row)
    got = dequantize_mxfp4(blocks, scales)
    np.testing.assert_array_equal(got[: len(ties)], [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -1.0, -4.0])
    assert scales[0] == 127 and not got[32:].any()


def test_config_is_the_release_config_with_sizes_substituted():
    real = json.loads((DATA / "gpt-oss-20b.config.json").read_text())
    twenty_b = FixtureShape(hidden=2880, layers=24, experts=32, experts_per_tok=4, intermediate=2880, heads=64,
                            kv_heads=8, head_dim=64, sliding_window=128, shards=3)
    assert make_config(twenty_b) == real
    s, tiny = PRESETS["tiny"], make_config(PRESETS["tiny"])
    assert set(tiny) == set(real)
    assert (tiny["hidden_size"], tiny["num_hidden_layers"], tiny["num_local_experts"], tiny["experts_per_token"],
            tiny["num_experts_per_tok"], tiny["intermediate_size"], tiny["num_attention_heads"],
            tiny["num_key_value_heads"], tiny["head_dim"], tiny["sliding_window"]) == (
        s.hidden, s.layers, s.experts, s.experts_per_tok, s.experts_per_tok, s.intermediate, s.heads, s.kv_heads,
        s.head_dim, s.sliding_window)
    assert tiny["layer_types"] == ["sliding_attention", "full_attention"] * (s.layers // 2)
    assert s.hidden % 32 == 0 and s.hidden & (s.hidden - 1) and s.layers >= 4


def _header(path: Path) -> dict:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    assert size % 8 == 0
    header = json.loads(raw[8 : 8 + size])
    assert header.pop("__metadata__") == {"format": "pt"}
    end = max(t["data_offsets"][1] for t in header.values())
    assert len(raw) == 8 + size + end
    return header


def test_checkpoint_files_shards_and_index_agree(tiny_checkpoint):
    safetensors = pytest.importorskip("safetensors")
    files = {p.name for p in tiny_checkpoint.iterdir()}
    shards = sorted(n for n in files if n.endswith(".safetensors"))
    assert shards == [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json"):
        assert name in files
    assert (tiny_checkpoint / "chat_template.jinja").read_bytes() == (DATA / "gpt-oss.chat_template.jinja").read_bytes()
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())
    seen, total = {}, 0
    for shard in shards:
        header = _header(tiny_checkpoint / shard)
        with safetensors.safe_open(tiny_checkpoint / shard, framework="pt") as f:
            assert set(f.keys()) == set(header)
            for name in f.keys():
                seen[name] = shard
                tensor = f.get_tensor(name)
                total += tensor.numel() * tensor.element_size()
                packed = name.endswith(("_blocks", "_scales"))
                assert str(tensor.dtype) == ("torch.uint8" if packed else "torch.bfloat16")
    assert index["weight_map"] == seen
    assert index["metadata"]["total_size"] == total
    s = PRESETS["tiny"]
    with safetensors.safe_open(tiny_checkpoint / seen["model.layers.3.mlp.experts.down_proj_blocks"], "pt") as f:
        assert list(f.get_slice("model.layers.3.mlp.experts.down_proj_blocks").get_shape()) == [
            s.experts, s.hidden, s.intermediate // 32, 16]
    with safetensors.safe_open(tiny_checkpoint / seen["model.layers.0.mlp.experts.gate_up_proj_scales"], "pt") as f:
        assert list(f.get_slice("model.layers.0.mlp.experts.gate_up_proj_scales").get_shape()) == [
            s.experts, 2 * s.intermediate, s.hidden // 32]


def test_transformers_loads_checkpoint_with_peaked_finite_logits(tiny_checkpoint, harmony_encoding):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    model, info = transformers.GptOssForCausalLM.from_pretrained(
        tiny_checkpoint, dtype=torch.float32, output_loading_info=True,
        quantization_config=transformers.Mxfp4Config(dequantize=True))
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_checkpoint)
    text = "<|start|>user<|message|>Write one sentence about the sea, in plain English.<|end|><|start|>assistant"
    ids = tokenizer(text).input_ids
    assert ids == harmony_encoding.encode(text, allowed_special="all")
    assert len(ids) > PRESETS["tiny"].sliding_window
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (200002, 199999)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    assert torch.isfinite(logits).all()
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    assert 1.0 < entropy.mean().item() < 11.0, entropy  # below log(201088) = 12.2
    assert len(set(logits.argmax(-1).tolist())) > len(ids) // 2  # depends on the input, not one constant token
    # transformers reads the experts exactly as they were quantized: [E, 2I, H/32, 16] -> [E, H, 2I]
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())
    name = "model.layers.1.mlp.experts.gate_up_proj"
    with safe_open(tiny_checkpoint / index["weight_map"][name + "_blocks"], "np") as f:
        ours = dequantize_mxfp4(f.get_tensor(name + "_blocks"), f.get_tensor(name + "_scales"))
    np.testing.assert_array_equal(model.model.layers[1].mlp.experts.gate_up_proj.detach().numpy(),
                                  ours.transpose(0, 2, 1))


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def test_write_is_atomic_deterministic_and_refuses_to_overwrite(tmp_path):
    small = FixtureShape(hidden=64, layers=2, experts=2, experts_per_tok=1, intermediate=32, heads=2, kv_heads=1,
                         head_dim=64, sliding_window=4, shards=2)
    out = write_checkpoint(tmp_path / "ckpt", small, seed=7)
    first = _digest(out)
    assert list(first) == ["model-00000-of-00001.safetensors", "model-00001-of-00001.safetensors"]
    with pytest.raises(OutputError):
        write_checkpoint(out, small, seed=8)
    assert _digest(out) == first
    write_checkpoint(out, small, seed=7, force=True)
    assert _digest(out) == first
    write_checkpoint(out, small, seed=8, force=True)
    assert _digest(out) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .partial left behind


def test_module_entry_point_prints_the_folder_and_fails_cleanly(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "converters.fixture", str(out), "--preset", "tiny", "--seed", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == PRESETS["tiny"].layers
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith("error: ") and "--force" in again.stderr
