"""GGUF key/values for gpt-oss: the hyper-parameters llama.cpp reads, the vocabulary and provenance."""

from __future__ import annotations

import struct

import gguf
import numpy as np

from converters.recipes import Recipe
from converters.snapshot import HParams
from converters.tokenizer import PRE_TOKENIZER, TOKENIZER_MODEL, Vocab

# Keys of our own, next to llama.cpp's general.* ones.
KEY_RECIPE = "gptoss.recipe"
KEY_VERSION = "gptoss.version"
KEY_SOURCE_REPO = "gptoss.source.repo"
KEY_SOURCE_REVISION = "gptoss.source.revision"
ROPE_SCALING_TYPES = {"yarn": gguf.RopeScalingType.YARN, "linear": gguf.RopeScalingType.LINEAR}


def write_metadata(w: gguf.GGUFWriter, hp: HParams, vocab: Vocab, recipe: Recipe,
                   repo: str | None, revision: str | None, version: str) -> None:
    """Add every key/value of a gpt-oss GGUF to the writer."""
    size = {24: "20b", 36: "120b"}.get(hp.layers, f"{hp.layers}L")
    w.add_name(repo.split("/")[-1] if repo else f"gpt-oss-{size}")
    w.add_file_type(int(recipe.file_type))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hparams(w, hp)
    _vocab(w, vocab)
    w.add_string(KEY_RECIPE, recipe.name)
    w.add_string(KEY_VERSION, version)
    if repo:
        w.add_string(KEY_SOURCE_REPO, repo)
        w.add_source_url(f"https://huggingface.co/{repo}")
    if revision:
        w.add_string(KEY_SOURCE_REVISION, revision)


def _hparams(w: gguf.GGUFWriter, hp: HParams) -> None:
    w.add_context_length(hp.context_length)
    w.add_embedding_length(hp.hidden)
    w.add_block_count(hp.layers)
    w.add_feed_forward_length(hp.intermediate)
    w.add_expert_feed_forward_length(hp.intermediate)
    w.add_head_count(hp.heads)
    w.add_head_count_kv(hp.kv_heads)
    w.add_key_length(hp.head_dim)
    w.add_value_length(hp.head_dim)
    w.add_expert_count(hp.experts)
    w.add_expert_used_count(hp.experts_used)
    w.add_sliding_window(hp.sliding_window)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    rs = hp.rope_scaling
    kind = ROPE_SCALING_TYPES.get(str(rs.get("rope_type") or rs.get("type") or "").lower())
    if kind is not None:
        w.add_rope_scaling_type(kind)
        w.add_rope_scaling_factor(float(rs["factor"]))
        if "original_max_position_embeddings" in rs:
            w.add_rope_scaling_orig_ctx_len(int(rs["original_max_position_embeddings"]))
        if "beta_fast" in rs:
            w.add_rope_scaling_yarn_beta_fast(float(rs["beta_fast"]))
        if "beta_slow" in rs:
            w.add_rope_scaling_yarn_beta_slow(float(rs["beta_slow"]))


def _vocab(w: gguf.GGUFWriter, v: Vocab) -> None:
    w.add_tokenizer_model(TOKENIZER_MODEL)
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(v.tokens)
    w.add_token_types(v.types)
    w.add_token_merges(v.merges)
    w.add_bos_token_id(v.bos_id)
    w.add_eos_token_id(v.eos_id)
    w.add_pad_token_id(v.pad_id)
    w.add_add_bos_token(False)
    if v.chat_template:
        w.add_chat_template(v.chat_template)


class FastGGUFWriter(gguf.GGUFWriter):
    """GGUFWriter whose large homogeneous arrays (201k tokens, merges, token types) pack in one pass.

    The bytes are identical to GGUFWriter's: per string a little-endian uint64 length then UTF-8 bytes;
    integer arrays as packed little-endian values.
    """

    def _pack_val(self, val, vtype, add_vtype, sub_type=None) -> bytes:
        big = vtype == gguf.GGUFValueType.ARRAY and isinstance(val, list) and len(val) > 1024
        if not big or self.endianess != gguf.GGUFEndian.LITTLE:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack("<I", vtype) if add_vtype else b""
        if all(isinstance(v, str) for v in val):
            return head + struct.pack("<IQ", gguf.GGUFValueType.STRING, len(val)) + pack_strings(val)
        if all(type(v) is int for v in val):
            return head + struct.pack("<IQ", gguf.GGUFValueType.INT32, len(val)) + np.asarray(val, "<i4").tobytes()
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def pack_strings(strings: list[str]) -> bytes:
    """GGUF string-array body: per string a little-endian uint64 byte length, then its UTF-8 bytes."""
    encoded = [s.encode("utf-8") for s in strings]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.arange(len(encoded), dtype=np.int64) * 8 + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    out = np.empty(8 * len(encoded) + int(lengths.sum()), dtype=np.uint8)
    is_text = np.ones(out.size, dtype=bool)
    length_bytes = starts[:, None] + np.arange(8)
    is_text[length_bytes] = False
    out[length_bytes] = lengths.astype("<u8").view(np.uint8).reshape(-1, 8)
    out[is_text] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return out.tobytes()
