"""`gptoss info`: a GGUF's metadata and a table of tensor classes x types x bytes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError, InvalidCheckpoint
from converters.tensor_map import classify
from gptoss_cli import paths, ui
from gptoss_cli.engine.gguf_header import read_header

SHOWN_KEYS = ("general.architecture", "general.name", "general.file_type", "gptoss.recipe", "gptoss.version",
              "gptoss.source.repo", "gptoss.source.revision", "gpt-oss.block_count", "gpt-oss.context_length",
              "gpt-oss.embedding_length", "gpt-oss.expert_count", "gpt-oss.expert_used_count",
              "gpt-oss.attention.head_count", "gpt-oss.attention.head_count_kv",
              "gpt-oss.attention.sliding_window", "gpt-oss.rope.scaling.type", "tokenizer.ggml.pre")


def read_gguf_info(path: Path) -> dict:
    """Metadata and per-class tensor statistics of a GGUF file."""
    try:
        header = read_header(path)
    except BadInputError as exc:
        raise InvalidCheckpoint(path, exc.why, exc.hint) from exc
    meta = {key: header.metadata[key] for key in SHOWN_KEYS if key in header.metadata}
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in header.tensors:
        g = groups[(classify(t.name), t.type.name)]
        g[0] += 1
        g[1] += t.n_bytes
    classes = [{"class": c, "type": q, "tensors": n, "bytes": b}
               for (c, q), (n, b) in sorted(groups.items(), key=lambda kv: -kv[1][1])]
    return {"path": str(path), "size": path.stat().st_size, "tensors": len(header.tensors),
            "vocab": header.array_lengths.get("tokenizer.ggml.tokens", 0), "metadata": meta, "classes": classes}


@dataclass
class InfoOptions:
    """Everything `gptoss info` was asked for."""

    model: str | None = None   # None: the last GGUF written
    as_json: bool = False


def run_info(opts: InfoOptions) -> dict:
    """Resolve a GGUF and print its info as tables or JSON."""
    path = paths.resolve_gguf(opts.model)
    info = read_gguf_info(path)
    if opts.as_json:
        ui.print_json(info)
        return info
    rows = [(k, v) for k, v in info["metadata"].items()]
    rows += [("tensors", info["tensors"]), ("vocabulary", info["vocab"]), ("file size", ui.human_bytes(info["size"]))]
    ui.table(str(path), ["key", "value"], rows)
    ui.table("tensor classes", ["class", "type", "tensors", "size"],
             [(c["class"], c["type"], c["tensors"], ui.human_bytes(c["bytes"])) for c in info["classes"]],
             right=["tensors", "size"])
    return info
