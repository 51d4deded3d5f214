"""Memory planning: where gpt-oss's weights, KV cache and buffers go, and the smallest --n-cpu-moe that fits.

`plan_memory` is a pure function of a `ModelShape` (tensor bytes per layer, from a GGUF header or estimated
from config.json: shapes.py), the context size and the free memory per device. Device probing lives in
devices.py, the `gptoss plan` / `chat --fit` entry points in planning.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from converters.errors import RunFailure
from gptoss_cli.engine.backend import SWA_FULL
from gptoss_cli.memory.shapes import ModelShape

GiB = 1 << 30
MARGIN = 0.10           # safety margin on weights + KV cache
N_UBATCH = 512          # llama.cpp's physical batch: the compute buffer is sized for it
KV_PAD = 256            # llama.cpp pads the context (and the SWA cache) to multiples of 256


def _pad(n: int, to: int = KV_PAD) -> int:
    return -(-n // to) * to


@dataclass
class Placement:
    """Where everything goes on one GPU (or none) and RAM: n_cpu_moe, bytes per device, and whether it fits."""

    model: str
    ctx: int
    fits: bool
    n_cpu_moe: int
    gpu_layers: int
    gpu_free: int
    ram_free: int
    gpu: dict[str, int] = field(default_factory=dict)   # component -> bytes on the GPU(s)
    ram: dict[str, int] = field(default_factory=dict)   # component -> bytes in system RAM
    gpu_needed: int = 0                                  # with margin and compute buffer
    ram_needed: int = 0
    reason: str = ""                                     # why it does not fit
    short_of: str = ""                                   # "gpu" or "ram" when it does not fit
    parallel: int = 1                                    # sequences (serve's slots), ctx tokens each

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def seq_cells(ctx: int, parallel: int = 1) -> int:
    """Cells per sequence of llama.cpp's full-attention cache when chat/serve ask for ctx tokens in each of
    `parallel` sequences (n_ctx = ctx * parallel, n_seq_max = parallel, no unified cache): n_ctx padded to 256,
    divided among the sequences, padded to 256 again (llama_context's constructor, llama-context.cpp)."""
    return _pad(_pad(ctx * parallel) // parallel)


def swa_cells(shape: ModelShape, ctx: int, swa_full: bool = SWA_FULL, parallel: int = 1,
              ubatch: int = N_UBATCH) -> int:
    """Cells per sequence of llama.cpp's sliding-window cache: the whole context when full-size, else the
    window plus one ubatch, padded to 256 (llama_kv_cache_iswa, llama-kv-cache-iswa.cpp)."""
    cells = seq_cells(ctx, parallel)
    return cells if swa_full else min(cells, _pad(shape.sliding_window + min(ubatch, ctx)))


def kv_cache_bytes(shape: ModelShape, ctx: int, swa_full: bool = SWA_FULL, parallel: int = 1,
                   ubatch: int = N_UBATCH) -> tuple[int, int]:
    """(full-attention, sliding-window) K+V bytes in f16 for ctx tokens in each of `parallel` sequences: without
    a unified cache llama.cpp keeps one stream of cells per sequence, in both caches."""
    per_token = 2 * shape.n_kv_heads * shape.head_dim * 2        # K and V, f16
    n_sliding = sum(shape.swa_layers)
    n_full = shape.n_layers - n_sliding
    return (n_full * seq_cells(ctx, parallel) * parallel * per_token,
            n_sliding * swa_cells(shape, ctx, swa_full, parallel, ubatch) * parallel * per_token)


def flash_attn_used(mode: str) -> bool:
    """Whether llama.cpp runs flash attention for --flash-attn mode: auto turns it on where every device
    running attention supports it, as the CPU, CUDA and Metal backends do for gpt-oss (sinks included)."""
    return mode != "off"


def compute_buffer_bytes(shape: ModelShape, ctx: int, flash_attn: bool, *, ubatch: int = N_UBATCH,
                         swa_full: bool = SWA_FULL, parallel: int = 1) -> int:
    """llama.cpp's compute buffer for ctx tokens in each of `parallel` sequences: the highest offset
    ggml-alloc.c's allocator reaches when it places the gpt-oss graph of one ubatch with one output row per
    sequence (llama_context::sched_reserve, llama-context.cpp). The ubatch's tokens are spread over the
    sequences' streams, each attending to its own cells, so the attention tensors are those of one sequence.

    Against llama.cpp's own "CPU compute buffer size" (tests/test_plan_oracle.py): within 0.01 MiB for the 20b
    and 120b shapes at ubatch 128 to 1024, contexts 1000 to 131072; at most 0.2% under (ubatch 2048, or the
    full-size SWA cache, without flash attention: the allocator's placement shifts); over by up to 0.8 MiB on
    the 96-wide test model with flash attention, and by 4 MiB for the release shapes at a 256-token context.
    With serve's slots (20b at 4096 x 4 and 32768 x 4, 120b at 8192 x 2 and 4096 x 16) within 0.01 MiB, at most
    0.2% under (20b, 1000 x 3). The planner counts it on the GPU too: the graph is the same there (CUDA's buffer
    was not measured).
    """
    T = min(ubatch, ctx)                       # llama.cpp reserves min(n_ctx, n_ubatch) tokens
    n_out = min(T, parallel)                   # n_outputs_max: one logits row per sequence
    f32, f16, i32, i64 = 4, 2, 4, 8
    n_kv = seq_cells(ctx, parallel)            # cells of one stream
    n_kv_swa = n_kv if swa_full else min(n_kv, _pad(shape.sliding_window + T))
    n_embd_v = shape.n_kv_heads * shape.head_dim
    embd = shape.n_embd * T * f32              # one hidden state [n_embd, T]
    q = shape.n_head * shape.head_dim * T * f32  # Qcur [head_dim, n_head, T]
    # Graph inputs, allocated first and kept to their last use: inp_tokens and inp_pos, inp_embd (allocated though
    # tokens are given); per cache (full and SWA) k_idxs and v_idxs (i64; v_idxs has one per value element when
    # V is stored transposed, i.e. without flash attention: llama-kv-cache.cpp) and kq_mask [n_kv, T] (f16 with
    # flash attention: build_attn_inp_kq_mask, llama-graph.cpp).
    inputs = (2 * T * i32 + embd + 2 * T * i64 + 2 * T * i64 * (1 if flash_attn else n_embd_v)
              + (n_kv + n_kv_swa) * T * (f16 if flash_attn else f32))
    # Above them a layer's attention starts with its input, the attn_norm output ([n_embd, T] each) and Qcur;
    # their offsets stay taken (by them or by later tensors) when the largest tensors are placed, on top:
    stack = inputs + 2 * embd + q
    # without flash attention, in a full-attention layer, the roped Qcur and kq [n_kv, T, n_head] f32 (soft_max
    # runs in place; build_attn_mha, llama-graph.cpp); in every layer's MoE (build_moe_ffn) ffn_moe_gate,
    # ffn_moe_up and ffn_moe_swiglu_oai, [n_ff, n_used, T] f32 each.
    kq = 0 if flash_attn else q + shape.n_head * n_kv * T * f32
    moe = 3 * shape.n_ff * shape.n_experts_used * T * f32
    # Last, result_output [n_vocab, n_out] f32 (a graph output, never freed) above inp_embd and the last hidden
    # state; with several rows it does not fit a lower hole and lands above one more [n_embd, T] tensor (the
    # last layer's ffn_moe_out).
    logits = (2 if n_out == 1 else 3) * embd + shape.n_vocab * n_out * f32
    return max(stack + max(kq, moe), logits)


def plan_memory(shape: ModelShape, ctx: int, gpu_free: int, ram_free: int, *, flash_attn: bool = False,
                margin: float = MARGIN, swa_full: bool = SWA_FULL, parallel: int = 1) -> Placement:
    """The smallest n_cpu_moe whose GPU share fits gpu_free, for ctx tokens in each of `parallel` sequences;
    everything in RAM when gpu_free is 0."""
    kv_full, kv_swa = kv_cache_bytes(shape, ctx, swa_full, parallel)
    kv = kv_full + kv_swa
    compute = compute_buffer_bytes(shape, ctx, flash_attn, swa_full=swa_full, parallel=parallel)
    L = shape.n_layers
    if gpu_free <= 0:
        ram = {"weights": shape.weight_bytes, "kv_cache": kv, "compute": compute}
        need = int((shape.weight_bytes + kv) * (1 + margin)) + compute
        fits = need <= ram_free
        return Placement(shape.name, ctx, fits, 0, 0, 0, ram_free, {}, ram, 0, need,
                         "" if fits else f"needs {need / GiB:.1f} GiB of RAM, {ram_free / GiB:.1f} GiB available",
                         "" if fits else "ram", parallel)
    dense_gpu = sum(shape.layer_bytes) + shape.output_bytes
    for n in range(L + 1):
        experts_gpu = sum(shape.expert_bytes[n:])
        need = int((dense_gpu + experts_gpu + kv) * (1 + margin)) + compute
        if need <= gpu_free:
            break
    gpu = {"layers": dense_gpu, "experts": experts_gpu, "kv_cache": kv, "compute": compute}
    ram = {"token_embd": shape.input_bytes, "experts": sum(shape.expert_bytes[:n])}
    reason, short_of = "", ""
    if need > gpu_free:
        short_of = "gpu"
        reason = (f"even with every expert in RAM the GPU needs {need / GiB:.1f} GiB, "
                  f"{gpu_free / GiB:.1f} GiB free")
    elif sum(ram.values()) > ram_free:
        short_of = "ram"
        reason = (f"the weights kept in RAM need {sum(ram.values()) / GiB:.1f} GiB, {ram_free / GiB:.1f} GiB "
                  "available (llama.cpp would page them from disk, very slowly)")
    return Placement(shape.name, ctx, not short_of, n, -1, gpu_free, ram_free, gpu, ram, need, sum(ram.values()),
                     reason, short_of, parallel)


def advice(plan: Placement, flash_attn: bool) -> str:
    """What to try when a plan does not fit."""
    if plan.short_of == "ram":
        return "Free some RAM, or pass --ram to plan for another machine"
    return "Try a smaller --ctx-size" + ("" if flash_attn else " or --flash-attn auto")


class DoesNotFit(RunFailure):
    """No expert placement fits the free memory."""

    what = "does not fit"


def _layers(a: int, b: int) -> str:
    return f"layer {a}" if b - a == 1 else f"layers {a}-{b - 1}"


def plan_rows(plan: Placement, shape: ModelShape) -> list[tuple[str, str, str]]:
    """(where, what, GiB) rows describing a plan."""
    gib = lambda n: f"{n / GiB:.2f} GiB"  # noqa: E731
    L, n = shape.n_layers, plan.n_cpu_moe
    kv_full, kv_swa = kv_cache_bytes(shape, plan.ctx, parallel=plan.parallel)
    n_swa, seqs = sum(shape.swa_layers), plan.parallel
    each = f" x {seqs} sequences" if seqs > 1 else ""
    kv_what = (f"KV cache: {L - n_swa} full layers x {seq_cells(plan.ctx, seqs)} cells"
               + (f", {n_swa} sliding x {swa_cells(shape, plan.ctx, parallel=seqs)}" if n_swa else "") + each)
    ram_total = ("RAM", "needed / available", f"{gib(plan.ram_needed)} / {gib(plan.ram_free)}")
    if not plan.gpu:
        return [("RAM", f"all weights ({L} layers)", gib(plan.ram["weights"])),
                ("RAM", kv_what, gib(plan.ram["kv_cache"])),
                ("RAM", "compute buffer (estimate)", gib(plan.ram["compute"])),
                (ram_total[0], f"needed with {MARGIN:.0%} margin / available", ram_total[2])]
    rows = [("GPU", f"attention, norms, router of {L} layers; output", gib(plan.gpu["layers"]))]
    if n < L:
        rows.append(("GPU", f"experts of {_layers(n, L)}", gib(plan.gpu["experts"])))
    rows += [("GPU", kv_what, gib(kv_full + kv_swa)),
             ("GPU", "compute buffer (estimate)", gib(plan.gpu["compute"])),
             ("GPU", f"needed with {MARGIN:.0%} margin / free", f"{gib(plan.gpu_needed)} / {gib(plan.gpu_free)}"),
             ("RAM", "token embeddings", gib(plan.ram["token_embd"]))]
    if n:
        rows.append(("RAM", f"experts of {_layers(0, n)}", gib(plan.ram["experts"])))
    return rows + [ram_total]


def context_words(ctx: int, parallel: int) -> str:
    """How a plan title names its context: `context 4096`, or `context 4096 x 4 sequences`."""
    return f"context {ctx}" + (f" x {parallel} sequences" if parallel > 1 else "")


def plan_title(plan: Placement) -> str:
    """The plan table's title."""
    head = f"{plan.model}, {context_words(plan.ctx, plan.parallel)}"
    if not plan.fits:
        return f"{head}: does not fit"
    if not plan.gpu:
        return f"{head}: CPU only, everything in RAM"
    return f"{head}: --n-cpu-moe {plan.n_cpu_moe}"
