"""The converter on gpt-oss-20b's full shapes: `gptoss quantize --recipe bf16` of a random checkpoint with the
real widths and all 24 layers (13.8 GB of safetensors) against `cp` of the same shards.

Input and output together exceed this machine's page cache, so the overlap of reading, repacking and writing
decides the time, which the 2-layer slice of `convert` does not show. The runs alternate; medians are kept.

    python -m tests.bench.convert_full_bench WORKDIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from tests.bench.convert_bench import input_bytes, median_of, timed


def full_checkpoint(folder: Path) -> Path:
    """A random checkpoint with gpt-oss-20b's exact shapes (the slice preset with 24 layers), written once."""
    from converters.fixture import PRESETS, write_checkpoint

    if not (folder / "config.json").exists():
        write_checkpoint(folder, dataclasses.replace(PRESETS["slice"], layers=24), seed=0, force=True)
    return folder


def run(workdir: Path, recipe: str = "bf16", repeats: int = 3) -> dict:
    """Time `gptoss quantize` of the full shapes and `cp` of its shards, alternating; medians and peak RSS."""
    workdir.mkdir(parents=True, exist_ok=True)
    need = 3 * 14_000_000_000 + (2 << 30)
    if not (workdir / "full20b" / "config.json").exists() and shutil.disk_usage(workdir).free < need:
        return {"skipped": f"needs {need / 1e9:.0f} GB free in {workdir}"}
    ckpt = full_checkpoint(workdir / "full20b")
    shards = sorted(ckpt.glob("*.safetensors"))
    out, copy_dir = workdir / f"full20b-{recipe}.gguf", workdir / "cp"
    ours, cps = [], []
    try:
        for _ in range(repeats):
            shutil.rmtree(copy_dir, ignore_errors=True)
            copy_dir.mkdir()
            cps.append(timed(["cp", *map(str, shards), str(copy_dir)], inputs=shards))
            shutil.rmtree(copy_dir)
            ours.append(timed([sys.executable, "-m", "gptoss_cli", "quantize", str(ckpt), "--recipe", recipe,
                               "-o", str(out), "--force"], inputs=shards))
            ours[-1]["out_mb"] = round(out.stat().st_size / 1e6, 1)
            out.unlink()
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)
        out.unlink(missing_ok=True)
    o, c = median_of(ours), median_of(cps)
    return {"recipe": recipe, "input_mb": round(input_bytes(ckpt) / 1e6, 1), "gptoss": o, "cp": c,
            "ratio_vs_cp": round(o["seconds"] / c["seconds"], 2), "goal": "<= 1.5x cp, peak RSS <= 1.5 GB"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipe", default="bf16")
    args = ap.parse_args()
    print(json.dumps(run(args.workdir, args.recipe, args.repeats), indent=1))
    sys.exit(0)
