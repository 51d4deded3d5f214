"""Build gpt-oss's o200k_harmony `tokenizer.json` (Hugging Face `tokenizers` format) from o200k_base.tiktoken.

The vocabulary is the 199,998 o200k_base ranks written in GPT-2 byte-level form; each multi-byte token gets
one merge, the pair its own BPE reaches just before it (merges ordered by rank, as tiktoken merges by rank);
ids 199,998..201,087 are special added tokens. Built once per tiktoken file and cached on disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from converters.errors import InvalidCheckpoint

FORMAT_VERSION = 1
BASE_VOCAB = 199_998
VOCAB_SIZE = 201_088
NAMED_SPECIALS = {
    199_998: "<|startoftext|>",
    199_999: "<|endoftext|>",
    200_002: "<|return|>",
    200_003: "<|constrain|>",
    200_005: "<|channel|>",
    200_006: "<|start|>",
    200_007: "<|end|>",
    200_008: "<|message|>",
    200_012: "<|call|>",
    # o200k_base's own special; the released tokenizer.json names id 200018 this way.
    200_018: "<|endofprompt|>",
}
# tiktoken's o200k_base pat_str.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def special_token_name(token_id: int) -> str:
    """The text of special token `token_id` (199998..201087) in o200k_harmony."""
    return NAMED_SPECIALS.get(token_id, f"<|reserved_{token_id}|>")


def load_ranks(path: Path) -> dict[bytes, int]:
    """The byte-string -> rank table of a .tiktoken file (base64 token, space, rank per line)."""
    ranks: dict[bytes, int] = {}
    try:
        lines = Path(path).read_bytes().splitlines()
        for line in lines:
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except (OSError, ValueError) as exc:
        raise InvalidCheckpoint(path, f"cannot read tiktoken ranks ({exc})", "Pass o200k_base.tiktoken") from exc
    if len(ranks) != BASE_VOCAB or sorted(ranks.values()) != list(range(BASE_VOCAB)):
        raise InvalidCheckpoint(path, f"expected ranks 0..{BASE_VOCAB - 1}, found {len(ranks)} tokens",
                                "Pass the o200k_base.tiktoken file")
    return ranks


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


def _last_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes] | None:
    """The two parts byte-level BPE holds when only merges ranked below `token` are allowed."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            return None
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def build_tokenizer_json(ranks: dict[bytes, int]) -> dict:
    """The tokenizer.json document for o200k_harmony over the given o200k_base ranks."""
    to_text = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_text[b] for b in token)

    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    merges = []
    for token, _ in by_rank:
        if len(token) > 1 and (pair := _last_merge(token, ranks)) is not None:
            merges.append([text(pair[0]), text(pair[1])])
    added = [
        {"id": i, "content": special_token_name(i), "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i in range(BASE_VOCAB, VOCAB_SIZE)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": O200K_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {text(token): rank for token, rank in by_rank},
            "merges": merges,
        },
    }


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gptoss" / "tokenizer"


@lru_cache(maxsize=2)
def tokenizer_json_bytes(tiktoken_path: Path) -> bytes:
    """The UTF-8 tokenizer.json for a .tiktoken file, from the on-disk cache when it was built before."""
    raw = Path(tiktoken_path).read_bytes()
    key = f"{hashlib.sha256(raw).hexdigest()[:32]}-v{FORMAT_VERSION}"
    cached = _cache_dir() / f"o200k_harmony-{key}.json"
    if cached.is_file():
        return cached.read_bytes()
    data = json.dumps(build_tokenizer_json(load_ranks(tiktoken_path)), ensure_ascii=False, indent=2).encode()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, cached)
    except OSError:
        pass  # a read-only cache only costs a rebuild next time
    return data


def tokenizer_config(model_max_length: int) -> dict:
    """tokenizer_config.json as released: fast tokenizer, <|startoftext|> bos, <|return|> eos, <|endoftext|> pad."""
    decoder = {
        str(i): {"content": special_token_name(i), "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i in range(BASE_VOCAB, VOCAB_SIZE)
    }
    return {
        "added_tokens_decoder": decoder,
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|return|>",
        "extra_special_tokens": {},
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map() -> dict:
    """special_tokens_map.json as released."""
    return {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}
