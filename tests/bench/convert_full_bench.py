"""The converter on gpt-oss-20b's full shapes: `gptoss quantize --recipe bf16` of a checkpoint with the real
widths and all 24 layers (13.8 GB of safetensors; the random slice's two layers repeated) against `cp` of the same
shards.

Input and output together exceed this machine's page cache, so the overlap of reading, repacking and writing
decides the time, which the 2-layer slice of `convert` does not show. The runs alternate; medians are kept.

    python -m tests.bench.convert_full_bench SLICE_CHECKPOINT WORKDIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from tests.bench.convert_bench import alternate_with_cp, input_bytes, median_of

LAYERS = 24


def _entries(folder: Path) -> dict[str, tuple[Path, int, dict]]:
    """Every tensor of a checkpoint: its shard, the absolute offset of its bytes, its header entry."""
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with open(shard, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = (shard, 8 + n + info["data_offsets"][0], info)
    return out


def _write_shard(path: Path, tensors: list[tuple[str, tuple[Path, int, dict]]]) -> None:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (_, _, info) in tensors:
        size = info["data_offsets"][1] - info["data_offsets"][0]
        header[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as out:
        out.write(len(raw).to_bytes(8, "little") + raw)
        out.flush()
        for _, (shard, start, info) in tensors:
            pos, end = start, start + info["data_offsets"][1] - info["data_offsets"][0]
            with open(shard, "rb") as src:
                while pos < end:
                    n = os.copy_file_range(src.fileno(), out.fileno(), min(end - pos, 1 << 30), pos)
                    if n == 0:
                        raise RuntimeError(f"{shard}: ends before byte {end}")
                    pos += n


def full_checkpoint(slice_dir: Path, folder: Path, layers: int = LAYERS) -> Path:
    """gpt-oss-20b's exact shapes as a checkpoint: the real-width slice's tensors, its two layers repeated to
    `layers` (layer i holds the bytes of slice layer i % 2), in three shards like the release. Written once."""
    from converters.fixture import PRESETS, make_config

    if (folder / "config.json").exists():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    src = _entries(slice_dir)
    per_layer = sorted({n.split(".", 3)[3] for n in src if n.startswith("model.layers.")})
    names = ([("model.embed_tokens.weight", "model.embed_tokens.weight")]
             + [(f"model.layers.{i}.{rest}", f"model.layers.{i % 2}.{rest}")
                for i in range(layers) for rest in per_layer]
             + [(n, n) for n in sorted(src) if not n.startswith(("model.layers.", "model.embed_tokens."))])
    shards = [names[k * len(names) // 3:(k + 1) * len(names) // 3] for k in range(3)]
    weight_map = {}
    for k, group in enumerate(shards):
        shard = f"model-{k:05d}-of-00002.safetensors"
        _write_shard(partial / shard, [(name, src[origin]) for name, origin in group])
        weight_map.update({name: shard for name, _ in group})
    total = sum(p.stat().st_size for p in partial.glob("*.safetensors"))
    (partial / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config = make_config(dataclasses.replace(PRESETS["slice"], layers=layers))
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    written = ("config.json", "model.safetensors.index.json")
    for extra in slice_dir.iterdir():
        if not extra.name.endswith(".safetensors") and extra.name not in written:
            shutil.copyfile(extra, partial / extra.name)
    partial.rename(folder)
    return folder


def run(slice_dir: Path, workdir: Path, recipe: str = "bf16", repeats: int = 3) -> dict:
    """Time `gptoss quantize` of the full shapes and `cp` of its shards, alternating; medians and peak RSS."""
    workdir.mkdir(parents=True, exist_ok=True)
    need = 3 * 14_000_000_000 + (2 << 30)
    if not (workdir / "full20b" / "config.json").exists() and shutil.disk_usage(workdir).free < need:
        return {"skipped": f"needs {need / 1e9:.0f} GB free in {workdir}"}
    ckpt = full_checkpoint(slice_dir, workdir / "full20b")
    out, copy_dir = workdir / f"full20b-{recipe}.gguf", workdir / "cp"
    ours, cps = alternate_with_cp(ckpt, recipe, out, copy_dir, repeats)
    o, c = median_of(ours), median_of(cps)
    return {"recipe": recipe, "input_mb": round(input_bytes(ckpt) / 1e6, 1), "gptoss": o, "cp": c,
            "ratio_vs_cp": round(o["seconds"] / c["seconds"], 2), "goal": "<= 1.5x cp, peak RSS <= 1.5 GB"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slice_dir", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipe", default="bf16")
    args = ap.parse_args()
    print(json.dumps(run(args.slice_dir, args.workdir, args.recipe, args.repeats), indent=1))
    sys.exit(0)
