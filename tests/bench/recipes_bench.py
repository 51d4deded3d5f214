"""Recipe benchmark: size, KL against the f16 file and time to quantize, for every shipped recipe.

On the real-width slice (rows of 2880) llama.cpp's K-quants do not fit a 256 block and fall back to Q4_0 /
Q5_0, so the experts-* recipes are not smaller than mxfp4 there; the table shows what a user would get.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the model reads a long text about rivers mountains cities music numbers and the weather in spring "
         "while the engineer writes code tests and notes on quantization of experts layers and tokens").split()
CTX, CHUNKS = 128, 4


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "gptoss_cli", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"gptoss {' '.join(args[:3])} failed: {r.stderr.strip()[-2000:]}")
    return r


def _text(path: Path, n_words: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(n_words)))
    return path


def run(checkpoint: Path, workdir: Path) -> dict:
    """Quantize the checkpoint with every recipe (imatrix from the f16 file), then eval each against f16."""
    from converters.recipes import RECIPES

    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GPTOSS_HOME": str(workdir / "home"), "XDG_STATE_HOME": str(workdir / "state"),
           "TIKTOKEN_ENCODINGS_BASE": str(ROOT / "tests" / "data")}
    calib, sample = _text(workdir / "calib.txt", 1200, 1), _text(workdir / "sample.txt", 900, 2)
    files, rows = {}, []
    order = ["f16"] + [r for r in RECIPES if r != "f16"]
    imatrix = workdir / "slice.imatrix.gguf"
    for recipe in order:
        out = workdir / f"slice-{recipe}.gguf"
        extra = ["--imatrix", str(imatrix)] if RECIPES[recipe].needs_imatrix else []
        planned = json.loads(_cli("quantize", str(checkpoint), "-r", recipe, *extra, "--dry-run", "--json",
                                  env=env).stdout)["bytes"]
        start = time.perf_counter()
        _cli("quantize", str(checkpoint), "-r", recipe, *extra, "-o", str(out), "--force", "--json", env=env)
        seconds = time.perf_counter() - start
        files[recipe] = out
        rows.append({"recipe": recipe, "bytes": out.stat().st_size, "dry_run_exact": planned == out.stat().st_size,
                     "quantize_s": round(seconds, 2)})
        if recipe == "f16":
            _cli("imatrix", str(out), "--text", str(calib), "-c", str(CTX), "-o", str(imatrix), "--force", env=env)
    report = json.loads(_cli("eval", str(files["f16"]), *[str(files[r]) for r in order], "--text", str(sample),
                             "-c", str(CTX), "--chunks", str(CHUNKS), "--json", env=env).stdout)
    for row, res in zip(rows, report["results"][1:], strict=True):
        row.update(kl_mean=res["kl_mean"], kl_p99=res["kl_p99"], top1=res["top1"], ppl=res["ppl"])
    for f in files.values():
        f.unlink(missing_ok=True)
    return {"checkpoint": str(checkpoint), "eval_tokens": report["scored_tokens"], "recipes": rows}


def table(result: dict) -> str:
    """The README table (markdown)."""
    lines = ["| recipe | size | KL mean vs f16 | KL p99 | top-1 | time to quantize |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["recipes"]:
        lines.append(f"| {r['recipe']} | {r['bytes'] / 2**20:.1f} MiB | {r['kl_mean']:.2e} | {r['kl_p99']:.2e} | "
                     f"{100 * r['top1']:.1f}% | {r['quantize_s']:.1f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(res, indent=2))
    print(table(res))
