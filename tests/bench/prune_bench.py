"""`gptoss prune`'s writer on gpt-oss-20b's full shapes against `cp` of its output; the pruned sizes table; and
llama.cpp's own `llama-cli` loading a pruned file.

The full-shape GGUF is built from the real-width slice's header (its vocabulary and key/values, block_count
set to 24, the two layers' tensor infos repeated) with random bytes as data: the writer copies bytes and
never looks at them. Statistics are given (--stats, random), so only planning and writing are timed, as the
whole `gptoss prune` process (start-up and header reading included). The runs alternate; medians are kept.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from converters.gguf_layout import UINT32, build_header, kv_entry, read_layout, tensor_bytes
from tests.bench.convert_bench import median_of, timed

LAYERS = 24
BLOCK = 64 << 20


def full_shape_gguf(slice_gguf: Path, path: Path, layers: int = LAYERS, seed: int = 0) -> Path:
    """A GGUF with gpt-oss-20b's exact header and tensor shapes (layers x the slice's layers), random data."""
    if path.exists():
        return path
    src = read_layout(slice_gguf)
    entries = [kv_entry(k, UINT32, struct.pack("<I", layers)) if k == f"{src.arch}.block_count" else raw
               for k, raw in src.entries]
    glob = [t for t in src.tensors if not t.name.startswith("blk.")]
    per = {}
    for t in src.tensors:
        if t.name.startswith("blk."):
            il, rest = t.name.split(".", 2)[1:]
            per.setdefault(int(il), []).append((rest, t))
    tensors = [(t.name, t.dims, t.qtype) for t in glob[:1]]
    for il in range(layers):
        tensors += [(f"blk.{il}.{rest}", t.dims, t.qtype) for rest, t in per[il % len(per)]]
    tensors += [(t.name, t.dims, t.qtype) for t in glob[1:]]
    header = build_header(entries, tensors, src.alignment)
    data = sum((tensor_bytes(d, q) + src.alignment - 1) // src.alignment * src.alignment for _, d, q in tensors)
    rng = np.random.default_rng(seed)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(header)
        left = data
        while left:
            n = min(BLOCK, left)
            f.write(rng.bytes(n))
            left -= n
    os.replace(partial, path)
    return path


def random_stats(path: Path, layers: int = LAYERS, experts: int = 32) -> Path:
    """A statistics file with random counts and sums (the choice of experts does not change the bytes copied)."""
    from gptoss_cli.prune.stats import ExpertStats

    rng = np.random.default_rng(1)
    counts = rng.integers(1, 1000, (layers, experts))
    ExpertStats(counts, counts * 0.3, counts * rng.random((layers, experts)), counts * 2.0, tokens=32768,
                source="random", top_k=4).save(path)
    return path


def run(slice_gguf: Path, workdir: Path, keep: int = 24, repeats: int = 3, tools: Path | None = None) -> dict:
    """Time `gptoss prune --keep` on the full shapes and `cp` of its output; peak RSS; the sizes table."""
    from gptoss_cli.quant.recipes import pruned_rows

    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"sizes": pruned_rows(), "keep": keep}
    free = shutil.disk_usage(workdir).free
    need = 12_200_000_000 + 2 * 9_700_000_000 + (2 << 30)
    if free < need:
        return {**result, "skipped": f"needs {need / 1e9:.0f} GB free in {workdir}, has {free / 1e9:.0f} GB"}
    src = full_shape_gguf(slice_gguf, workdir / "full20b-mxfp4.gguf")
    stats = random_stats(workdir / "full20b.stats.npz")
    out, copy = workdir / f"full20b-mxfp4-{keep}e.gguf", workdir / "cp-of-output.gguf"
    env = {"GPTOSS_HOME": str(workdir / "home"), "XDG_STATE_HOME": str(workdir / "state")}
    cmd = [sys.executable, "-m", "gptoss_cli", "prune", str(src), "--keep", str(keep), "--stats", str(stats),
           "--no-eval", "--force", "-o", str(out)]
    prunes, cps = [], []
    try:
        for _ in range(repeats):
            out.unlink(missing_ok=True)
            prunes.append(timed(cmd, env=env, inputs=[src]))
            cps.append(timed(["cp", str(out), str(copy)], inputs=[out]))
            copy.unlink()
        size, src_size = out.stat().st_size, src.stat().st_size
        if tools is not None:
            result["llama_tools"] = llama_tools_load(slice_gguf, workdir, tools)
    finally:
        copy.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        src.unlink(missing_ok=True)
    p, c = median_of(prunes), median_of(cps)
    return {**result, "source_bytes": src_size, "output_bytes": size, "prune": p, "cp": c,
            "ratio_vs_cp": round(p["seconds"] / c["seconds"], 2), "goal": "<= 1.5x cp, peak RSS <= 1.5 GB"}


def llama_tools_load(slice_gguf: Path, workdir: Path, tools: Path) -> dict:
    """Prune the slice (2 layers, real widths) to 24 experts; llama.cpp's `llama-completion` (the plain-text
    generator; `llama-cli` is now a chat client whose gpt-oss parser rejects a random model's text) generates 8
    tokens from it and `llama-server` loads it and answers one completion."""
    from converters.prune import first_kept, plan_prune, read_source
    from converters.prune_copy import write_pruned
    from tests.bench.llama_tools import llama_tool, tool_env

    try:
        cli, server = llama_tool(tools, "llama-completion", "llama-server")
    except Exception as exc:  # noqa: BLE001 - the tool build is optional here; the reason is reported
        return {"skipped": f"llama.cpp tools not built ({exc})"}
    src = read_source(slice_gguf)
    pruned = write_pruned(plan_prune(src, first_kept(src, 24), "reap", 0), workdir / "slice-24e.gguf", force=True)
    env = tool_env(tools)
    try:
        # the random model's 8 tokens need not be valid UTF-8
        proc = subprocess.run([str(cli), "-m", str(pruned), "-p", "Hello", "-n", "8", "-no-cnv", "--no-warmup",
                               "-c", "512"], capture_output=True, text=True, errors="replace", timeout=600,
                              check=False, env=env, stdin=subprocess.DEVNULL)
        runs = re.search(r"eval time =.*/\s*(\d+) runs", proc.stderr)
        return {"llama_completion": {"returncode": proc.returncode, "tokens_generated": int(runs[1]) if runs else None},
                "llama_server": server_answers(server, pruned, env)}
    finally:
        pruned.unlink(missing_ok=True)


def server_answers(server: Path, gguf: Path, env: dict) -> dict:
    """Start llama-server on `gguf`, wait for /health, ask /completion for 8 tokens; the status, the tokens and the
    parameter count the server reports for the loaded model (the pruned one's, not the source's)."""
    import http.client
    import json
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(server), "-m", str(gguf), "--port", str(port), "-c", "512"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        if proc.poll() is not None:
            return {"returncode": proc.returncode, "log_tail": proc.stderr.read()[-400:] if proc.stderr else ""}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", "/completion", body=json.dumps({"prompt": "Hello", "n_predict": 8}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = json.loads(r.read() or b"{}")
        conn.request("GET", "/v1/models")
        models = json.loads(conn.getresponse().read() or b"{}").get("data") or [{}]
        return {"status": r.status, "tokens_predicted": body.get("tokens_predicted"),
                "n_params": (models[0].get("meta") or {}).get("n_params")}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
