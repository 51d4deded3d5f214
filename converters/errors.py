"""Typed exceptions raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

from pathlib import Path


class GptossError(Exception):
    """Base error: what failed, on which file or repo, why, and what to do next."""

    what = "operation failed"

    def __init__(self, target: str | Path | None, why: str, hint: str = "") -> None:
        self.target = str(target) if target is not None else None
        self.why = why
        self.hint = hint
        super().__init__(self.message())

    def message(self) -> str:
        """The one-line message of the conventions: what (target): why. hint."""
        where = f" ({self.target})" if self.target else ""
        text = f"{self.what}{where}: {self.why.rstrip('.')}."
        return f"{text} {self.hint.rstrip('.')}." if self.hint else text


class BadInputError(GptossError):
    """Bad input: a missing or malformed file, an unsupported model, a usage problem (exit 2)."""

    what = "bad input"


class InvalidCheckpoint(BadInputError):
    """A checkpoint file (config, index, safetensors shard, tokenizer) is missing or malformed."""

    what = "invalid checkpoint"


class OutputError(BadInputError):
    """The output cannot be written: exists, folder not writable, not enough disk."""

    what = "cannot write output"


class RecipeError(BadInputError):
    """An unknown recipe, type or tensor rule."""

    what = "bad recipe"


class ModelNotFound(BadInputError):
    """A model argument that resolves to nothing local."""

    what = "model not found"


class RunFailure(GptossError):
    """A failure at run time: network, server, model load, out of memory (exit 1)."""

    what = "failed"
