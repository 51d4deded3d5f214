"""The graph callback that collects expert statistics while llama.cpp runs a gpt-oss model.

llama.cpp's MoE block (src/llama-graph.cpp, build_moe_ffn, for gpt-oss: gating SOFTMAX_WEIGHT, down biases)
names the tensors it reads `ffn_moe_topk-<il>` (the selected experts, [k, n_tokens] i32, a view of the
argsort), `ffn_moe_weights_softmax-<il>` (the gate: softmax over the k selected router logits,
[1, k, n_tokens] f32) and `ffn_moe_down_biased-<il>` (each selected expert's output with its down bias,
before the gate multiplies it, [n_embd, k, n_tokens] f32). The scheduler asks the callback about every node
(ask=true) and calls it again once a wanted node is computed; the values are copied to the host there, from
whatever backend holds them, as llama-imatrix does.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import RunFailure
from converters.imatrix import _ggml_base, _GGMLTensor

TOPK, GATE, DOWN = "ffn_moe_topk", "ffn_moe_weights_softmax", "ffn_moe_down_biased"
_WANTED = re.compile(rb"(ffn_moe_topk|ffn_moe_weights_softmax|ffn_moe_down_biased)-(\d+)$")
_NAME_OFFSET = _GGMLTensor.name.offset
_PREFIX = b"ffn_moe_"


@dataclass
class Sums:
    """The running sums of ExpertStats, [n_layer, n_expert] each, and tokens seen per layer."""

    counts: np.ndarray
    gate_sum: np.ndarray
    reap_sum: np.ndarray
    norm_sum: np.ndarray
    layer_tokens: np.ndarray
    top_k: int = 0

    @classmethod
    def zeros(cls, n_layer: int, n_expert: int) -> Sums:
        z = lambda: np.zeros((n_layer, n_expert))  # noqa: E731
        return cls(np.zeros((n_layer, n_expert), np.int64), z(), z(), z(), np.zeros(n_layer, np.int64))

    def add(self, il: int, ids: np.ndarray, gates: np.ndarray, norms: np.ndarray) -> None:
        """One batch of one layer: ids, gates and output norms, each [n_tokens, k]."""
        n_expert = self.counts.shape[1]
        flat = ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= n_expert):
            raise ValueError(f"layer {il}: expert id outside 0..{n_expert - 1}")
        g, n = gates.reshape(-1).astype(np.float64), norms.reshape(-1).astype(np.float64)
        self.counts[il] += np.bincount(flat, minlength=n_expert)
        self.gate_sum[il] += np.bincount(flat, weights=g, minlength=n_expert)
        self.reap_sum[il] += np.bincount(flat, weights=g * n, minlength=n_expert)
        self.norm_sum[il] += np.bincount(flat, weights=n, minlength=n_expert)
        self.layer_tokens[il] += ids.shape[0]
        self.top_k = ids.shape[1]


class MoeHook:
    """Accumulates Sums from the three tensors of every MoE layer; `callback` goes to llama.cpp's cb_eval."""

    def __init__(self) -> None:
        import llama_cpp

        self.lib = _ggml_base()
        self.acc: Sums | None = None
        self.error: BaseException | None = None
        self._pending: dict[int, dict[str, np.ndarray]] = {}
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def setup(self, model) -> None:
        """Size the sums for a loaded engine.loader.Model (its layer count and expert count)."""
        from gptoss_cli.engine.gguf_header import read_metadata

        n_expert = read_metadata(model.path, {"gpt-oss.expert_count"}).get("gpt-oss.expert_count") or 0
        self.acc = Sums.zeros(model.n_layers, int(n_expert))

    def raise_error(self, gguf: Path) -> None:
        """Re-raise what went wrong inside the callback (Ctrl-C as KeyboardInterrupt, else RunFailure)."""
        exc, self.error = self.error, None
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        if exc is not None:
            raise RunFailure(gguf, f"collecting expert statistics failed ({exc})")

    def _on_node(self, ptr, ask, _user) -> bool:
        # Nothing may propagate into C: failures (Ctrl-C included) are kept and raised after the window.
        try:
            name = ctypes.string_at(ptr + _NAME_OFFSET)
            if not name.startswith(_PREFIX):
                return False
            m = _WANTED.match(name)
            if ask or m is None:
                return m is not None
            self._take(m.group(1).decode(), int(m.group(2)), ptr)
        except BaseException as exc:  # noqa: BLE001
            if self.error is None:
                self.error = exc
        return True

    def _take(self, kind: str, il: int, ptr: int) -> None:
        t = _GGMLTensor.from_address(ptr)
        if kind == TOPK:
            self._pending[il] = {TOPK: self._read(ptr, t, np.int32)[0, 0]}        # [n_tokens, k]
        elif kind == GATE:
            self._pending.setdefault(il, {})[GATE] = self._read(ptr, t, np.float32)[0, :, :, 0]
        else:
            got = self._pending.pop(il, {})
            if TOPK not in got or GATE not in got:
                raise ValueError(f"layer {il}: the expert output came before the routing")
            out = self._read(ptr, t, np.float32)[0]                                # [n_tokens, k, n_embd]
            norms = np.sqrt(np.einsum("tkd,tkd->tk", out, out, dtype=np.float64))
            if self.acc is None or il >= self.acc.counts.shape[0]:
                raise ValueError(f"layer {il} outside the model's layers")
            self.acc.add(il, got[TOPK], got[GATE], norms)

    def _read(self, ptr: int, t: _GGMLTensor, dtype) -> np.ndarray:
        """The tensor's values as an array [ne3, ne2, ne1, ne0], copied to the host (views keep their strides)."""
        n = self.lib.ggml_nbytes(ptr)
        buf = np.empty(n + (-n) % 8, np.uint8)
        self.lib.ggml_backend_tensor_get(ptr, buf.ctypes.data, 0, n)
        flat = buf.view(dtype)
        ne, nb = [int(x) for x in t.ne], [int(x) for x in t.nb]
        return np.lib.stride_tricks.as_strided(flat, shape=(ne[3], ne[2], ne[1], ne[0]),
                                               strides=(nb[3], nb[2], nb[1], nb[0]), writeable=False)
