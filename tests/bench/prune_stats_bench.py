"""Expert-statistics throughput (`gptoss prune`'s collection) against llama.cpp's own `llama-imatrix`, built from the
llama.cpp that the installed llama-cpp-python vendors, on the same GGUF, text, window length and threads.

    python -m tests.bench.prune_stats_bench SLICE.gguf WORKDIR [--chunks 8] [--threads N] [--generation]

Each tool runs in its own process, model load included in the wall time; the steady rate is tokens per second
of the evaluation alone (gptoss: from its first progress report, before the first window, to the last;
llama-imatrix: from its log line "computing over N chunks" to its last line, the file saved). The runs
alternate, `--repeats` rounds, and the best of each is kept: the machine may be shared. llama-imatrix is
run with AMX refused (/work/shared/tools/noamx.c, as gptoss's loader avoids AMX), so both use the same CPU
kernels. It does more per token than gptoss needs: it reads the input of
every matrix multiplication and computes the output layer's logits for every token; gptoss reads three small
tensors per MoE layer and the last token's logits only. A third row, gptoss's window evaluation without the
callback, shows what watching the MoE tensors costs.

A second table times the calibration replies `gptoss prune` generates without --text (the shipped prompts,
the model's own replies) against `gptoss chat -p` one-shot decode on the same GGUF, context size and threads:
both CLIs in their own process, each its decode tokens/s from --json (tokens after a reply's first over the
time from its first to its last), in alternating order, the best of `--repeats` kept. Goal: prune >= 0.9x chat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.llama_tools import tool_env

CHUNK = 512
ROOT = Path(__file__).resolve().parents[2]


def calibration_text(path: Path, tokens: int) -> Path:
    """Plain text (the shipped prompts' user messages, repeated) with at least `tokens` tokens."""
    from gptoss_cli.prune.calibration import builtin_conversations

    parts = [m.content for c in builtin_conversations() for m in c.messages if m.role == "user"]
    base = "\n\n".join(parts)
    # about 3 characters per token in this multilingual mix; 4x leaves room
    path.write_text(base * (tokens * 4 // len(base) + 1), encoding="utf-8")
    return path


_STAMP = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) ")   # llama.cpp's log time: minutes.seconds.ms.us


def _stamp(line: str) -> float:
    m, s, ms, us = (int(x) for x in _STAMP.match(line).groups())
    return m * 60 + s + ms / 1e3 + us / 1e6


def run_imatrix(tool: Path, gguf: Path, text: Path, chunks: int, threads: int, workdir: Path) -> dict:
    out = workdir / "bench.imatrix.gguf"
    cmd = [str(tool), "-m", str(gguf), "-f", str(text), "-c", str(CHUNK), "--chunks", str(chunks),
           "-t", str(threads), "-o", str(out), "--no-ppl"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env(workdir))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"llama-imatrix failed ({proc.returncode}): {proc.stderr[-2000:]}")
    stamps = [(_stamp(line), line) for line in proc.stderr.splitlines() if _STAMP.match(line)]
    start = next((t for t, line in stamps if "computing over" in line), None)
    steady = chunks * CHUNK / (stamps[-1][0] - start) if start is not None and stamps[-1][0] > start else None
    return {"tool": "llama-imatrix", "tokens": chunks * CHUNK, "wall_s": round(wall, 2),
            "tok_s": round(steady, 1) if steady else None,
            "amx_refused": "AMX is not ready" in proc.stderr}


def run_gptoss(gguf: Path, text: Path, chunks: int, threads: int, plain: bool) -> dict:
    cmd = [sys.executable, "-m", "tests.bench.prune_stats_bench", "--child", str(gguf), str(text),
           "--chunks", str(chunks), "--threads", str(threads)] + (["--plain"] if plain else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"gptoss statistics failed ({proc.returncode}): {proc.stderr[-2000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"tool": "gptoss forward only (no callback)" if plain else "gptoss prune statistics",
            "tokens": child["tokens"], "wall_s": round(wall, 2), "tok_s": child["tok_s"]}


def _child(gguf: Path, text: Path, chunks: int, threads: int, plain: bool) -> None:
    """In a fresh process: the statistics (or, with plain, the same windows without the callback)."""
    from gptoss_cli.prune.stats import collect_stats, windows

    stamps: list[tuple[float, int]] = []
    tick = lambda done, total: stamps.append((time.perf_counter(), done))  # noqa: E731
    source = text.read_text(encoding="utf-8")
    if plain:
        from gptoss_cli.engine.scorer import Scorer

        with Scorer(gguf, CHUNK, threads=threads, gpu_layers=0, all_logits=False) as llm:
            done = 0
            tick(0, 0)
            for w in windows(llm.model.tokenize(source, special=True), chunks * CHUNK, CHUNK):
                llm.run(w)
                done += len(w)
                tick(done, 0)
    else:
        collect_stats(gguf, [source], calib_tokens=chunks * CHUNK, threads=threads, gpu_layers=0,
                      chunk_tokens=CHUNK, progress=tick)
    (t1, d1), (tn, dn) = stamps[0], stamps[-1]
    print(json.dumps({"tokens": dn, "tok_s": round((dn - d1) / (tn - t1), 1) if tn > t1 else None}))


def _cli(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "gptoss_cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"gptoss {args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def run_generation(gguf: Path, workdir: Path, threads: int, tokens: int = 600, repeats: int = 2) -> dict:
    """Calibration reply decode tokens/s (`gptoss prune`, no --text, budget `tokens`) vs `gptoss chat -p`."""
    from converters.prune import read_source
    from gptoss_cli.prune.calibration import builtin_conversations

    src = read_source(gguf)
    keep = max(int(src.get("expert_used_count")), int(src.get("expert_count")) // 2)
    prompt = builtin_conversations()[0].messages[0].content
    common = ["--threads", str(threads), "--effort", "low"]
    prune_args = ["prune", str(gguf), "--keep", str(keep), "--calib-tokens", str(tokens), "--no-eval", "--json",
                  "--force", "-o", str(workdir / "calib-speed.gguf"), *common]
    chat_args = ["chat", str(gguf), "-p", prompt, "--max-tokens", str(tokens // 2), "--ctx-size", "4096",
                 "--seed", "0", "--json", *common]
    prune, chat, load = [], [], [os.getloadavg()[0]]
    for i in range(repeats):   # the order alternates, so neither always runs on a cold page cache
        for which in ("prune", "chat") if i % 2 == 0 else ("chat", "prune"):
            if which == "prune":
                prune.append(_cli(prune_args)["calibration_replies"])
            else:
                chat.append(_cli(chat_args))
        load.append(os.getloadavg()[0])
    (workdir / "calib-speed.gguf").unlink(missing_ok=True)
    best_prune = max(p["decode_tokens_per_s"] for p in prune)
    best_chat = max(c["timings"]["decode_tokens_per_s"] for c in chat)
    rows = [{"run": "gptoss prune: calibration replies", "tokens": [p["reply_tokens"] for p in prune],
             "decode_tok_s": best_prune, "decode_tok_s_all": [p["decode_tokens_per_s"] for p in prune],
             "reply_tok_s_all": [p["reply_tokens_per_s"] for p in prune]},
            {"run": "gptoss chat -p (one-shot)", "tokens": [c["tokens"]["generated"] for c in chat],
             "decode_tok_s": best_chat, "decode_tok_s_all": [c["timings"]["decode_tokens_per_s"] for c in chat]}]
    return {"gguf": gguf.name, "threads": threads, "calib_tokens": tokens, "loadavg": load, "rows": rows,
            "prune_vs_chat": round(best_prune / best_chat, 2) if best_chat else None, "goal": ">= 0.9"}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.+)", out)
        return (model.group(1).strip() if model else "?") + (", AMX" if "amx_tile" in out else "")
    except OSError:
        return "?"


def run(gguf: Path, workdir: Path, chunks: int = 8, threads: int | None = None, repeats: int = 2) -> dict:
    """Both tools on the slice GGUF; the ratio gptoss / llama-imatrix of wall time and steady tokens/s."""
    from gptoss_cli.engine.threads import math_threads
    from tests.bench.llama_tools import llama_tool

    threads = threads or math_threads()
    (tool,) = llama_tool(workdir, "llama-imatrix")
    text = calibration_text(workdir / "prune-calib.txt", chunks * CHUNK)
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for row in (run_imatrix(tool, gguf, text, chunks, threads, workdir),
                    run_gptoss(gguf, text, chunks, threads, plain=False),
                    run_gptoss(gguf, text, chunks, threads, plain=True)):
            runs.setdefault(row["tool"], []).append(row)
        load.append(os.getloadavg()[0])
    rows = [{**min(r, key=lambda x: x["wall_s"]), "tok_s": max((x["tok_s"] or 0) for x in r) or None,
             "wall_s_all": [x["wall_s"] for x in r], "tok_s_all": [x["tok_s"] for x in r]} for r in runs.values()]
    imx, ours = rows[0], rows[1]
    return {"cpu": cpu_model(), "threads": threads, "loadavg": load, "gguf": gguf.name,
            "chunk": CHUNK, "chunks": chunks, "repeats": repeats, "rows": rows,
            "speed_vs_llama_imatrix_wall": round(imx["wall_s"] / ours["wall_s"], 2),
            "speed_vs_llama_imatrix_steady": (round(ours["tok_s"] / imx["tok_s"], 2)
                                              if ours["tok_s"] and imx["tok_s"] else None),
            "goal": ">= 0.9", "generation": run_generation(gguf, workdir, threads, repeats=repeats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("path", type=Path, help="workdir (or, with --child, the text file)")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generation", action="store_true", help="only calibration replies vs chat decode")
    parser.add_argument("--calib-tokens", type=int, default=600, help="with --generation: prune's token budget")
    args = parser.parse_args(argv)
    if args.generation:
        from gptoss_cli.engine.threads import math_threads

        args.path.mkdir(parents=True, exist_ok=True)
        gen = run_generation(args.gguf, args.path, args.threads or math_threads(), args.calib_tokens,
                             repeats=args.repeats)
        print(json.dumps(gen, indent=2))
    elif args.child:
        _child(args.gguf, args.path, args.chunks, args.threads, args.plain)
    else:
        print(json.dumps(run(args.gguf, args.path, args.chunks, args.threads, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
