"""Converter benchmark: gptoss vs `cp` vs llama.cpp's convert_hf_to_gguf.py on the same real-width slice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.llama_tools import vendored_llama_cpp

# gptoss recipe -> convert_hf_to_gguf.py --outtype with the matching dense type
PEER_OUTTYPE = {"mxfp4": "q8_0", "f16": "f16", "bf16": "bf16"}


def timed(cmd: list[str], env: dict | None = None, inputs: list[Path] = ()) -> dict:
    """Run a command on a settled machine; wall seconds and peak RSS (MB).

    Before the clock starts: the inputs are read once (this machine's kernel pages out memory it has not
    touched for a few seconds, page cache included, so an input read a minute ago may be back on disk),
    then `sync` and a one-second pause, so that neither the writeback of earlier outputs nor the freeing of
    a just-deleted multi-GB file is billed to the command.
    """
    for path in inputs:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    os.sync()
    time.sleep(1.0)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{stderr[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def median_of(samples: list[dict]) -> dict:
    """The sample with the median time, with every time kept."""
    ordered = sorted(samples, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "samples_s": [r["seconds"] for r in samples]}


def peer_script(workdir: Path) -> Path:
    """llama.cpp's convert_hf_to_gguf.py from the llama-cpp-python sdist of the installed version."""
    return vendored_llama_cpp(workdir) / "convert_hf_to_gguf.py"


def input_bytes(checkpoint: Path) -> int:
    """Bytes of the safetensors shards."""
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


def alternate_with_cp(checkpoint: Path, recipe: str, out: Path, copy_dir: Path, repeats: int
                      ) -> tuple[list[dict], list[dict]]:
    """`cp` of the shards and `gptoss quantize` of the checkpoint, alternating `repeats` times; each run's timing."""
    shards = sorted(checkpoint.glob("*.safetensors"))
    ours, cps = [], []
    try:
        for _ in range(repeats):
            shutil.rmtree(copy_dir, ignore_errors=True)
            copy_dir.mkdir()
            cps.append(timed(["cp", *map(str, shards), str(copy_dir)], inputs=shards))
            shutil.rmtree(copy_dir)
            ours.append(timed([sys.executable, "-m", "gptoss_cli", "quantize", str(checkpoint), "--recipe", recipe,
                               "-o", str(out), "--force"], inputs=shards))
            ours[-1]["out_mb"] = round(out.stat().st_size / 1e6, 1)
            out.unlink()
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)
        out.unlink(missing_ok=True)
    return ours, cps


def run(checkpoint: Path, workdir: Path, recipes=("mxfp4", "f16", "bf16"), repeats: int = 5) -> dict:
    """Time every recipe with gptoss and with the peer, and `cp` of the same bytes, on the same input.

    gptoss and cp alternate `repeats` times per recipe (medians reported, each after the same settling);
    the peer, ~45 s a run, runs once per recipe.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    shards = sorted(checkpoint.glob("*.safetensors"))
    size = input_bytes(checkpoint)
    copy_dir = workdir / "cp"
    script = peer_script(workdir)
    peer_env = {"PYTHONPATH": str(script.parent / "gguf-py")}
    rows = []
    for recipe in recipes:
        out = workdir / f"gptoss-{recipe}.gguf"
        ours, cps = alternate_with_cp(checkpoint, recipe, out, copy_dir, repeats)
        ours_m, cp_m = median_of(ours), median_of(cps)
        peer_out = workdir / f"peer-{recipe}.gguf"
        peer = timed([sys.executable, str(script), str(checkpoint), "--outtype", PEER_OUTTYPE[recipe],
                      "--outfile", str(peer_out)], env=peer_env, inputs=shards)
        peer["out_mb"] = round(peer_out.stat().st_size / 1e6, 1)
        peer_out.unlink()
        rows.append({
            "recipe": recipe, "gptoss": ours_m, "convert_hf_to_gguf": peer, "cp": cp_m,
            "gptoss_mb_s": round(size / 1e6 / ours_m["seconds"], 1),
            "speedup_vs_convert_hf_to_gguf": round(peer["seconds"] / ours_m["seconds"], 2),
            "ratio_vs_cp": round(ours_m["seconds"] / cp_m["seconds"], 2),
        })
    return {"input_mb": round(size / 1e6, 1), "repeats": repeats, "rows": rows}
