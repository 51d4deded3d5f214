"""The planner's compute-buffer estimate against the size llama.cpp itself reports ("CPU compute buffer size")
when it creates a context for the same model and context size, with chat's context parameters (ubatch 512,
one output row, the short sliding-window cache), on the CPU. The planner must not underestimate it: --fit
would place more on the GPU than fits."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gptoss_cli.memory.placement import compute_buffer_bytes
from gptoss_cli.memory.shapes import shape_from_gguf

MiB = 1 << 20
CASES = [(4096, False), (4096, True), (32768, False), (32768, True)]
# llama-cpp-python's C API in a plain loop, none of gptoss's loader: load on the CPU (no extra buffer types:
# llama.cpp's AMX path crashes on these GGUFs), create the context, and let llama.cpp log its buffers.
LOAD = """
import sys, llama_cpp as lc
path, ctx, fa = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
mp = lc.llama_model_default_params()
mp.n_gpu_layers, mp.use_extra_bufts = 0, False
model = lc.llama_model_load_from_file(path.encode(), mp)
cp = lc.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_outputs_max, cp.swa_full = ctx, min(2048, ctx), min(512, ctx), 1, False
cp.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if fa else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
assert lc.llama_init_from_model(model, cp)
"""
# Measured with llama-cpp-python 0.3.36 (the strict xfail turns into a failure once the planner covers it).
UNDER = ("the planner underestimates llama.cpp's compute buffer (tiny fixture, CPU; ctx/flash attn -> llama.cpp vs "
         "planner: 4096/off 44.07 vs 34.62 MiB, 4096/on 6.58 vs 2.62, 32768/off 324.07 vs 258.62, 32768/on "
         "34.58 vs 2.62): it leaves out the attention mask, ctx x ubatch")


def llama_cpp_compute_buffer(gguf, ctx: int, flash_attn: bool) -> int:
    """Bytes of the CPU compute buffer llama.cpp reports for this model and context."""
    r = subprocess.run([sys.executable, "-c", LOAD, str(gguf), str(ctx), "1" if flash_attn else "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    sizes = re.findall(r"CPU compute buffer size =\s*([\d.]+) MiB", r.stderr)
    assert len(sizes) == 1, r.stderr[-2000:]
    return int(float(sizes[0]) * MiB)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=UNDER)
@pytest.mark.parametrize("ctx, flash_attn", CASES)
def test_compute_buffer_estimate_covers_what_llama_cpp_allocates(tiny_gguf, ctx, flash_attn):
    reported = llama_cpp_compute_buffer(tiny_gguf, ctx, flash_attn)
    estimate = compute_buffer_bytes(shape_from_gguf(tiny_gguf), ctx, flash_attn)
    assert estimate >= reported - MiB // 100, f"planner {estimate / MiB:.2f} MiB, llama.cpp {reported / MiB:.2f} MiB"
