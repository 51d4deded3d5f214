"""Benchmark: `gptoss chat -p` with its defaults against llama.cpp with its own defaults, on the same GGUF.

Each side runs as a user would run it, with no thread or flash-attention option: gptoss's defaults against
(1) a bare llama-cpp-python decode loop that takes llama.cpp's defaults (libllama's context defaults, with
the thread count llama.cpp's tools use, common_cpu_get_num_math) and (2) `llama-bench` built from the same
vendored llama.cpp, whose defaults are llama.cpp's own (it reports the thread count it chose). Nothing is
pinned: each side's own choice of threads and flash attention is part of what is measured.

gptoss and the bare loop run in fresh processes (model loaded, then one generation) with the same harmony
prompt, context size and sampler (temperature 1.0, top_p 1.0, seeded); time to first token runs from
"prompt text in hand" to the first sampled id; decode speed is (tokens - 1) / (last - first token time).
gptoss is timed from its `--json` report. llama-bench runs once per round (-r 1) between them, so all three see
the same machine; its tg figure decodes without sampling. Goals: decode
>= 97 % of the bare loop's and of llama-bench's, time to first token at most 30 ms over the bare loop's.

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


def _gptoss_once(gguf: Path, tokens: int, ctx: int, seed: int) -> dict:
    cmd = [sys.executable, "-m", "gptoss_cli", "chat", str(gguf), "-p", PROMPT, "--json",
           "--max-tokens", str(tokens), "--ctx-size", str(ctx), "--seed", str(seed)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "NO_COLOR": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"gptoss chat failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    doc = json.loads(r.stdout)
    return {"decode_tps": doc["timings"]["decode_tokens_per_s"], "ttft_ms": doc["timings"]["ttft_s"] * 1000,
            "tokens": doc["tokens"]["generated"], "prompt_tokens": doc["tokens"]["prompt"]}


class _Bare:
    """A minimal llama-cpp-python C-API generation loop on llama.cpp's defaults (the baseline)."""

    def __init__(self, gguf: Path, ctx: int) -> None:
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
        cp.n_threads = cp.n_threads_batch = llama_tools_threads()   # flash attention: the default, auto
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


def llama_tools_threads() -> int:
    """The thread count llama.cpp's tools default to; llama-bench's reported choice is checked against it."""
    from gptoss_cli.engine.threads import math_threads

    return math_threads()


def _bare_once(gguf: Path, prompt_text: str, tokens: int, ctx: int, seed: int, env: dict) -> dict:
    """One bare-loop process; `env` refuses it AMX like llama.cpp's tools (it has no loader avoiding AMX's path)."""
    cmd = [sys.executable, "-m", "tests.bench.chat_bench", str(gguf), "--bare", "--tokens", str(tokens),
           "--ctx", str(ctx), "--seed", str(seed)]
    r = subprocess.run(cmd, cwd=ROOT, input=prompt_text, capture_output=True, text=True, timeout=900, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"bare loop failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def llama_bench(gguf: Path, workdir: Path, tokens: int, prompt_tokens: int, repeats: int) -> dict:
    """llama-bench with its defaults: prompt and decode tokens/s, and the threads and flash attention it chose."""
    from tests.bench.llama_tools import llama_tool, tool_env

    exe = llama_tool(workdir, "llama-bench")[0]
    r = subprocess.run([str(exe), "-m", str(gguf), "-p", str(prompt_tokens), "-n", str(tokens),
                        "-r", str(repeats), "-o", "json"], capture_output=True, text=True, timeout=1800,
                       env=tool_env(workdir))
    if r.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    rows = json.loads(r.stdout)
    tg = next(x for x in rows if x["n_gen"] > 0)
    pp = next(x for x in rows if x["n_prompt"] > 0)
    return {"decode_tps": tg["avg_ts"], "prompt_tps": pp["avg_ts"], "threads": tg["n_threads"],
            "flash_attn": tg.get("flash_attn"), "cpu": tg.get("cpu_info"), "build": tg.get("build_commit")}


def run(gguf: Path, tokens: int = 256, repeats: int = 5, ctx: int = 4096, seed: int = 1,
        workdir: Path | None = None) -> dict:
    """Decode tokens/s and time to first token of `gptoss chat -p` vs llama.cpp's defaults, and the ratios."""
    from gptoss_cli.engine import harmony
    from gptoss_cli.engine.session import Session
    from tests.bench.llama_tools import tool_env

    prompt_text = Session(n_ctx=ctx).render(PROMPT)
    ours_runs, bare_runs, lb_runs, lb_skipped = [], [], [], None
    bare_env = tool_env(workdir or ROOT / "bench-out")
    _bare_once(Path(gguf), prompt_text, 4, ctx, seed, bare_env)  # warm-up: the file is in the page cache
    for _ in range(repeats):  # interleaved, so load changes on the machine hit every side alike
        ours_runs.append(_gptoss_once(Path(gguf), tokens, ctx, seed))
        bare_runs.append(_bare_once(Path(gguf), prompt_text, tokens, ctx, seed, bare_env))
        if workdir is not None and lb_skipped is None:
            try:
                lb_runs.append(llama_bench(Path(gguf), workdir, tokens, int(bare_runs[-1]["prompt_tokens"]), 1))
            except (OSError, RuntimeError, subprocess.SubprocessError, StopIteration, KeyError) as exc:
                lb_skipped = str(exc)[-300:]
    ours, base = _median(ours_runs), _median(bare_runs)
    ratio = ours["decode_tps"] / base["decode_tps"] if base["decode_tps"] else 0.0
    extra = ours["ttft_ms"] - base["ttft_ms"]
    result = {
        "gguf": str(gguf), "settings": {"tokens": tokens, "repeats": repeats, "ctx": ctx, "seed": seed,
                                        "temperature": 1.0, "top_p": 1.0, "prompt_tokens": base["prompt_tokens"],
                                        "llama_cpp_default_threads": llama_tools_threads()},
        "gptoss": ours, "bare": base, "decode_ratio": round(ratio, 4), "ttft_extra_ms": round(extra, 2),
        "runs": {"gptoss": ours_runs, "bare": bare_runs, "llama_bench": lb_runs},
        "harmony_stop_ids": sorted(harmony.STOP_IDS),
    }
    met = ratio >= DECODE_GOAL and extra <= TTFT_GOAL_MS
    if lb_runs:
        lb = {**lb_runs[0], **{k: statistics.median(r[k] for r in lb_runs) for k in ("decode_tps", "prompt_tps")}}
        result["llama_bench"] = lb
        result["decode_ratio_vs_llama_bench"] = round(ours["decode_tps"] / lb["decode_tps"], 4)
        met = met and result["decode_ratio_vs_llama_bench"] >= DECODE_GOAL
    elif workdir is not None:
        result["llama_bench"] = {"skipped": lb_skipped}
    result["goal"] = {"decode_ratio_min": DECODE_GOAL, "ttft_extra_ms_max": TTFT_GOAL_MS, "met": met}
    return result


def main() -> None:
    """Command line: print the result as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--workdir", type=Path, default=None, help="where llama-bench is built (omit: no llama-bench)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bare", action="store_true", help="internal: one bare run, prompt text on stdin")
    args = ap.parse_args()
    if args.bare:
        bare = _Bare(args.gguf, args.ctx)
        print(json.dumps(bare.once(sys.stdin.read(), args.tokens, args.seed)))
        bare.close()
        return
    print(json.dumps(run(args.gguf, args.tokens, args.repeats, args.ctx, args.seed, args.workdir), indent=2))


if __name__ == "__main__":
    main()
