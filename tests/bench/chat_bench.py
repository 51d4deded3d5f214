"""Benchmark: `gptoss chat -p` against a bare llama-cpp-python decode loop on the same GGUF and settings.

Both sides run in a fresh process (model loaded, then one generation, so both pay the same first-decode
warm-up) with the same harmony prompt, context size, threads, GPU layers and sampler (temperature 1.0,
top_p 1.0, seeded). Time to first token runs from "prompt text in hand" to the first
sampled id (tokenize + prompt eval + sample); decode speed is (tokens - 1) / (last - first token time).
gptoss is timed from its `--json` report (the streamed path differs only by a stdout write per token).
The baseline is llama-cpp-python's low-level C API (llama_decode + a sampler chain), the fastest loop the
binding allows, not the slower high-level `Llama.generate`. Goal: >= 97 % of its decode speed and at
most 30 ms more time to first token.

    python -m tests.bench.chat_bench path/to/model.gguf [--tokens 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
DECODE_GOAL, TTFT_GOAL_MS = 0.97, 30.0


def _gptoss_once(gguf: Path, tokens: int, ctx: int, threads: int, seed: int) -> dict:
    cmd = [sys.executable, "-m", "gptoss_cli", "chat", str(gguf), "-p", PROMPT, "--json",
           "--max-tokens", str(tokens), "--ctx-size", str(ctx), "--threads", str(threads), "--seed", str(seed)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "NO_COLOR": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"gptoss chat failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    doc = json.loads(r.stdout)
    return {"decode_tps": doc["timings"]["decode_tokens_per_s"], "ttft_ms": doc["timings"]["ttft_s"] * 1000,
            "tokens": doc["tokens"]["generated"], "prompt_tokens": doc["tokens"]["prompt"]}


class _Bare:
    """A minimal llama-cpp-python C-API generation loop (the baseline)."""

    def __init__(self, gguf: Path, ctx: int, threads: int) -> None:
        import llama_cpp as lc

        self.lc = lc
        self._log = lc.llama_log_callback(lambda level, text, user: None)
        lc.llama_log_set(self._log, ctypes.c_void_p(0))
        lc.llama_backend_init()
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = 0x7FFFFFFF if lc.llama_supports_gpu_offload() else 0
        self.model = lc.llama_model_load_from_file(str(gguf).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        cp = lc.llama_context_default_params()
        cp.n_ctx, cp.n_batch = ctx, min(2048, ctx)
        cp.n_ubatch = min(512, cp.n_batch)
        cp.n_threads = cp.n_threads_batch = threads
        cp.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if hasattr(cp, "n_outputs_max"):  # only the last token's logits are read, as in gptoss
            cp.n_outputs_max = 1
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.mem = lc.llama_get_memory(self.ctx)

    def once(self, prompt_text: str, tokens: int, seed: int) -> dict:
        lc = self.lc
        lc.llama_memory_clear(self.mem, True)
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(1.0))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        t0 = time.perf_counter()
        data = prompt_text.encode()
        buf = (ctypes.c_int32 * (len(data) + 8))()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, True)
        if lc.llama_decode(self.ctx, lc.llama_batch_get_one(buf, n)) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
        one = (ctypes.c_int32 * 1)()
        times = []
        for _ in range(tokens):
            tok = lc.llama_sampler_sample(chain, self.ctx, -1)
            times.append(time.perf_counter())
            one[0] = tok
            if lc.llama_decode(self.ctx, lc.llama_batch_get_one(one, 1)) != 0:
                break
        lc.llama_sampler_free(chain)
        decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return {"decode_tps": decode, "ttft_ms": (times[0] - t0) * 1000, "tokens": len(times), "prompt_tokens": n}

    def close(self) -> None:
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


def _bare_once(gguf: Path, prompt_text: str, tokens: int, ctx: int, threads: int, seed: int) -> dict:
    cmd = [sys.executable, "-m", "tests.bench.chat_bench", str(gguf), "--bare", "--tokens", str(tokens),
           "--ctx", str(ctx), "--threads", str(threads), "--seed", str(seed)]
    r = subprocess.run(cmd, cwd=ROOT, input=prompt_text, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"bare loop failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run(gguf: Path, tokens: int = 256, repeats: int = 3, ctx: int = 4096, threads: int | None = None,
        seed: int = 1) -> dict:
    """Decode tokens/s and time to first token of `gptoss chat -p` vs a bare loop, and their ratio."""
    from gptoss_cli.engine import harmony
    from gptoss_cli.engine.session import Session

    threads = threads or max((os.cpu_count() or 2) // 2, 1)
    prompt_text = Session(n_ctx=ctx).render(PROMPT)
    ours_runs, bare_runs = [], []
    _bare_once(Path(gguf), prompt_text, 4, ctx, threads, seed)  # warm-up: the file is in the page cache
    for _ in range(repeats):  # interleaved, so load changes on the machine hit both sides alike
        ours_runs.append(_gptoss_once(Path(gguf), tokens, ctx, threads, seed))
        bare_runs.append(_bare_once(Path(gguf), prompt_text, tokens, ctx, threads, seed))
    ours, base = _median(ours_runs), _median(bare_runs)
    ratio = ours["decode_tps"] / base["decode_tps"] if base["decode_tps"] else 0.0
    extra = ours["ttft_ms"] - base["ttft_ms"]
    return {
        "gguf": str(gguf), "settings": {"tokens": tokens, "repeats": repeats, "ctx": ctx, "threads": threads,
                                        "seed": seed, "temperature": 1.0, "top_p": 1.0,
                                        "prompt_tokens": base["prompt_tokens"]},
        "gptoss": ours, "bare": base, "decode_ratio": round(ratio, 4), "ttft_extra_ms": round(extra, 2),
        "goal": {"decode_ratio_min": DECODE_GOAL, "ttft_extra_ms_max": TTFT_GOAL_MS,
                 "met": ratio >= DECODE_GOAL and extra <= TTFT_GOAL_MS},
        "runs": {"gptoss": ours_runs, "bare": bare_runs}, "harmony_stop_ids": sorted(harmony.STOP_IDS),
    }


def main() -> None:
    """Command line: print the result as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bare", action="store_true", help="internal: one bare run, prompt text on stdin")
    args = ap.parse_args()
    if args.bare:
        bare = _Bare(args.gguf, args.ctx, args.threads)
        print(json.dumps(bare.once(sys.stdin.read(), args.tokens, args.seed)))
        bare.close()
        return
    print(json.dumps(run(args.gguf, args.tokens, args.repeats, args.ctx, args.threads, args.seed), indent=2))


if __name__ == "__main__":
    main()
