"""`make bench`: every benchmark in one run, printed as tables and written as JSON.

    python -m tests.bench.run --out bench-out \
        [--only convert,convert-full,chat,offload,pull,recipes,rpc,serve,prune-stats,constrain,prune]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def _slice(out: Path) -> Path:
    """The real-width slice checkpoint (hidden 2880, 32 experts, 2 layers, real vocab), generated once."""
    from converters.fixture import write_checkpoint

    folder = out / "slice"
    if not (folder / "config.json").exists():
        console.print("[bold]generating the real-width slice checkpoint (~3 GB, random weights)...")
        write_checkpoint(folder, "slice", seed=0, force=True)
    return folder


def bench_convert(out: Path) -> dict:
    from tests.bench import convert_bench

    result = convert_bench.run(_slice(out), out / "convert")
    t = Table(title=f"convert: real-width slice, {result['input_mb']} MB of safetensors "
                    f"(gptoss and cp: median of {result['repeats']})")
    for col in ("recipe", "gptoss s", "MB/s", "peak RSS MB", "convert_hf_to_gguf s", "its RSS MB",
                "speed-up", "cp s", "gptoss/cp"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        g, p = r["gptoss"], r["convert_hf_to_gguf"]
        t.add_row(r["recipe"], str(g["seconds"]), str(r["gptoss_mb_s"]), str(g["peak_rss_mb"]),
                  str(p["seconds"]), str(p["peak_rss_mb"]), f"{r['speedup_vs_convert_hf_to_gguf']}x",
                  str(r["cp"]["seconds"]), f"{r['ratio_vs_cp']}x")
    console.print(t)
    return result


def _optional(module: str, call) -> dict:
    try:
        mod = importlib.import_module(f"tests.bench.{module}")
    except ImportError as exc:
        return {"skipped": f"{module} not available ({exc})"}
    result = call(mod)
    console.print_json(json.dumps(result, default=str))
    return result


def _slice_gguf(out: Path) -> Path:
    from converters.convert import convert_checkpoint

    gguf = out / "slice-mxfp4.gguf"
    if not gguf.exists():
        convert_checkpoint(_slice(out), gguf, "mxfp4", force=True)
    return gguf


def _fixture_gguf(out: Path, preset: str, name: str) -> Path:
    """The `mxfp4` GGUF of a random fixture checkpoint (`preset`), generated once as out/<name>-mxfp4.gguf."""
    from converters.convert import convert_checkpoint
    from converters.fixture import write_checkpoint

    gguf = out / f"{name}-mxfp4.gguf"
    if not gguf.exists():
        convert_checkpoint(write_checkpoint(out / name, preset, seed=0, force=True), gguf, "mxfp4", force=True)
    return gguf


def bench_chat(out: Path) -> dict:
    gguf = _slice_gguf(out)
    console.print("[bold]chat: gptoss chat -p vs llama.cpp, each with its defaults (slice GGUF)")
    return _optional("chat_bench", lambda m: m.run(gguf, workdir=out))


def bench_offload(out: Path) -> dict:
    gguf = _slice_gguf(out)
    console.print("[bold]offload: expert placement, GPU memory and decode speed per --n-cpu-moe (slice GGUF)")
    return _optional("offload_bench", lambda m: m.run(gguf))


def bench_pull(out: Path) -> dict:
    console.print("[bold]pull: gptoss pull vs plain hf_hub_download on loopback")
    return _optional("pull_bench", lambda m: m.run(out / "pull"))


def bench_recipes(out: Path) -> dict:
    console.print("[bold]recipes: size, KL and time per recipe on the slice")
    return _optional("recipes_bench", lambda m: m.run(_slice(out), out / "recipes"))


def bench_rpc(out: Path) -> dict:
    gguf = _slice_gguf(out)
    console.print("[bold]rpc: chat on this machine vs over two loopback `gptoss worker`s (slice GGUF)")
    result = _optional("rpc_bench", lambda m: m.run(gguf, out=out))
    t = Table(title=f"rpc: {result.get('tokens')} tokens, greedy; {result.get('cpu')}, "
                    f"load average {result.get('loadavg_before')}")
    for col in ("run", "load s", "prompt tok/s", "decode tok/s", "greedy text as"):
        t.add_column(col, justify="right")
    for r in result.get("rows", []):
        t.add_row(r["run"], str(r["load_s"]), str(r["prompt_tps"]), str(r["decode_tps"]), r["same_text_as"])
    console.print(t)
    console.print(f"cached RPC / local: {result.get('rpc_vs_local')}")
    return result


def bench_serve(out: Path) -> dict:

    fixture = _fixture_gguf(out, "tiny6", "fixture6")
    console.print("[bold]serve: gptoss serve vs llama-server -np 8 and llama-cpp-python's server, "
                  "64 tokens per stream (fixture, then slice)")
    result = {name: _optional("serve_bench", lambda m, gguf=gguf: m.run(gguf, workdir=out))
              for name, gguf in (("fixture", fixture), ("slice", _slice_gguf(out)))}
    for name, r in result.items():
        t = Table(title=f"serve ({name}): {r.get('cpu')}, load average {r.get('loadavg')}")
        for col in ("server", "streams", "tok/s", "TTFT p50 ms", "TTFT p95 ms", "vs llama-server"):
            t.add_column(col, justify="right")
        for row in r.get("rows", []):
            t.add_row(row["server"], str(row["streams"]), str(row["tok_s"]), str(row["ttft_p50_ms"]),
                      str(row["ttft_p95_ms"]), str(row.get("vs_llama_server", "")))
        console.print(t)
    return result


def bench_prune_stats(out: Path) -> dict:
    gguf = _slice_gguf(out)
    console.print("[bold]prune-stats: expert statistics vs llama-imatrix, same text, windows and threads (slice GGUF)")
    result = _optional("prune_stats_bench", lambda m: m.run(gguf, out))
    t = Table(title=f"prune-stats: {result.get('chunks')} windows of {result.get('chunk')} tokens, "
                    f"{result.get('threads')} threads; {result.get('cpu')}, load average {result.get('loadavg')}")
    for col in ("run", "wall s", "steady tok/s"):
        t.add_column(col, justify="right")
    for r in result.get("rows", []):
        t.add_row(r["tool"], str(r["wall_s"]), str(r["tok_s"]))
    console.print(t)
    console.print(f"gptoss / llama-imatrix: wall {result.get('speed_vs_llama_imatrix_wall')}x, "
                  f"steady {result.get('speed_vs_llama_imatrix_steady')}x (goal >= 0.9x)")
    gen = result.get("generation") or {}
    t = Table(title=f"prune-stats: calibration replies vs chat decode, {gen.get('gguf')}, {gen.get('threads')} "
                    f"threads, load average {gen.get('loadavg')}")
    for col in ("run", "reply tokens", "decode tok/s (best)", "all runs"):
        t.add_column(col, justify="right")
    for r in gen.get("rows", []):
        t.add_row(r["run"], str(r["tokens"]), str(r["decode_tok_s"]), str(r["decode_tok_s_all"]))
    console.print(t)
    console.print(f"calibration replies / chat decode: {gen.get('prune_vs_chat')}x (goal >= 0.9x)")
    return result


def bench_constrain(out: Path) -> dict:

    fixture = _fixture_gguf(out, "tiny", "fixture")
    console.print("[bold]constrain: sampling cost per token over the 201k vocabulary, free vs llguidance vs "
                  "the former GBNF path (fixture, suite schemas)")
    result = _optional("constrain_bench", lambda m: m.run(fixture))
    t = Table(title=f"constrain: {result.get('schemas')} schemas x {result.get('seeds')} seeds, "
                    f"<= {result.get('max_tokens')} tokens; {result.get('cpu')}")
    for col in ("sampler", "µs/token", "answers", "valid", "cut at the limit", "schemas refused"):
        t.add_column(col, justify="right")
    for r in result.get("rows", []):
        t.add_row(r["sampler"], str(r["us_per_token"]), str(r["answers"]), str(r["valid"]), str(r["cut"]),
                  str(r["refused"]))
    console.print(t)


def bench_prune(out: Path) -> dict:
    gguf = _slice_gguf(out)
    console.print("[bold]prune: writing a pruned GGUF of gpt-oss-20b's full shapes vs cp of the output")
    result = _optional("prune_bench", lambda m: m.run(gguf, out / "prune", tools=out))
    t = Table(title="pruned sizes (recipe mxfp4, tensor bytes)")
    for col in ("model", "experts per layer", "GB"):
        t.add_column(col, justify="right")
    for r in result.get("sizes", []):
        t.add_row(f"gpt-oss-{r['model']}", f"{r['experts']} of {r['of']}", f"{r['bytes'] / 1e9:.2f}")
    console.print(t)
    if "prune" in result:
        p, c = result["prune"], result["cp"]
        console.print(f"prune --keep {result['keep']}: {p['seconds']} s, peak RSS {p['peak_rss_mb']} MB; cp: "
                      f"{c['seconds']} s; {result['ratio_vs_cp']}x cp (goal <= 1.5x, RSS <= 1.5 GB)")
    return result


def bench_convert_full(out: Path) -> dict:
    console.print("[bold]convert-full: quantize --recipe bf16 of gpt-oss-20b's full shapes vs cp of the shards")
    return _optional("convert_full_bench", lambda m: m.run(_slice(out), out / "convert-full"))


BENCHES = {"convert": bench_convert, "convert-full": bench_convert_full, "chat": bench_chat, "offload": bench_offload,
           "pull": bench_pull,
           "recipes": bench_recipes, "rpc": bench_rpc, "serve": bench_serve, "prune-stats": bench_prune_stats,
           "constrain": bench_constrain, "prune": bench_prune}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--only", default=",".join(BENCHES))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in args.only.split(","):
        try:
            results[name] = BENCHES[name](args.out)
        except Exception as exc:  # a failed benchmark is reported, the others still run
            console.print(f"[red]{name} benchmark failed: {exc}")
            results[name] = {"error": str(exc)}
    (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    console.print(f"JSON: {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
