"""Test seam: GPTOSS_TEST_REPLY=FILE makes `gptoss chat` answer every prompt with FILE's harmony text.

The GGUF is still loaded and its tokenizer turns the file's text (special tokens included, e.g.
`<|channel|>analysis<|message|>...<|end|>`) into the tokens the "model" generates; everything after the
model (stop tokens, --max-tokens, harmony parsing, what reaches stdout, stderr and the REPL) runs as in a
real chat. A random-weight test model never writes harmony channels, so this is how the suite drives
real thinking text through the CLI. It acts only in a test run (GPTOSS_TEST_RUN=1, converters/seams.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from converters import seams


def with_script(backend):
    """The backend itself, or (GPTOSS_TEST_REPLY=FILE, tests only) a ScriptedBackend around it."""
    name = seams.value(seams.REPLY)
    return ScriptedBackend(backend, Path(name).read_bytes()) if name else backend


def script_tokens(real, script: bytes) -> list[int]:
    """The script's bytes as tokens, exactly: CRs kept, and a byte that is not valid UTF-8 becomes the
    one-byte token of that byte (as a model writing broken UTF-8 would)."""
    text = script.decode("utf-8", errors="surrogateescape")
    byte_token: dict[bytes, int] = {}
    tokens: list[int] = []
    for piece in re.split(r"([\udc80-\udcff])", text):
        if not piece:
            continue
        if "\udc80" <= piece <= "\udcff" and len(piece) == 1:
            if not byte_token:
                byte_token = {b: t for t in range(512) if len(b := real.token_bytes(t)) == 1}
            tokens.append(byte_token[piece.encode("utf-8", errors="surrogateescape")])
        else:
            tokens += real.tokenize(piece)
    return tokens


class ScriptedBackend:
    """A TokenBackend whose replies are a fixed token list, tokenized by the real model."""

    def __init__(self, real, script: bytes) -> None:
        self.real, self.tokens = real, script_tokens(real, script)
        self.n_ctx = real.n_ctx

    def __getattr__(self, name: str):
        return getattr(self.real, name)  # close(), stats and the rest: the real backend's

    def tokenize(self, text: str) -> list[int]:
        """The real model's tokenization."""
        return self.real.tokenize(text)

    def token_bytes(self, token: int) -> bytes:
        """The real model's bytes of one token."""
        return self.real.token_bytes(token)

    def generate(self, prompt: list[int], *, max_tokens: int, stop: set[int], **_):
        """Yield the script's tokens, honouring max_tokens and ending after a stop token, as the backend does."""
        for token in self.tokens[:max_tokens]:
            yield token
            if token in stop:
                return
