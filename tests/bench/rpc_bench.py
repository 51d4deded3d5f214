"""Benchmark: the RPC protocol's overhead. `gptoss chat -p` on this machine alone vs over two loopback
`gptoss worker`s, same GGUF, prompt and settings; and the load time of a first vs a cached load.

Each run is a fresh `gptoss chat --json` process (greedy, fixed token count). Prompt speed is prompt tokens
over time to first token; decode speed is chat's own figure; load time is the process's wall time minus
the turn (Python start-up included, the same on both sides). The workers keep received weights in a
--cache folder: the first RPC run fills it (every weight crosses the socket), the second finds tensors
over ggml-rpc's 10 MiB threshold there by hash. Both workers share this machine's cores with the client,
so the numbers bound the protocol's cost from above; two machines add the network on top.

Greedy text: a worker's CPU device has none of llama.cpp's extra CPU buffer types (CPU_REPACK), so its
matrix kernels round differently from a local run's; on random weights, whose top logits nearly tie, the
text can part after some tokens. The bench therefore also runs locally with those buffer types off
(tests/bench/plain_cpu.py) and says which local run each row's text equals.

    python -m tests.bench.rpc_bench path/to/model.gguf [--tokens 64] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(cache: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "gptoss_cli", "worker", "--port", str(port), "--cache", str(cache)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    proc.stdout.readline()
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"worker did not start: {log.read_text()[-500:]}")


def _chat(gguf: Path, tokens: int, ctx: int, rpc: str | None, module: str = "gptoss_cli") -> dict:
    cmd = [sys.executable, "-m", module, "chat", str(gguf), "-p", PROMPT, "--json", "--temperature", "0",
           "--max-tokens", str(tokens), "--ctx-size", str(ctx)] + (["--rpc", rpc] if rpc else [])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"gptoss chat failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    doc = json.loads(r.stdout)
    t = doc["timings"]
    return {"load_s": round(wall - t["total_s"], 3), "prompt_tokens": doc["tokens"]["prompt"],
            "prompt_tps": round(doc["tokens"]["prompt"] / t["ttft_s"], 1), "decode_tps": t["decode_tokens_per_s"],
            "generated": doc["tokens"]["generated"], "answer": doc["analysis"] + doc["final"]}


def _machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def _median(runs: list[dict]) -> dict:
    """One row from repeated runs: the median of each speed and load time (the answers must agree)."""
    row = dict(runs[0])
    for key in ("load_s", "prompt_tps", "decode_tps"):
        row[key] = round(statistics.median(r[key] for r in runs), 3 if key == "load_s" else 1)
    row["repeats"] = len(runs)
    row["answers_agree"] = len({r["answer"] for r in runs}) == 1
    return row


def run(gguf: Path, tokens: int = 64, ctx: int = 2048, out: Path | None = None, repeats: int = 3) -> dict:
    """Local and over two loopback workers (first load, then cached loads), `repeats` runs each; one dict with a
    row per kind of run, medians, and which runs gave the local greedy text."""
    work = Path(tempfile.mkdtemp(prefix="rpc-bench-", dir=out))
    result = {"model": str(gguf), "tokens": tokens, **_machine(), "rows": []}
    rows = result["rows"]
    rows.append({"run": "local", **_median([_chat(gguf, tokens, ctx, None) for _ in range(repeats)])})
    rows.append({"run": "local, extra CPU buffer types off",
                 **_median([_chat(gguf, tokens, ctx, None, "tests.bench.plain_cpu") for _ in range(repeats)])})
    workers = [_start_worker(work / f"cache{i}", work / f"worker{i}.log") for i in range(2)]
    try:
        spec = ",".join(endpoint for _, endpoint in workers)
        rows.append({"run": "2 loopback workers, first load", **_median([_chat(gguf, tokens, ctx, spec)])})
        rows.append({"run": "2 loopback workers, cached load",
                     **_median([_chat(gguf, tokens, ctx, spec) for _ in range(repeats)])})
    finally:
        for proc, _ in workers:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    local, plain = rows[0]["answer"], rows[1]["answer"]
    for r in rows:
        answer = r.pop("answer")
        r["same_text_as"] = "local" if answer == local else "extra buffers off" if answer == plain else "neither"
    cached = rows[3]
    result["rpc_vs_local"] = {k: round(cached[k] / rows[0][k], 2) for k in ("prompt_tps", "decode_tps")}
    result["cache_mb"] = round(sum(p.stat().st_size for p in work.rglob("*") if p.is_file()
                                   and p.parent.name.startswith("cache")) / 2**20, 1)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    shutil.rmtree(work, ignore_errors=True)   # the workers' caches hold a copy of the weights
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.gguf, args.tokens, args.ctx, args.out, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
