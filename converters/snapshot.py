"""Open a gpt-oss Hugging Face snapshot folder: config, index and every shard header, validated up front."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.errors import InvalidCheckpoint
from converters.safetensors_io import SafetensorsFile, TensorEntry
from converters.tensor_map import expected_sources

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
TOKENIZER = "tokenizer.json"
# HF cache layout: .../models--<org>--<name>/snapshots/<revision>/
_HF_CACHE_RE = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{7,64})/?$")


@dataclass(frozen=True)
class HParams:
    """The hyper-parameters of a gpt-oss config.json that conversion and llama.cpp need."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    experts_used: int
    intermediate: int
    vocab_size: int
    context_length: int
    sliding_window: int
    rope_theta: float
    rms_eps: float
    rope_scaling: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict, path: Path) -> HParams:
        """Read the fields from a parsed config.json; raise InvalidCheckpoint on a missing or bad one."""
        try:
            hp = cls(
                hidden=int(config["hidden_size"]), layers=int(config["num_hidden_layers"]),
                heads=int(config["num_attention_heads"]), kv_heads=int(config["num_key_value_heads"]),
                head_dim=int(config["head_dim"]), experts=int(config["num_local_experts"]),
                experts_used=int(config["num_experts_per_tok"] if "num_experts_per_tok" in config
                                 else config["experts_per_token"]),
                intermediate=int(config["intermediate_size"]), vocab_size=int(config["vocab_size"]),
                context_length=int(config["max_position_embeddings"]),
                sliding_window=int(config["sliding_window"]), rope_theta=float(config["rope_theta"]),
                rms_eps=float(config["rms_norm_eps"]), rope_scaling=dict(config.get("rope_scaling") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidCheckpoint(path, f"config field {exc} is missing or not a number") from exc
        if hp.hidden % 32 or hp.intermediate % 32:
            raise InvalidCheckpoint(path, "hidden_size and intermediate_size must be multiples of 32 for MXFP4")
        return hp


class Snapshot:
    """A validated gpt-oss checkpoint folder; tensors are read lazily from mmapped shards."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InvalidCheckpoint(self.folder, "not a folder")
        self.config = _read_config(self.folder / CONFIG)
        self.hparams = HParams.from_config(self.config, self.folder / CONFIG)
        if not (self.folder / TOKENIZER).is_file():
            raise InvalidCheckpoint(self.folder / TOKENIZER, "tokenizer is missing",
                                    "Pull the complete snapshot (gptoss pull) including tokenizer.json")
        self.weight_map = _read_weight_map(self.folder)
        self.shards = {name: SafetensorsFile(self.folder / name) for name in sorted(set(self.weight_map.values()))}
        self._check_tensors()

    @property
    def source(self) -> tuple[str | None, str | None]:
        """(repo id, revision) when the folder is a Hugging Face cache snapshot, else (None, None)."""
        m = _HF_CACHE_RE.search(self.folder.resolve().as_posix())
        return (f"{m['org']}/{m['name']}", m["rev"]) if m else (None, None)

    def entry(self, name: str) -> TensorEntry:
        """The header record of a source tensor."""
        return self.shards[self.weight_map[name]].entries[name]

    def array(self, name: str) -> np.ndarray:
        """A source tensor as a zero-copy view of its mmapped shard."""
        return self.shards[self.weight_map[name]].array(name)

    def read_rows(self, name: str, start: int = 0, count: int | None = None,
                  buffer: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, start+count) of a source tensor's first axis, read into memory (into buffer when given)."""
        return self.shards[self.weight_map[name]].read_rows(name, start, count, buffer)

    def locate(self, name: str) -> tuple[int, int, Path]:
        """Where a source tensor's bytes are: an open descriptor of its shard, their first byte, the shard's path."""
        return self.shards[self.weight_map[name]].locate(name)

    def input_bytes(self) -> int:
        """Total bytes of all tensor data in the shards."""
        return sum(e.nbytes for f in self.shards.values() for e in f.entries.values())

    def close(self) -> None:
        """Release all shard mappings."""
        for f in self.shards.values():
            f.close()

    def _check_tensors(self) -> None:
        for name, shard in self.weight_map.items():
            if name not in self.shards[shard].entries:
                raise InvalidCheckpoint(self.folder / shard, f"tensor {name!r} listed in {INDEX} is not in this shard")
        for name, (dtype, shape) in expected_sources(self.hparams).items():
            if name not in self.weight_map:
                raise InvalidCheckpoint(self.folder, f"tensor {name!r} is missing from every shard")
            entry = self.entry(name)
            if entry.dtype != dtype or entry.shape != shape:
                raise InvalidCheckpoint(self.folder / self.weight_map[name],
                                        f"tensor {name!r} is {entry.dtype} {list(entry.shape)}, expected "
                                        f"{dtype} {list(shape)} for this config")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InvalidCheckpoint(path, f"{what} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCheckpoint(path, f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidCheckpoint(path, f"{what} is not a JSON object")
    return data


def _read_config(path: Path) -> dict:
    config = _read_json(path, "config")
    if config.get("model_type") != "gpt_oss":
        raise InvalidCheckpoint(path, f"model_type is {config.get('model_type')!r}, not 'gpt_oss'",
                                "gptoss converts gpt-oss checkpoints only")
    quant = (config.get("quantization_config") or {}).get("quant_method")
    if quant != "mxfp4":
        raise InvalidCheckpoint(path, f"experts are not MXFP4 (quant_method {quant!r})",
                                "Use the official openai/gpt-oss-20b or -120b weights")
    return config


def _read_weight_map(folder: Path) -> dict[str, str]:
    index_path = folder / INDEX
    if not index_path.exists():
        single = folder / SINGLE
        if not single.is_file():
            raise InvalidCheckpoint(folder, f"neither {INDEX} nor {SINGLE} is present")
        return {name: SINGLE for name in SafetensorsFile(single).entries}
    index = _read_json(index_path, "safetensors index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidCheckpoint(index_path, "has no weight_map")
    for shard in sorted(set(weight_map.values())):
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard.startswith("."):
            raise InvalidCheckpoint(index_path, f"shard name {shard!r} is not a plain file name")
        if not (folder / shard).is_file():
            raise InvalidCheckpoint(folder / shard, "shard listed in the index is missing",
                                    "Re-run `gptoss pull` to fetch the missing file")
    return weight_map
