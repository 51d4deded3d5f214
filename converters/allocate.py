"""--target-size: choose one expert type per layer so the file fits, spending bytes where they matter most.

Greedy: every free layer starts at the lowest rung; the upgrade with the largest estimated error reduction
per byte that still fits is taken until none fits. A layer's error weight is its sensitivity (the imatrix's
mean squared activation of its expert inputs, or its position: edge layers count double) times 4^-bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from converters.convert import tensor_nbytes
from converters.errors import RecipeError
from converters.recipes import EXPERT_CLASSES, QuantSpec, TensorRule, edge_layers
from converters.sizing import SizePlan, fallback, pad

LADDER = (T.Q2_K, T.Q3_K, T.MXFP4)     # nothing above MXFP4 is more precise: it is what the release ships
TOLERANCE = 0.02


@dataclass
class Allocation:
    """The chosen type per layer, its sizes, and why the result is not within 2% of the target (if so)."""

    target: int
    total: int
    layers: list[dict]
    rules: tuple[TensorRule, ...]
    shortfall: str = ""


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB ({n} B)"


def _bits(t: T) -> float:
    block, size = gguf.GGML_QUANT_SIZES[t]
    return 8 * size / block


def _rule(layer: int, t: T) -> TensorRule:
    text = rf"^blk\.{layer}\.ffn_(gate|up|down)_exps\.weight$"
    return TensorRule(f"{text}={t.name.lower()}", re.compile(text), t)


def sensitivities(n_layers: int, imatrix: dict[str, np.ndarray] | None) -> dict[int, float]:
    """Per-layer weight of expert quantization error: imatrix activation energy, else position."""
    if imatrix:
        out = {}
        for n in range(n_layers):
            vals = [float(np.mean(v)) for k, v in imatrix.items() if re.match(rf"blk\.{n}\.ffn_\w+_exps\.weight$", k)]
            out[n] = float(np.mean(vals)) if vals else 1.0
        return out
    k = edge_layers(n_layers)
    return {n: 2.0 if n < k or n >= n_layers - k else 1.0 for n in range(n_layers)}


def allocate(plan: SizePlan, target: int, imatrix: dict[str, np.ndarray] | None) -> Allocation:
    """Per-layer expert types for a plan (from the spec without target) so the file is at most target bytes."""
    spec = plan.spec
    experts = [(t.layer, t) for t in plan.tensors if t.cls in EXPERT_CLASSES and t.layer is not None]
    pinned = {n for n, t in experts if any(r.pattern.search(t.name) for r in spec.rules)}
    layers = sorted({n for n, _ in experts} - pinned)
    cost, ladder = {}, {}
    for n in layers:
        sizes = {r: sum(pad(tensor_nbytes(fallback(r, t.shape[-1])[0], t.shape)) for m, t in experts if m == n)
                 for r in LADDER}
        # A rung that falls back to a bigger block type (rows of 2880, as in gpt-oss, fit no 256-block type)
        # is dropped when it is not smaller than the rung above it.
        keep = [r for i, r in enumerate(LADDER) if i == len(LADDER) - 1 or sizes[r] < sizes[LADDER[i + 1]]]
        ladder[n], cost[n] = keep, [sizes[r] for r in keep]
    fixed = plan.total_bytes - sum(pad(t.nbytes) for m, t in experts if m in cost)
    rung = dict.fromkeys(layers, 0)
    total = fixed + sum(c[0] for c in cost.values())
    if total > target:
        lowest = "/".join(sorted({ladder[n][0].name for n in layers})) or "no free"
        raise RecipeError(f"--target-size {_size(target)}", f"too small: the smallest choice ({lowest} experts "
                          f"in every layer) is {_size(total)}", "Choose a larger --target-size")
    sens = sensitivities(max([m for m, _ in experts], default=-1) + 1, imatrix)
    while True:
        best, best_gain = None, 0.0
        for n in layers:
            r, lad = rung[n], ladder[n]
            if r + 1 < len(lad) and total + cost[n][r + 1] - cost[n][r] <= target:
                gain = sens[n] * (4.0 ** -_bits(lad[r]) - 4.0 ** -_bits(lad[r + 1]))
                gain /= max(1, cost[n][r + 1] - cost[n][r])
                if gain > best_gain:
                    best, best_gain = n, gain
        if best is None:
            break
        total += cost[best][rung[best] + 1] - cost[best][rung[best]]
        rung[best] += 1
    rows = [{"layer": n, "type": ladder[n][rung[n]].name, "bytes": cost[n][rung[n]], "sensitivity": sens[n]}
            for n in layers]
    rules = tuple(_rule(n, ladder[n][rung[n]]) for n in layers)
    top = all(rung[n] == len(ladder[n]) - 1 for n in layers)
    return Allocation(target, total, rows, rules, _shortfall(target, total, top))


def _shortfall(target: int, total: int, top: bool) -> str:
    if total >= (1 - TOLERANCE) * target:
        return ""
    if top:
        return (f"with every layer's experts as shipped (MXFP4) the file is {_size(total)}; "
                "nothing more precise exists to fill the target")
    return "the next per-layer step up would exceed the target (steps are one layer's experts at a time)"


def with_allocation(spec: QuantSpec, alloc: Allocation) -> QuantSpec:
    """The spec with the per-layer rules first, so the user's own --tensor-type rules still win."""
    return replace(spec, rules=alloc.rules + spec.rules, target=True)
