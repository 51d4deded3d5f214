"""Whole-window evaluation: the logits of every position of a token window (eval), or just the graph run
with an eval callback watching it (imatrix). Loaded through the one model loader, like chat."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from converters.errors import RunFailure
from gptoss_cli.engine.llama_glue import llama_log
from gptoss_cli.engine.loader import LoadOptions, ModelLoadFailure, load_model
from gptoss_cli.engine.threads import math_threads


class Scorer:
    """One model and a context of n_ctx tokens that decodes a whole window in one batch."""

    def __init__(self, path: Path, n_ctx: int, *, threads: int | None = None, gpu_layers: int | None = None,
                 all_logits: bool = True, cb_eval=None, mapped_experts: bool = False) -> None:
        import llama_cpp as lc

        self._lc, self.path, self.n_ctx, self._all = lc, Path(path), n_ctx, all_logits
        self.model = load_model(self.path, LoadOptions(gpu_layers=gpu_layers, mapped_experts=mapped_experts))
        cp = lc.llama_context_default_params()
        cp.n_ctx = cp.n_batch = n_ctx
        cp.n_ubatch = min(n_ctx, 512)
        cp.n_threads = cp.n_threads_batch = threads or math_threads()
        cp.no_perf = True
        if cb_eval is not None:
            cp.cb_eval, cp.cb_eval_user_data = cb_eval, None
        self._ctx = lc.llama_init_from_model(self.model.ptr, cp)
        if not self._ctx:
            self.model.close()
            raise ModelLoadFailure(self.path, llama_log().why("llama.cpp could not create the context"),
                                   "Try a smaller --ctx-size")
        self._batch = lc.llama_batch_init(n_ctx, 0, 1)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self.model.vocab)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (special-token text stays text)."""
        return self.model.tokenize(text, special=False)

    def run(self, tokens: list[int]) -> np.ndarray | None:
        """Decode tokens from position 0 on an empty cache; their logits [n, vocab] when all_logits."""
        lc, b, n = self._lc, self._batch, len(tokens)
        if not 0 < n <= self.n_ctx:
            raise ValueError(f"window of {n} tokens for a context of {self.n_ctx}")
        lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        for i, tok in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = tok, i, 1, 0
            b.logits[i] = self._all or i == n - 1
        b.n_tokens = n
        rc = lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise RunFailure(self.path, f"llama_decode failed with code {rc}")
        if not self._all:
            return None
        ptr = lc.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                     shape=(n, self.n_vocab)).copy()

    def close(self) -> None:
        """Free the batch, context and model (idempotent)."""
        lc = self._lc
        if self._ctx:
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            self._ctx = None
        self.model.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
