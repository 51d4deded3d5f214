"""Hugging Face tokenizer files -> the GGUF vocabulary llama.cpp needs for gpt-oss (BPE, pre-tokenizer gpt-4o)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from gguf import TokenType

from converters.errors import InvalidCheckpoint

PRE_TOKENIZER = "gpt-4o"        # llama.cpp's name for the o200k split regex
TOKENIZER_MODEL = "gpt2"         # llama.cpp's byte-level BPE
BOS_TEXT = "<|startoftext|>"


@dataclass
class Vocab:
    """Tokens, their types, merges, special ids and the chat template, ready for GGUF."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    pad_id: int
    chat_template: str | None


def load_vocab(folder: Path, vocab_size: int, config: dict) -> Vocab:
    """Read tokenizer.json (+ config/chat template) from a snapshot folder; parsed once per process and files."""
    bos = config.get("bos_token_id")
    ids = (None if bos is None else int(bos), int(_first(config.get("eos_token_id"), 200002)),
           int(_first(config.get("pad_token_id"), 199999)))
    return _load_vocab(Path(folder).resolve(), vocab_size, ids, _stamp(Path(folder)))


def _stamp(folder: Path) -> tuple:
    """Size and mtime of the files a Vocab is read from (a changed file means a new parse)."""
    stamp: list[tuple[int, int] | None] = []
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        try:
            st = (folder / name).stat()
            stamp.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


@functools.lru_cache(maxsize=2)
def _load_vocab(folder: Path, vocab_size: int, ids: tuple[int | None, int, int], _stamp: tuple) -> Vocab:
    bos, eos, pad = ids
    path = folder / "tokenizer.json"
    try:
        data = json.loads(path.read_bytes())
        model = data["model"]
        vocab: dict[str, int] = model["vocab"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(path, f"not a readable BPE tokenizer.json ({exc})") from exc
    if model.get("type") != "BPE":
        raise InvalidCheckpoint(path, f"tokenizer model is {model.get('type')!r}, expected BPE")
    tokens: list[str | None] = [None] * vocab_size
    types = [int(TokenType.NORMAL)] * vocab_size
    for text, idx in vocab.items():
        if 0 <= idx < vocab_size:
            tokens[idx] = text
    for added in data.get("added_tokens", []):
        idx = added.get("id", -1)
        if 0 <= idx < vocab_size:
            tokens[idx] = added["content"]
            types[idx] = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
    for idx, tok in enumerate(tokens):
        if tok is None:  # ids the tokenizer does not define: unused padding entries
            tokens[idx], types[idx] = f"[PAD{idx}]", int(TokenType.UNUSED)
    names = [tok for tok in tokens if tok is not None]  # all of them now; typed list[str]
    if bos is None:
        bos = names.index(BOS_TEXT) if BOS_TEXT in names else 199998
    return Vocab(
        tokens=names, types=types, merges=merges, bos_id=bos, eos_id=eos, pad_id=pad,
        chat_template=_chat_template(folder),
    )


def _first(value, default: int) -> int:
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = cfg.get("chat_template")
    return template if isinstance(template, str) else None
