"""Which experts to keep per layer, from ExpertStats, by one of three criteria (higher score = keep).

- `reap` (REAP, router-weighted expert activation pruning, Cerebras 2025): the mean over the tokens routed
  to the expert of gate x ||expert output||_2.
- `frequency`: how many tokens were routed to it.
- `ean` (expert activation norm): the sum over the tokens routed to it of ||expert output||_2.

An expert no token was routed to scores 0 under all three. Ties keep the more often routed expert, then the
lower id, so a choice is the same on every run.
"""

from __future__ import annotations

import numpy as np

from converters.errors import BadInputError
from gptoss_cli.prune.stats import ExpertStats

CRITERIA = ("reap", "frequency", "ean")


def scores(stats: ExpertStats, criterion: str) -> np.ndarray:
    """[n_layer, n_expert] scores under criterion; higher means keep."""
    if criterion == "reap":
        return stats.mean(stats.reap_sum)
    if criterion == "frequency":
        return stats.counts.astype(np.float64)
    if criterion == "ean":
        return stats.norm_sum.astype(np.float64)
    raise BadInputError(criterion, "unknown pruning criterion", f"Use one of {', '.join(CRITERIA)}")


def ranking(stats: ExpertStats, criterion: str = "reap") -> np.ndarray:
    """[n_layer, n_expert] expert ids per layer, the one to keep first (ties: more routed, then lower id)."""
    s = scores(stats, criterion)
    ids = np.broadcast_to(np.arange(stats.n_expert), s.shape)
    # np.lexsort sorts by the last key first, ascending.
    return np.stack([np.lexsort((ids[i], -stats.counts[i], -s[i])) for i in range(stats.n_layer)])


def check_keep(stats: ExpertStats, keep: int) -> None:
    """BadInputError unless keep is within top-k..n_expert (fewer experts than a token uses cannot route)."""
    low = max(stats.top_k, 1)
    if not low <= keep <= stats.n_expert:
        raise BadInputError(str(keep), f"--keep must be between {low} (the experts each token uses) and "
                                       f"{stats.n_expert} (the experts per layer)",
                            f"For example --keep {max(low, stats.n_expert * 3 // 4)}")


def choose(stats: ExpertStats, keep: int, criterion: str = "reap") -> list[list[int]]:
    """The keep experts with the highest scores in each layer, as sorted ids per layer."""
    check_keep(stats, keep)
    return [sorted(int(e) for e in row[:keep]) for row in ranking(stats, criterion)]


def summary(stats: ExpertStats, kept: list[list[int]], criterion: str = "reap") -> list[dict]:
    """Per layer: tokens its statistics rest on, the spread of REAP saliency (min, median, max over experts,
    lowest kept, highest dropped, under `criterion` for the last two), the share of routing (top-k selections)
    and of gate weight the dropped experts carried, and how many experts no token chose."""
    saliency, s = stats.mean(stats.reap_sum), scores(stats, criterion)
    rows = []
    for il, keep_ids in enumerate(kept):
        dropped = sorted(set(range(stats.n_expert)) - set(keep_ids))
        routed, gates = stats.counts[il].sum(), stats.gate_sum[il].sum()
        rows.append({
            "layer": il,
            "tokens": int(stats.layer_tokens[il]),
            "kept": len(keep_ids),
            "dropped": dropped,
            "saliency_min": float(saliency[il].min()),
            "saliency_median": float(np.median(saliency[il])),
            "saliency_max": float(saliency[il].max()),
            "kept_min_score": float(s[il, keep_ids].min()) if keep_ids else 0.0,
            "dropped_max_score": float(s[il, dropped].max()) if dropped else 0.0,
            "dropped_routing_share": float(stats.counts[il, dropped].sum() / routed) if routed else 0.0,
            "dropped_gate_share": float(stats.gate_sum[il, dropped].sum() / gates) if gates else 0.0,
            "unused_experts": int((stats.counts[il] == 0).sum()),
        })
    return rows
