"""Benchmark: `gptoss pull` against plain `hf_hub_download` of the same files from the same loopback hub.

A multi-GB fixture repo laid out like openai/gpt-oss-20b (random shards, plus original/ and metal/ decoys
that neither side downloads) is served by tests/hubserver.py on 127.0.0.1. Each side runs in a fresh
process into an empty HF cache: gptoss (sha256 verification on, its default), gptoss --no-verify, and
huggingface_hub's `hf_hub_download` for each needed file on a thread pool of the same width (8), with its
default 10 MiB read size and with gptoss's 1 MiB (to separate that setting from the rest). Runs are
interleaved in a rotating order, the disk is synced before each, and the median is kept. Throughput is
bytes / transfer time (HEAD + GET + cache link; process start and the repo listing excluded on both sides).
Goal: gptoss with verification >= 95 % of plain.

    python -m tests.bench.pull_bench [--size-gb 3] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hubserver import HubServer  # noqa: E402

from gptoss_cli.hub.client import CHUNK_SIZE  # noqa: E402

REPO = "bench/gpt-oss-bench"
GOAL = 0.95
PLAIN = """
import json, os, sys, time
import huggingface_hub.constants as constants
constants.DOWNLOAD_CHUNK_SIZE = int(os.environ.get("BENCH_CHUNK") or constants.DOWNLOAD_CHUNK_SIZE)
from concurrent.futures import ThreadPoolExecutor
from huggingface_hub import HfApi, hf_hub_download
repo, names = sys.argv[1], sys.argv[2:]
commit = HfApi().model_info(repo).sha
start = time.perf_counter()
with ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda n: hf_hub_download(repo, n, revision=commit), names))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def make_fixture(folder: Path, size_gb: float) -> dict[str, Path]:
    """Three random shards totalling size_gb plus the small files and decoys (reused if already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = int(size_gb * 1e9 / 3)
    files = {f"model-0000{i}-of-00002.safetensors": shard for i in range(3)}
    files |= {"original/model.safetensors": 8 << 20, "metal/model.bin": 8 << 20}
    out = {}
    for name, size in files.items():
        path = folder / name.replace("/", "__")
        if not path.is_file() or path.stat().st_size != size:
            with open(path, "wb") as f:
                for left in range(size, 0, -(64 << 20)):
                    f.write(os.urandom(min(left, 64 << 20)))
        out[name] = path
    config = json.loads((ROOT / "tests" / "data" / "gpt-oss-20b.config.json").read_text())
    index = {"weight_map": {f"t{i}": n for i, n in enumerate(sorted(n for n in files if n.startswith("model-")))}}
    for name, doc in (("config.json", config), ("model.safetensors.index.json", index)):
        (folder / name).write_text(json.dumps(doc))
        out[name] = folder / name
    return out


def _gptoss(env: dict, verify: bool) -> float:
    cmd = [sys.executable, "-m", "gptoss_cli", "pull", REPO, "--json"] + ([] if verify else ["--no-verify"])
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"gptoss pull failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout)["seconds"]


def _plain(env: dict, names: list[str], chunk: int | None = None) -> float:
    env = {**env, "BENCH_CHUNK": str(chunk or "")}
    r = subprocess.run([sys.executable, "-c", PLAIN, REPO, *names], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"hf_hub_download failed: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout)["seconds"]


def _sha256_rate(paths: list[Path]) -> float:
    start, total = time.perf_counter(), 0
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(8 << 20):
                h.update(block)
                total += len(block)
    return total / 1e6 / (time.perf_counter() - start)


def run(workdir: Path, size_gb: float = 3.0, repeats: int = 3) -> dict:
    """MB/s of gptoss pull (verify on and off) and of plain hf_hub_download, their ratio, the sha256 rate."""
    workdir = Path(workdir)
    files = make_fixture(workdir / "fixture", size_gb)
    needed = sorted(n for n in files if "/" not in n)
    total = sum(files[n].stat().st_size for n in needed)
    times: dict[str, list[float]] = {"gptoss": [], "gptoss --no-verify": [], "hf_hub_download": [],
                                     "hf_hub_download, 1 MiB chunks": []}
    with HubServer() as hub:
        hub.add_repo(REPO, files)
        names = list(times)
        for i in range(repeats):
            for name in names[i % len(names):] + names[:i % len(names)]:  # rotated, so no side always goes first
                home = workdir / f"hf-{i}-{len(name)}"
                shutil.rmtree(home, ignore_errors=True)
                os.sync()  # the previous run's dirty pages are written back before this one is timed
                env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(home), "NO_COLOR": "1",
                       "GPTOSS_HOME": str(workdir / "gptoss"), "XDG_STATE_HOME": str(workdir / "state"),
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
                if name.startswith("hf_hub_download"):
                    seconds = _plain(env, needed, CHUNK_SIZE if "1 MiB" in name else None)
                else:
                    seconds = _gptoss(env, verify=name == "gptoss")
                times[name].append(seconds)
                if i == repeats - 1 and name == "gptoss":
                    snap = next((home / "hub").glob("models--*/snapshots/*"))
                    sha_rate = _sha256_rate([snap / n for n in needed])
                shutil.rmtree(home, ignore_errors=True)
        stray = {n for n in hub.served if "/" in n}
    rows = [{"name": name, "seconds": round(statistics.median(t), 3),
             "mb_per_s": round(total / 1e6 / statistics.median(t), 1), "runs_s": [round(x, 3) for x in t]}
            for name, t in times.items()]
    by = {r["name"]: r for r in rows}
    ratio = by["gptoss"]["mb_per_s"] / by["hf_hub_download"]["mb_per_s"]
    return {"bytes": total, "files": len(needed), "repeats": repeats, "rows": rows,
            "ratio_verified_vs_plain": round(ratio, 4),
            "ratio_unverified_vs_plain": round(by["gptoss --no-verify"]["mb_per_s"]
                                               / by["hf_hub_download"]["mb_per_s"], 4),
            # gptoss sets huggingface_hub's read size to 1 MiB (finer resume and progress); this isolates that
            "ratio_verified_vs_plain_same_chunk": round(by["gptoss"]["mb_per_s"]
                                                        / by["hf_hub_download, 1 MiB chunks"]["mb_per_s"], 4),
            "sha256_mb_per_s": round(sha_rate, 1), "decoys_downloaded": sorted(stray),
            "goal": {"ratio_min": GOAL, "met": ratio >= GOAL}}


def main() -> None:
    """Command line: print the result as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pull-bench-"))
    print(json.dumps(run(workdir, args.size_gb, args.repeats), indent=2))


if __name__ == "__main__":
    main()
