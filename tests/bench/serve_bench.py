"""Benchmark: `gptoss serve` against llama.cpp's `llama-server` (built from the llama.cpp that llama-cpp-python
vendors, so the kernels are the same) and llama-cpp-python's own server, with 1, 2, 4 and 8 concurrent streams.

Each server runs with its own defaults and as many slots as the most streams measured (`-np 8` for
llama-server, `--parallel 8` for gptoss; llama-cpp-python's server has one). All servers stay up and take
turns round by round (order reversed each repeat), so a burst of load on a shared machine falls on every
server's round alike instead of on whichever server runs alone at that moment. Every stream asks for `tokens`
new tokens on its own prompt (the same harmony prompts for every server: gptoss gets chat messages and
renders them; the peers get the rendered harmony text on /v1/completions, because llama-server's chat
endpoint answers HTTP 500 when random weights stray from harmony). Aggregate tok/s = all streamed tokens /
wall time from the first request to the last token; TTFT = request sent -> first streamed token, p50/p95
over all streams of a round. Goals (issue 11): gptoss >= 0.9x llama-server's aggregate at 4 streams,
within 0.95x at 1, TTFT within 30 ms of llama-server's.

    python -m tests.bench.serve_bench MODEL.gguf [--tokens 64] [--repeats 3] [--streams 1,2,4,8]
                                                 [--peers gptoss,llama-server,llama-cpp-python] [--workdir bench-out]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ("gptoss", "llama-server", "llama-cpp-python")
TOPICS = ["a lighthouse", "a lost key", "the sea at night", "a city of bridges", "an old clock", "a red kite",
          "a quiet library", "a mountain pass"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prompt(i: int) -> str:
    return f"Stream {i}: write a long story about {TOPICS[i % len(TOPICS)]}."


def _harmony_text(i: int) -> str:
    from gptoss_cli.engine import harmony

    return harmony.render_prompt([harmony.Message("user", _prompt(i))], effort="low")


def _start(peer: str, gguf: Path, port: int, slots: int, ctx: int, workdir: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if peer == "gptoss":
        cmd = [sys.executable, "-m", "gptoss_cli", "serve", str(gguf), "--port", str(port), "--parallel", str(slots),
               "--ctx-size", str(ctx), "--effort", "low"]
    elif peer == "llama-server":
        from tests.bench.llama_tools import llama_tool, tool_env

        exe = llama_tool(workdir, "llama-server")[0]
        env = tool_env(workdir)
        cmd = [str(exe), "-m", str(gguf), "--port", str(port), "-np", str(slots), "-c", str(ctx * slots)]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
               "--n_ctx", str(ctx)]
    log = workdir / f"serve-{peer}.log"   # a file, not a pipe: a chatty server would block on a full pipe
    workdir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**env, "NO_COLOR": "1"})
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{peer} exited ({proc.returncode}): {log.read_text()[-800:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health" if peer != "llama-cpp-python" else "/v1/models")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{peer} did not become ready")


def _stream(peer: str, port: int, i: int, tokens: int) -> dict:
    """One streamed request: TTFT, tokens streamed, end time."""
    if peer == "gptoss":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": _prompt(i)}],
                                               "reasoning_effort": "low"}
    else:
        path, body = "/v1/completions", {"prompt": _harmony_text(i)}
        if peer == "llama-server":
            body["ignore_eos"] = True
    body.update({"stream": True, "max_tokens": tokens, "temperature": 1.0, "top_p": 1.0, "seed": i})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    t0 = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{peer}: HTTP {r.status}: {r.read()[:300]!r}")
    first, n = None, 0
    for line in r:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        choices = json.loads(line[6:]).get("choices") or []
        delta = choices[0].get("delta") or {} if choices else {}
        text = (choices[0].get("text") if choices else None) or delta.get("content") or delta.get("reasoning_content")
        if text:
            n += 1
            first = first or time.perf_counter()
    conn.close()
    return {"ttft_ms": ((first or time.perf_counter()) - t0) * 1000, "tokens": n, "t0": t0,
            "end": time.perf_counter()}


def _round(peer: str, port: int, streams: int, tokens: int) -> dict:
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda i: _stream(peer, port, i, tokens), range(streams)))
    wall = max(r["end"] for r in results) - min(r["t0"] for r in results)
    ttfts = sorted(r["ttft_ms"] for r in results)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return {"tok_s": sum(r["tokens"] for r in results) / wall, "ttft_p50_ms": statistics.median(ttfts),
            "ttft_p95_ms": p95, "tokens": sum(r["tokens"] for r in results)}


def run(gguf: Path, workdir: Path, streams=(1, 2, 4, 8), tokens: int = 64, repeats: int = 5,
        peers=PEERS, ctx: int = 1024) -> dict:
    """Every peer, every stream count: median aggregate tok/s and TTFT over repeats. All servers stay up
    and the peers take turns round by round (order reversed every repeat), so a burst of load on the
    machine hits them alike instead of one whole column."""
    servers, skipped = {}, {}
    try:
        for peer in peers:
            port = _free_port()
            try:
                servers[peer] = (_start(peer, Path(gguf), port, max(streams), ctx, workdir), port)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                skipped[peer] = str(exc)[-300:]
        for peer, (_, port) in servers.items():
            _round(peer, port, 1, 8)   # warm-up: weights paged in, first-use allocations done
        runs: dict[tuple[str, int], list[dict]] = {}
        for rep in range(repeats):
            order = list(servers) if rep % 2 == 0 else list(reversed(servers))
            for n in streams:
                for peer in order:
                    runs.setdefault((peer, n), []).append(_round(peer, servers[peer][1], n, tokens))
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    rows = [{"server": peer, "streams": n, **{k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0]},
             "tok_s_runs": [round(r["tok_s"], 1) for r in rs]}
            for (peer, n), rs in sorted(runs.items(), key=lambda kv: (peers.index(kv[0][0]), kv[0][1]))]
    ref = {r["streams"]: r for r in rows if r["server"] == "llama-server"}
    for r in rows:
        if r["streams"] in ref and ref[r["streams"]]["tok_s"]:
            r["vs_llama_server"] = round(r["tok_s"] / ref[r["streams"]]["tok_s"], 2)
            r["ttft_p50_delta_ms"] = round(r["ttft_p50_ms"] - ref[r["streams"]]["ttft_p50_ms"], 1)
    return {"model": str(gguf), "tokens": tokens, "repeats": repeats, "rows": rows, "skipped": skipped,
            "loadavg": os.getloadavg(), "cpu": _cpu()}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-out")
    args = ap.parse_args(argv)
    result = run(args.gguf, args.workdir, tuple(int(s) for s in args.streams.split(",")), args.tokens,
                 args.repeats, tuple(args.peers.split(",")))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
