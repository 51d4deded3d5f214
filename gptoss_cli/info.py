"""`gptoss info`: a GGUF's metadata and a table of tensor classes x types x bytes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from converters.errors import InvalidCheckpoint
from converters.tensor_map import classify
from gptoss_cli import paths, ui

SHOWN_KEYS = ("general.architecture", "general.name", "general.file_type", "gptoss.recipe", "gptoss.version",
              "gptoss.source.repo", "gptoss.source.revision", "gpt-oss.block_count", "gpt-oss.context_length",
              "gpt-oss.embedding_length", "gpt-oss.expert_count", "gpt-oss.expert_used_count",
              "gpt-oss.attention.head_count", "gpt-oss.attention.head_count_kv",
              "gpt-oss.attention.sliding_window", "gpt-oss.rope.scaling.type", "tokenizer.ggml.pre")


def read_gguf_info(path: Path) -> dict:
    """Metadata and per-class tensor statistics of a GGUF file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError) as exc:
        raise InvalidCheckpoint(path, f"not a readable GGUF file ({exc})") from exc
    meta = {}
    for key in SHOWN_KEYS:
        field = reader.get_field(key)
        if field is not None:
            value = field.contents()
            meta[key] = value.name if hasattr(value, "name") else value
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in reader.tensors:
        g = groups[(classify(t.name), t.tensor_type.name)]
        g[0] += 1
        g[1] += int(t.n_bytes)
    classes = [{"class": c, "type": q, "tensors": n, "bytes": b}
               for (c, q), (n, b) in sorted(groups.items(), key=lambda kv: -kv[1][1])]
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return {"path": str(path), "size": path.stat().st_size, "tensors": len(reader.tensors),
            "vocab": len(tokens.data) if tokens is not None else 0, "metadata": meta, "classes": classes}


def run_info(model: str | None, as_json: bool) -> dict:
    """Resolve a GGUF and print its info as tables or JSON."""
    path = paths.resolve_gguf(model)
    info = read_gguf_info(path)
    if as_json:
        ui.print_json(info)
        return info
    rows = [(k, v) for k, v in info["metadata"].items()]
    rows += [("tensors", info["tensors"]), ("vocabulary", info["vocab"]), ("file size", ui.human_bytes(info["size"]))]
    ui.table(str(path), ["key", "value"], rows)
    ui.table("tensor classes", ["class", "type", "tensors", "size"],
             [(c["class"], c["type"], c["tensors"], ui.human_bytes(c["bytes"])) for c in info["classes"]],
             right=["tensors", "size"])
    return info
