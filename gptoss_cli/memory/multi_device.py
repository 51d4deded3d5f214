"""Placements over several devices (`--rpc` workers, local GPUs): llama.cpp's layer split and each device's share.

llama.cpp (llama-model.cpp, load_tensors) spreads the offloaded layers over its devices in proportion to
their free memory: with split points at the cumulative free-memory fractions, layer il goes to the first
device whose split point exceeds il / (n_layers + 1); the output layer counts as layer n_layers. The token
embeddings stay on the CPU. `--n-cpu-moe N` keeps the experts of layers 0..N-1 in local RAM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from gptoss_cli.memory.placement import (
    MARGIN,
    GiB,
    _layers,
    compute_buffer_bytes,
    context_words,
    seq_cells,
    swa_cells,
)
from gptoss_cli.memory.shapes import ModelShape


@dataclass
class DeviceShare:
    """One device's part of a MultiDevicePlacement."""

    name: str
    free: int
    layers: list[int] = field(default_factory=list)
    output: bool = False
    bytes: dict[str, int] = field(default_factory=dict)   # weights, experts, kv_cache, compute
    needed: int = 0                                        # with margin and compute buffer

    @property
    def fits(self) -> bool:
        """Whether the share fits the device's free memory."""
        return self.needed <= self.free


@dataclass
class MultiDevicePlacement:
    """A placement over several devices and local RAM."""

    model: str
    ctx: int
    fits: bool
    n_cpu_moe: int
    devices: list[DeviceShare]
    ram: dict[str, int]
    ram_needed: int
    ram_free: int
    reason: str = ""
    split: list[int] | None = None   # layers per device when --fit chose them (llama.cpp's tensor_split)
    parallel: int = 1                # sequences (serve's slots), ctx tokens each

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)

    def apply_to(self, backend_opts) -> str:
        """Set --fit's choice on engine BackendOptions; the line that says what it chose."""
        if not self.split:
            return "--fit: every layer fits the devices as llama.cpp splits them by free memory"
        backend_opts.n_cpu_moe, backend_opts.tensor_split = self.n_cpu_moe, tuple(map(float, self.split))
        return f"--fit: --n-cpu-moe {self.n_cpu_moe}, layers per device {'/'.join(map(str, self.split))}"


def layer_devices(n_layers: int, frees: list[int]) -> list[int]:
    """Device index of each layer 0..n_layers (the last is the output layer), as llama.cpp splits them."""
    splits = np.cumsum(np.asarray([max(f, 0) for f in frees], dtype=np.float32), dtype=np.float32)
    if not len(splits) or splits[-1] <= 0:
        return [0] * (n_layers + 1)
    splits = splits / splits[-1]
    act = np.float32(n_layers + 1)
    last = len(frees) - 1
    return [min(int(np.searchsorted(splits, np.float32(il) / act, side="right")), last)
            for il in range(n_layers + 1)]


def layer_kv_bytes(shape: ModelShape, ctx: int, layer: int, parallel: int = 1) -> int:
    """K+V bytes (f16) of one layer's cache, for ctx tokens in each of `parallel` sequences: the whole context,
    or the sliding window, per sequence."""
    per_token = 2 * shape.n_kv_heads * shape.head_dim * 2
    cells = swa_cells(shape, ctx, parallel=parallel) if shape.swa_layers[layer] else seq_cells(ctx, parallel)
    return cells * parallel * per_token


def split_devices(n_layers: int, counts: list[int]) -> list[int]:
    """Device index of each layer 0..n_layers when device d takes the next counts[d] of them."""
    return [d for d, c in enumerate(counts) for _ in range(c)]


def shares_for(shape: ModelShape, ctx: int, devices: list[tuple[str, int]], n_cpu_moe: int,
               flash_attn: bool, margin: float = MARGIN, split: list[int] | None = None,
               parallel: int = 1) -> list[DeviceShare]:
    """Each device's layers and bytes when n_cpu_moe layers keep their experts in local RAM; layers go by
    free memory as llama.cpp splits them, or split[d] consecutive layers to device d."""
    where = (split_devices(shape.n_layers, split) if split
             else layer_devices(shape.n_layers, [free for _, free in devices]))
    shares = [DeviceShare(name, free) for name, free in devices]
    for il, d in enumerate(where[:-1]):
        shares[d].layers.append(il)
    shares[where[-1]].output = True
    compute = compute_buffer_bytes(shape, ctx, flash_attn, parallel=parallel)
    for s in shares:
        weights = sum(shape.layer_bytes[il] for il in s.layers) + (shape.output_bytes if s.output else 0)
        experts = sum(shape.expert_bytes[il] for il in s.layers if il >= n_cpu_moe)
        kv = sum(layer_kv_bytes(shape, ctx, il, parallel) for il in s.layers)
        s.bytes = {"weights": weights, "experts": experts, "kv_cache": kv, "compute": compute}
        s.needed = int((weights + experts + kv) * (1 + margin)) + compute if s.layers or s.output else 0
    return shares


def fill_split(shape: ModelShape, ctx: int, devices: list[tuple[str, int]], n_cpu_moe: int, flash_attn: bool,
               margin: float = MARGIN, parallel: int = 1) -> list[int] | None:
    """Layers per device, filled in device order, each device taking layers while they fit; None if the
    devices cannot hold all layers and the output (with experts of layers < n_cpu_moe left in RAM)."""
    L = shape.n_layers
    cost = [int((shape.layer_bytes[il] + (shape.expert_bytes[il] if il >= n_cpu_moe else 0)
                 + layer_kv_bytes(shape, ctx, il, parallel)) * (1 + margin)) for il in range(L)]
    cost.append(int(shape.output_bytes * (1 + margin)))
    compute = compute_buffer_bytes(shape, ctx, flash_attn, parallel=parallel)
    counts, i = [], 0
    for _, free in devices:
        room, c = free - compute, 0
        while i <= L and cost[i] <= room:
            room -= cost[i]
            i, c = i + 1, c + 1
        counts.append(c)
    return counts if i == L + 1 else None


def plan_devices(shape: ModelShape, ctx: int, devices: list[tuple[str, int]], ram_free: int, *,
                 flash_attn: bool = True, margin: float = MARGIN, fit: bool = False,
                 parallel: int = 1) -> MultiDevicePlacement:
    """llama.cpp's split by free memory when all experts fit on the devices; else, with fit, the smallest
    --n-cpu-moe whose layers fill the devices in order (the split --fit passes to llama.cpp); for ctx tokens
    in each of `parallel` sequences."""
    L = shape.n_layers
    shares = shares_for(shape, ctx, devices, 0, flash_attn, margin, parallel=parallel)
    n, split = 0, None
    if fit and not all(s.fits for s in shares):
        for n in range(L + 1):
            split = fill_split(shape, ctx, devices, n, flash_attn, margin, parallel)
            if split is not None:
                break
        shares = shares_for(shape, ctx, devices, n, flash_attn, margin, split, parallel)
    ram = {"token_embd": shape.input_bytes, "experts": sum(shape.expert_bytes[:n])}
    ram_needed = sum(ram.values())
    reason = ""
    short = [s for s in shares if not s.fits]
    if short:
        s = short[0]
        reason = (f"{s.name} needs {s.needed / GiB:.1f} GiB, {s.free / GiB:.1f} GiB free"
                  + (" even with every expert in local RAM" if fit else ""))
    elif ram_needed > ram_free:
        reason = (f"the weights kept in local RAM need {ram_needed / GiB:.1f} GiB, {ram_free / GiB:.1f} GiB "
                  "available")
    return MultiDevicePlacement(shape.name, ctx, not reason, n, shares, ram, ram_needed, ram_free, reason, split,
                                parallel)


def multi_device_rows(plan: MultiDevicePlacement) -> list[tuple[str, str, str]]:
    """(where, what, size) rows of a multi-device plan."""
    gib = lambda n: f"{n / GiB:.2f} GiB"  # noqa: E731
    rows = []
    for s in plan.devices:
        if not s.layers and not s.output:
            rows.append((s.name, "nothing (too little free memory for a layer)", gib(0)))
            continue
        span = _layers(s.layers[0], s.layers[-1] + 1) if s.layers else "no layer"
        rows.append((s.name, f"{span}: attention, norms, router" + (", output" if s.output else ""),
                     gib(s.bytes["weights"])))
        with_experts = [il for il in s.layers if il >= plan.n_cpu_moe]
        if with_experts:
            rows.append((s.name, f"experts of {_layers(with_experts[0], with_experts[-1] + 1)}",
                         gib(s.bytes["experts"])))
        n = len(s.layers)
        rows.append((s.name, f"KV cache of {n} layer{'s' if n != 1 else ''}", gib(s.bytes["kv_cache"])))
        rows.append((s.name, f"needed with {MARGIN:.0%} margin and compute buffer / free",
                     f"{gib(s.needed)} / {gib(s.free)}"))
    rows.append(("RAM", "token embeddings", gib(plan.ram["token_embd"])))
    if plan.n_cpu_moe:
        rows.append(("RAM", f"experts of {_layers(0, plan.n_cpu_moe)}", gib(plan.ram["experts"])))
    rows.append(("RAM", "needed / available", f"{gib(plan.ram_needed)} / {gib(plan.ram_free)}"))
    return rows


def multi_device_title(plan: MultiDevicePlacement) -> str:
    """The table title."""
    state = "does not fit" if not plan.fits else f"--n-cpu-moe {plan.n_cpu_moe}"
    if plan.split:
        state += ", layers per device " + "/".join(map(str, plan.split)) + " (--fit)"
    return f"{plan.model}, {context_words(plan.ctx, plan.parallel)}, {len(plan.devices)} devices: {state}"
