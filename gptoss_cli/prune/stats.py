"""Per-layer, per-expert routing statistics of a gpt-oss GGUF over calibration text (REAP, frequency, EAN).

Collected with llama.cpp itself: the graph callback (gptoss_cli/prune/moe_hook.py) reads three tensors of
each layer's MoE block while the model runs over the text in windows, as `gptoss imatrix` reads activations.

File format (`save`/`load`): a NumPy .npz archive holding `counts` (int64), `gate_sum`, `reap_sum`,
`norm_sum` (float64), all [n_layer, n_expert], `layer_tokens` (int64, [n_layer]) and `meta`, a JSON string
with `format` ("gptoss-expert-stats/1"), `tokens`, `source`, `top_k`, `chunk_tokens` and `texts`.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.errors import BadInputError, OutputError, RunFailure

FORMAT = "gptoss-expert-stats/1"
DEFAULT_CALIB_TOKENS = 32768
DEFAULT_CHUNK_TOKENS = 512      # the window each run of the model sees, as llama-imatrix's default -c 512
_HASHED_BYTES = 4 << 20         # the source fingerprint hashes the file's first 4 MiB (header and vocabulary)
_ARRAYS = ("counts", "gate_sum", "reap_sum", "norm_sum")


class StatsFileError(BadInputError):
    """An expert-statistics file that is missing or not readable."""

    what = "cannot read expert statistics"


@dataclass
class ExpertStats:
    """Sums over the calibration tokens routed to each expert of each layer (see the module docstring)."""

    counts: np.ndarray      # [n_layer, n_expert] int64: tokens routed to the expert (top-k selections)
    gate_sum: np.ndarray    # [n_layer, n_expert] float64: sum over routed tokens of the gate weight
    reap_sum: np.ndarray    # [n_layer, n_expert] float64: sum over routed tokens of gate * ||expert output||_2
    norm_sum: np.ndarray    # [n_layer, n_expert] float64: sum over routed tokens of ||expert output||_2 (EAN)
    tokens: int             # calibration tokens evaluated
    source: str             # the GGUF it was computed on: file name, size and a hash of its first 4 MiB
    # [n_layer] int64: tokens each layer's statistics rest on
    layer_tokens: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: __post_init__ derives it
    top_k: int = 0          # experts each token is routed to (4 for gpt-oss)
    chunk_tokens: int = 0   # window length the model ran over
    texts: str = ""         # what the calibration text was (for the record)

    def __post_init__(self) -> None:
        if self.layer_tokens is None:
            k = max(self.top_k, 1)
            self.layer_tokens = (np.asarray(self.counts).sum(axis=1) // k).astype(np.int64)

    @property
    def n_layer(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_expert(self) -> int:
        return int(self.counts.shape[1])

    def mean(self, sums: np.ndarray) -> np.ndarray:
        """sums / counts per expert, 0 where an expert was never routed to."""
        return np.where(self.counts > 0, sums / np.maximum(self.counts, 1), 0.0)

    def matches(self, gguf: Path) -> bool:
        """Whether these statistics were computed on this GGUF file (same fingerprint)."""
        return self.source == source_id(gguf)

    def save(self, path: Path) -> None:
        """Write the .npz file atomically (<path>.partial, then rename)."""
        path = Path(path)
        meta = {"format": FORMAT, "tokens": int(self.tokens), "source": self.source, "top_k": int(self.top_k),
                "chunk_tokens": int(self.chunk_tokens), "texts": self.texts}
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as f:
                np.savez(f, counts=self.counts.astype(np.int64), gate_sum=self.gate_sum.astype(np.float64),
                         reap_sum=self.reap_sum.astype(np.float64), norm_sum=self.norm_sum.astype(np.float64),
                         layer_tokens=np.asarray(self.layer_tokens, np.int64), meta=np.array(json.dumps(meta)))
            partial.replace(path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise OutputError(path, exc.strerror or str(exc), "Check the folder and free disk space") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> ExpertStats:
        """Read a file written by save; StatsFileError naming the file when it is missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise StatsFileError(path, "no such file", "Compute it with `gptoss prune MODEL --stats FILE`")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in (*_ARRAYS, "layer_tokens", "meta")}
            meta = json.loads(str(arrays["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            stats = cls(counts=arrays["counts"].astype(np.int64), gate_sum=arrays["gate_sum"].astype(np.float64),
                        reap_sum=arrays["reap_sum"].astype(np.float64),
                        norm_sum=arrays["norm_sum"].astype(np.float64), tokens=int(meta["tokens"]),
                        source=str(meta["source"]), layer_tokens=arrays["layer_tokens"].astype(np.int64),
                        top_k=int(meta.get("top_k", 0)), chunk_tokens=int(meta.get("chunk_tokens", 0)),
                        texts=str(meta.get("texts", "")))
            _check(stats)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
            raise StatsFileError(path, f"not a readable statistics file ({exc})",
                                 "Pass a file written by `gptoss prune --stats`, or delete it to recompute") from None
        return stats


def _check(stats: ExpertStats) -> None:
    shape = stats.counts.shape
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"counts has shape {shape}, expected [n_layer, n_expert]")
    for name in _ARRAYS[1:]:
        if getattr(stats, name).shape != shape:
            raise ValueError(f"{name} has shape {getattr(stats, name).shape}, counts {shape}")
    if stats.layer_tokens.shape != (shape[0],):
        raise ValueError(f"layer_tokens has shape {stats.layer_tokens.shape}, expected ({shape[0]},)")
    if (stats.counts < 0).any() or not all(np.isfinite(getattr(stats, n)).all() for n in _ARRAYS[1:]):
        raise ValueError("negative counts or non-finite sums")


def source_id(gguf: Path) -> str:
    """A fingerprint of a GGUF file: its name, size and the sha256 of its first 4 MiB."""
    gguf = Path(gguf)
    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        h.update(f.read(_HASHED_BYTES))
        size = f.seek(0, io.SEEK_END)
    return f"{gguf.name} ({size} bytes, sha256 of the first 4 MiB {h.hexdigest()[:16]})"


def memory_note(gguf: Path, gpu_layers: int = 0) -> str | None:
    """A note when the model is larger than the free RAM: the statistics then read the experts from disk."""
    if not low_memory(gguf, gpu_layers):
        return None
    from gptoss_cli.memory.devices import ram_device

    size, free = Path(gguf).stat().st_size, ram_device().free
    return (f"the model ({size / 1e9:.1f} GB) is larger than the free RAM ({free / 1e9:.1f} GB): its experts are "
            "read from disk as each window needs them (mmap), which is slow; a smaller --calib-tokens is faster")


def low_memory(gguf: Path, gpu_layers: int = 0) -> bool:
    """Whether the experts must stay in the file's memory map: a CPU run with less free RAM than the file."""
    from gptoss_cli.memory.devices import ram_device

    free = ram_device().free
    return gpu_layers == 0 and free > 0 and Path(gguf).stat().st_size > 0.9 * free


def windows(tokens: list[int], calib_tokens: int, chunk_tokens: int) -> list[list[int]]:
    """The first calib_tokens tokens cut into windows of chunk_tokens (the last one may be shorter)."""
    tokens = tokens[:calib_tokens]
    return [tokens[i:i + chunk_tokens] for i in range(0, len(tokens), chunk_tokens)]


def collect_stats(gguf: Path, texts: list[str], *, calib_tokens: int = DEFAULT_CALIB_TOKENS,
                  threads: int | None = None, gpu_layers: int = 0,
                  progress: Callable[[int, int], None] | None = None,
                  chunk_tokens: int = DEFAULT_CHUNK_TOKENS, label: str = "",
                  mapped_experts: bool | None = None) -> ExpertStats:
    """Run the model over the texts (joined, special-token spellings parsed as harmony's tokens), cut into
    windows of chunk_tokens, up to calib_tokens tokens; progress(tokens done, tokens in all) at the start and
    after each window.
    mapped_experts: experts stay in the file's memory map (None: when the free RAM is short, see low_memory)."""
    from gptoss_cli.engine.scorer import Scorer
    from gptoss_cli.prune.moe_hook import MoeHook

    if calib_tokens < 1 or chunk_tokens < 1:
        raise BadInputError(None, f"--calib-tokens must be at least 1, got {calib_tokens}")
    gguf = Path(gguf)
    source = source_id(gguf)
    hook = MoeHook()
    with Scorer(gguf, chunk_tokens, threads=threads, gpu_layers=gpu_layers, all_logits=False,
                cb_eval=hook.callback,
                mapped_experts=low_memory(gguf, gpu_layers) if mapped_experts is None else mapped_experts) as llm:
        hook.setup(llm.model)
        tokens = [t for text in texts for t in llm.model.tokenize(text, special=True)]
        runs = windows(tokens, calib_tokens, chunk_tokens)
        if not runs:
            raise BadInputError(label or None, "the calibration text has no tokens", "Pass a non-empty --text FILE")
        total, done = sum(len(w) for w in runs), 0
        if progress:
            progress(0, total)
        for window in runs:
            llm.run(window)
            hook.raise_error(gguf)
            done += len(window)
            if progress:
                progress(done, total)
    acc = hook.acc
    if acc is None:
        raise RunFailure(gguf, "llama.cpp ran no MoE layer that the statistics could watch")
    return ExpertStats(acc.counts, acc.gate_sum, acc.reap_sum, acc.norm_sum, tokens=done, source=source,
                       layer_tokens=acc.layer_tokens, top_k=acc.top_k, chunk_tokens=chunk_tokens, texts=label)
