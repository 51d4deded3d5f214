"""Expert placement benchmark: per --n-cpu-moe, where llama.cpp put the weights and how fast it decodes.

For each setting (all on the CPU, then --n-cpu-moe 0..layers) the model is loaded through gptoss's backend;
the table shows the expert tensors llama.cpp reports as overridden to the CPU, its model buffer sizes per
device, the GPU memory the load took (torch's view of free memory, when torch sees a GPU) and the decode
speed of 128 sampled tokens after a 64-token prompt. Without a GPU build only the CPU row is meaningful.

    python -m tests.bench.offload_bench path/to/model.gguf
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from gptoss_cli.engine.backend import Backend, BackendOptions

OVERRIDE = re.compile(r"^tensor (\S+) \(.*\) buffer type overridden to (\S+)")
BUFFER = re.compile(r"(\S+) model buffer size =\s+([\d.]+) MiB")


def _free_gpu_bytes() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


def measure(gguf: Path, tokens: int = 128, **options) -> dict:
    """Load with these BackendOptions, decode `tokens` tokens, and report placement and speed."""
    before = _free_gpu_bytes()
    backend = Backend(gguf, BackendOptions(ctx_size=4096, seed=1, **options))
    after = _free_gpu_bytes()
    try:
        moved = [m.groups() for m in map(OVERRIDE.match, backend.load_log) if m]
        buffers = {m.group(1): float(m.group(2)) for m in map(BUFFER.search, backend.load_log) if m}
        stamps = []
        for _ in backend.generate(list(range(1000, 1064)), temperature=1.0, top_p=1.0, max_tokens=tokens + 1,
                                  stop=set()):
            stamps.append(time.perf_counter())
    finally:
        backend.close()
    return {"options": options, "experts_in_ram": len(moved),
            "layers_with_experts_in_ram": sorted({int(name.split(".")[1]) for name, _ in moved}),
            "model_buffers_mib": buffers,
            "gpu_mib_used": None if before is None else round((before - after) / 2**20),
            "decode_tok_s": round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1)}


def run(gguf: Path) -> dict:
    """The CPU-only row, then one row per --n-cpu-moe value when this llama.cpp build can offload."""
    from gptoss_cli.engine import ggml
    from gptoss_cli.engine.gguf_header import read_metadata

    layers = read_metadata(gguf, {"gpt-oss.block_count"})["gpt-oss.block_count"]
    offload = ggml.has_gpu_device()   # not llama_supports_gpu_offload(): true in every RPC build
    rows = [measure(gguf, gpu_layers=0)]
    if offload:
        rows += [measure(gguf, n_cpu_moe=n) for n in range(layers + 1)]
    return {"gpu_offload": offload, "layers": layers, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1])), indent=1))
