"""The planner's compute-buffer estimate against the size llama.cpp itself reports ("CPU compute buffer size")
when it creates a context for the same model and context size, with the context parameters chat and serve
create theirs with (engine/backend.py context_params: ubatch 512, one output row and one KV stream per
sequence, the short sliding-window cache), on the CPU. The planner must not underestimate it: --fit would place
more on the GPU than fits. With serve's --parallel slots, the KV cache sizes llama.cpp logs must be the
planner's exactly.

Two kinds of model: the tiny fixture, loaded; and GGUFs with the release models' exact headers (sizes from the
official config.json, the tiny GGUF's vocabulary and tensor types) whose data is a hole in a sparse file, which
llama.cpp loads with no_alloc (metadata only, allocations simulated, the same graph reserve)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, ROOT

from converters.gguf_layout import UINT32, build_header, kv_entry, pad, read_layout, tensor_bytes
from gptoss_cli.memory.placement import compute_buffer_bytes, kv_cache_bytes, seq_cells, swa_cells
from gptoss_cli.memory.shapes import shape_from_gguf

MiB = 1 << 20
UNDER, OVER = 0.005, 0.08   # the estimate may be at most 0.5% below llama.cpp's size and 8% above it
# llama-cpp-python's C API in a plain loop, none of gptoss's loader: load on the CPU (no extra buffer types:
# llama.cpp's AMX path crashes on these GGUFs), create the context, and let llama.cpp log its buffers.
# The context parameters are the product's own (context_params), only the ubatch varied.
LOAD = """
import sys, llama_cpp as lc
from gptoss_cli.engine.backend import BackendOptions, context_params
path, (ctx, fa, ubatch, no_alloc, parallel) = sys.argv[1], map(int, sys.argv[2:7])
mp = lc.llama_model_default_params()
mp.n_gpu_layers, mp.use_extra_bufts = 0, False
if no_alloc:
    mp.no_alloc, mp.load_mode = True, lc.LLAMA_LOAD_MODE_NONE   # metadata only; no_alloc cannot map the file
model = lc.llama_model_load_from_file(path.encode(), mp)
cp = context_params(lc, BackendOptions(ctx_size=ctx, flash_attn="on" if fa else "off", parallel=parallel, threads=1))
cp.n_ubatch = min(ubatch, cp.n_batch)
assert lc.llama_init_from_model(model, cp)
"""
KV_LOG = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers,\s*\d+/(\d+) seqs\)")


def llama_cpp_log(gguf: Path, ctx: int, flash_attn: bool, ubatch: int = 512, no_alloc: bool = False,
                  parallel: int = 1) -> str:
    """llama.cpp's log of creating a context for this model, ctx tokens in each of `parallel` sequences."""
    args = [str(gguf), str(ctx), str(int(flash_attn)), str(ubatch), str(int(no_alloc)), str(parallel)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", LOAD, *args], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stderr


def compute_buffer(log: str) -> int:
    """Bytes of the CPU compute buffer llama.cpp reports."""
    sizes = re.findall(r"CPU compute buffer size =\s*([\d.]+) MiB", log)
    assert len(sizes) == 1, log[-2000:]
    return int(float(sizes[0]) * MiB)


def release_shaped_gguf(tiny_gguf: Path, config: dict, path: Path) -> Path:
    """A sparse GGUF with the header a release model converted with the default recipe has: the tiny GGUF's
    key/values and tensor types with config.json's sizes."""
    src = read_layout(tiny_gguf)
    E, F, X = config["hidden_size"], config["intermediate_size"], config["num_local_experts"]
    Q, KV = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    sizes = {"embedding_length": E, "block_count": config["num_hidden_layers"], "feed_forward_length": F,
             "expert_feed_forward_length": F, "attention.head_count": config["num_attention_heads"],
             "attention.head_count_kv": config["num_key_value_heads"], "attention.key_length": config["head_dim"],
             "attention.value_length": config["head_dim"], "expert_count": X,
             "expert_used_count": config["experts_per_token"], "attention.sliding_window": config["sliding_window"]}
    entries = [kv_entry(k, UINT32, struct.pack("<I", sizes[k[8:]])) if k[8:] in sizes and k.startswith("gpt-oss.")
               else raw for k, raw in src.entries]
    V = config["vocab_size"]
    dims = {"token_embd.weight": (E, V), "output_norm.weight": (E,), "output.weight": (E, V),
            "attn_norm.weight": (E,), "post_attention_norm.weight": (E,), "attn_q.weight": (E, Q), "attn_q.bias": (Q,),
            "attn_k.weight": (E, KV), "attn_k.bias": (KV,), "attn_v.weight": (E, KV), "attn_v.bias": (KV,),
            "attn_output.weight": (Q, E), "attn_output.bias": (E,), "attn_sinks.weight": (Q // config["head_dim"],),
            "ffn_gate_inp.weight": (E, X), "ffn_gate_inp.bias": (X,), "ffn_gate_exps.weight": (E, F, X),
            "ffn_up_exps.weight": (E, F, X), "ffn_down_exps.weight": (F, E, X), "ffn_gate_exps.bias": (F, X),
            "ffn_up_exps.bias": (F, X), "ffn_down_exps.bias": (E, X)}
    tensors = [(t.name, dims[t.name], t.qtype) for t in src.tensors if not t.name.startswith("blk.")]
    layer = [(t.name[len("blk.0."):], t.qtype) for t in src.tensors if t.name.startswith("blk.0.")]
    for il in range(config["num_hidden_layers"]):
        tensors += [(f"blk.{il}.{name}", dims[name], qtype) for name, qtype in layer]
    header = build_header(entries, tensors, src.alignment)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + sum(pad(tensor_bytes(d, q), src.alignment) for _, d, q in tensors))
    return path


def check(gguf: Path, ctx: int, flash_attn: bool, ubatch: int = 512, no_alloc: bool = False,
          parallel: int = 1) -> None:
    log = llama_cpp_log(gguf, ctx, flash_attn, ubatch, no_alloc, parallel)
    reported = compute_buffer(log)
    shape = shape_from_gguf(gguf)
    estimate = compute_buffer_bytes(shape, ctx, flash_attn, ubatch=ubatch, parallel=parallel)
    said = f"planner {estimate / MiB:.2f} MiB, llama.cpp {reported / MiB:.2f} MiB"
    assert estimate >= reported * (1 - UNDER), "underestimate: " + said
    assert estimate <= reported * (1 + OVER), "overestimate: " + said
    # The KV caches llama.cpp logs, full-attention then sliding-window: MiB, cells per sequence, sequences.
    caches = [float(x) for found in KV_LOG.findall(log) for x in (found[0], found[1], found[3])]
    kv_full, kv_swa = kv_cache_bytes(shape, ctx, parallel=parallel, ubatch=ubatch)
    planned = [kv_full / MiB, seq_cells(ctx, parallel), parallel,
               kv_swa / MiB, swa_cells(shape, ctx, parallel=parallel, ubatch=ubatch), parallel]
    assert caches == pytest.approx(planned, abs=0.01), f"KV caches: llama.cpp {caches}, planner {planned}"


@pytest.mark.slow
@pytest.mark.parametrize("ctx, flash_attn, ubatch", [(4096, False, 512), (4096, True, 512), (32768, False, 512),
                                                     (32768, True, 512), (4096, False, 128), (4096, True, 128)])
def test_compute_buffer_estimate_matches_llama_cpp_on_the_tiny_model(tiny_gguf, ctx, flash_attn, ubatch):
    check(tiny_gguf, ctx, flash_attn, ubatch)


@pytest.fixture(scope="module")
def release_ggufs(tiny_gguf, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("release-shaped")
    return {size: release_shaped_gguf(tiny_gguf, json.loads((DATA / f"gpt-oss-{size}.config.json").read_text()),
                                      folder / f"gpt-oss-{size}-mxfp4.gguf") for size in ("20b", "120b")}


@pytest.mark.slow
@pytest.mark.parametrize("size, ctx, flash_attn", [("20b", 4096, False), ("20b", 4096, True), ("20b", 32768, False),
                                                   ("20b", 32768, True), ("120b", 32768, False),
                                                   ("120b", 32768, True)])
def test_compute_buffer_estimate_matches_llama_cpp_on_release_shapes(release_ggufs, size, ctx, flash_attn):
    check(release_ggufs[size], ctx, flash_attn, no_alloc=True)


@pytest.mark.slow
@pytest.mark.parametrize("ctx, parallel, flash_attn", [(1000, 3, False), (4096, 2, False), (4096, 2, True),
                                                       (512, 4, True), (512, 8, True), (256, 16, True)])
def test_parallel_sequences_match_llama_cpp_on_the_tiny_model(tiny_gguf, ctx, parallel, flash_attn):
    """serve's --parallel slots: ctx tokens in each sequence, one KV stream per sequence."""
    check(tiny_gguf, ctx, flash_attn, parallel=parallel)


@pytest.mark.slow
@pytest.mark.parametrize("size, ctx, parallel, flash_attn", [("20b", 4096, 4, False), ("20b", 4096, 4, True),
                                                             ("120b", 8192, 2, False), ("120b", 8192, 2, True)])
def test_parallel_sequences_match_llama_cpp_on_release_shapes(release_ggufs, size, ctx, parallel, flash_attn):
    check(release_ggufs[size], ctx, flash_attn, no_alloc=True, parallel=parallel)
