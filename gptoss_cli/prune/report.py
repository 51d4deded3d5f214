"""What `gptoss prune` prints: the dry run (exact size, which experts go), the statistics summary, the result."""

from __future__ import annotations

from pathlib import Path

from converters.prune import EXPERT_AXIS, PrunePlan
from gptoss_cli import ui
from gptoss_cli.prune.select import summary
from gptoss_cli.prune.stats import ExpertStats


def sizes(plan: PrunePlan) -> dict:
    """Bytes of the source and of the pruned file, and of their expert tensors."""
    src = plan.source
    experts_before = sum(t.nbytes for t in src.tensors if EXPERT_AXIS.match(t.name))
    experts_after = sum(t.nbytes for t in plan.tensors if EXPERT_AXIS.match(t.name))
    return {"source": str(src.path), "source_bytes": src.path.stat().st_size, "bytes": plan.total_bytes,
            "header_bytes": plan.header_bytes, "experts_before": int(src.get("expert_count")),
            "experts_kept": plan.keep, "expert_tensor_bytes_before": experts_before,
            "expert_tensor_bytes_after": experts_after}


def layer_rows(stats: ExpertStats, plan: PrunePlan, criterion: str) -> list[dict]:
    """select.summary's per-layer rows for the plan's kept experts."""
    return summary(stats, plan.kept, criterion)


def dry_run(plan: PrunePlan, out: Path, stats: ExpertStats | None, opts) -> dict:
    """Print (or --json) the exact output size and, with statistics, the experts each layer drops."""
    doc = {"dry_run": True, "output": str(out), "criterion": opts.criterion, **sizes(plan),
           "statistics": str(opts.stats) if stats else None,
           "layers": layer_rows(stats, plan, opts.criterion) if stats else None}
    if opts.as_json:
        ui.print_json(doc)
        return doc
    _size_table(doc, f"dry run: {out.name} (nothing written)")
    if stats:
        render_layers(doc["layers"], stats.tokens)
    else:
        ui.info(f"which experts go is decided by statistics over {opts.calib_tokens} calibration tokens "
                f"(criterion {opts.criterion}); pass --stats FILE to save them and see the choice here")
    return doc


def _size_table(doc: dict, title: str) -> None:
    rows = [("source", doc["experts_before"], ui.human_bytes(doc["expert_tensor_bytes_before"]),
             f"{ui.human_bytes(doc['source_bytes'])} ({doc['source_bytes']} B)"),
            ("pruned", doc["experts_kept"], ui.human_bytes(doc["expert_tensor_bytes_after"]),
             f"{ui.human_bytes(doc['bytes'])} ({doc['bytes']} B)")]
    ui.table(title, ["file", "experts/layer", "expert tensors", "file size"], rows,
             right=["experts/layer", "expert tensors", "file size"])


def render_layers(rows: list[dict], tokens: int) -> None:
    """Per layer: tokens, REAP saliency spread, the routing share of the dropped experts, which go."""
    spread = [f"{r['saliency_min']:.3g} / {r['saliency_median']:.3g} / {r['saliency_max']:.3g}" for r in rows]
    table = [(r["layer"], r["tokens"], s, f"{100 * r['dropped_routing_share']:.1f}%", r["unused_experts"],
              _ids(r["dropped"])) for r, s in zip(rows, spread, strict=True)]
    ui.table(f"experts dropped per layer (statistics over {tokens} tokens)",
             ["layer", "tokens", "saliency min/median/max", "routing dropped", "unused", "dropped ids"], table,
             right=["layer", "tokens", "routing dropped", "unused"])


def _ids(ids: list[int], most: int = 24) -> str:
    text = ",".join(map(str, ids[:most]))
    return text + (f",... ({len(ids)})" if len(ids) > most else "")


def result(plan: PrunePlan, out: Path, stats: ExpertStats, seconds: float, loss: dict | None, opts,
           generation: dict | None = None) -> dict:
    """Print (or --json) what was written, the per-layer summary and the loss on held-out text; `generation`:
    the timings of the calibration replies this run generated (calibration.Generated.timings)."""
    doc = {"path": str(out), "criterion": opts.criterion, "calibration_tokens": stats.tokens,
           "calibration": stats.texts, "calibration_replies": generation,
           "seconds": round(seconds, 3), **sizes(plan), "kept": plan.kept,
           "layers": layer_rows(stats, plan, opts.criterion), "eval": loss}
    if opts.as_json:
        ui.print_json(doc)
        return doc
    render_layers(doc["layers"], stats.tokens)
    _size_table(doc, f"{out.name} (criterion {opts.criterion})")
    ui.info(f"wrote {out} in {seconds:.1f} s")
    if loss:
        from gptoss_cli.quant.evaluate import render

        render(loss)
        ui.info(f"KL is the mean over held-out tokens ({loss['text']}) of KL(unpruned || pruned) in nats; top-1 "
                "is how often both pick the same next token. 0 and 100% mean no loss.")
    return doc
