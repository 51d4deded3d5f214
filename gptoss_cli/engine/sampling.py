"""Token sampling from llama.cpp's logits: greedy, temperature, top-p, a seeded draw.

The same distribution as llama.cpp's temp + top-p + dist chain, vectorised. llama.cpp's sampler chain runs a
scalar softmax over gpt-oss's 201k-token vocabulary for every token (once per slot per step in serve); here
the exponentials come from ggml's own SIMD softmax kernel (numpy's exp where the build does not export it),
and the draw picks a 512-token block by its mass, then a token inside it, so it never needs a 201k-long cumsum.
`make bench ONLY=chat` compares the result with llama.cpp's own decode loop.
"""

from __future__ import annotations

import numpy as np

# top-p looks at the most likely tokens first; a full sort of 201k probabilities is the last resort.
_TOP_P_TRIES = (64, 1024)
_BLOCK = 512   # the draw picks a block of tokens by its mass, then a token inside it


class Sampler:
    """Draws one token from logits; temperature <= 0 is greedy."""

    def __init__(self, n_vocab: int, *, temperature: float, top_p: float, seed: int | None) -> None:
        from gptoss_cli.engine import ggml

        self.n_vocab = n_vocab
        self.temperature, self.top_p = temperature, top_p
        self._rng = np.random.default_rng(None if seed is None or seed < 0 else seed)
        padded = -(-n_vocab // _BLOCK) * _BLOCK
        self._pad = np.zeros(padded, dtype=np.float32)   # weights, zero past the vocabulary
        self._buf = self._pad[:n_vocab]
        self._scaled = np.empty(n_vocab, dtype=np.float32)
        self._softmax = ggml.vec_soft_max()

    def logits(self, ctx, idx: int) -> np.ndarray:
        """The logits llama.cpp holds for output idx (-1: the last), as a read-only view."""
        import llama_cpp as lc

        view = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, idx), shape=(self.n_vocab,))
        view.flags.writeable = False
        return view

    def sample(self, ctx, idx: int) -> int:
        """A token drawn from the logits of output idx."""
        return self.draw(self.logits(ctx, idx))

    def draw(self, logits: np.ndarray) -> int:
        """A token drawn from these logits (-inf: never). As llama.cpp's chain: top-p first, on the
        untempered distribution, then the temperature over the tokens it kept."""
        if self.temperature <= 0:
            return int(np.argmax(logits))
        if self.top_p < 1.0:
            keep = self._nucleus(logits)
            kept = logits[keep].astype(np.float64)
            w = np.exp((kept - kept.max()) / self.temperature)
            cum = np.cumsum(w)
            return int(keep[np.searchsorted(cum, self._rng.random() * cum[-1], side="right")])
        self._weights(logits, 1.0 / self.temperature)
        return self._pick()

    def _weights(self, logits: np.ndarray, scale: float) -> float:
        """exp((logits - max) * scale) into the buffer; returns their sum."""
        src = np.ascontiguousarray(logits, dtype=np.float32)
        if scale != 1.0:
            src = np.multiply(src, np.float32(scale), out=self._scaled)
        top = float(src.max())
        if self._softmax is not None:
            return self._softmax(self.n_vocab, self._buf.ctypes.data, src.ctypes.data, top)
        p = self._buf
        np.subtract(src, top, out=p)
        np.exp(p, out=p)
        return float(p.sum(dtype=np.float64))

    def _pick(self) -> int:
        """A token drawn in proportion to the weights in the buffer."""
        blocks = self._pad.reshape(-1, _BLOCK)
        mass = np.cumsum(blocks.sum(axis=1), dtype=np.float64)   # float32 sums of 512 weights: ~1e-7 off
        r = self._rng.random() * mass[-1]
        b = min(int(np.searchsorted(mass, r, side="right")), mass.size - 1)
        inside = np.cumsum(blocks[b], dtype=np.float64)
        r -= mass[b - 1] if b else 0.0
        i = min(int(np.searchsorted(inside, r, side="right")), _BLOCK - 1)
        while blocks[b, i] == 0:   # rounding at a block's end: step back to a token that has weight
            b, i = (b, i - 1) if i else (b - 1, _BLOCK - 1)
        return b * _BLOCK + i

    def _nucleus(self, logits: np.ndarray) -> np.ndarray:
        """The most likely tokens whose probability reaches top_p (at least one)."""
        target = self.top_p * self._weights(logits, 1.0)
        p, n = self._buf, self.n_vocab
        for k in (k for k in _TOP_P_TRIES if k < n):
            top = np.argpartition(p, n - k)[n - k:]
            top = top[np.argsort(-p[top], kind="stable")]
            cut = int(np.searchsorted(np.cumsum(p[top], dtype=np.float64), target, side="left"))
            if cut < top.size:
                return top[:cut + 1]
            if k * 4 > n:
                break
        desc = np.sort(p)[::-1]   # wide distributions: the smallest probability that top-p keeps
        cut = min(int(np.searchsorted(np.cumsum(desc, dtype=np.float64), target, side="left")), n - 1)
        return np.flatnonzero(p >= desc[cut])
