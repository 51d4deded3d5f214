"""`gptoss recipes`: the table of quantization recipes, what each does and its expected size for 20b/120b."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from converters.recipes import EXPERT_CLASSES, RECIPES, QuantSpec
from converters.sizing import estimate_bytes
from converters.snapshot import HParams
from converters.tensor_map import ATTN_Q, EMBED, OUTPUT
from gptoss_cli import ui
from gptoss_cli.memory.shapes import KNOWN_CONFIGS

# Fields the planner's shapes leave out; their values do not change tensor sizes.
RELEASE_DEFAULTS = {"max_position_embeddings": 131072, "rope_theta": 150000.0, "rms_norm_eps": 1e-5,
                    "sliding_window": 128, "vocab_size": 201088}
PRUNED_KEEPS = {"20b": (32, 24, 16), "120b": (128, 96, 80, 64, 48)}


def recipe_rows() -> list[dict]:
    """One dict per recipe: name, types per class group, imatrix need, expected GB for 20b and 120b."""
    shapes = {size: HParams.from_config({**RELEASE_DEFAULTS, **cfg}, Path(f"{size}/config.json"))
              for size, cfg in KNOWN_CONFIGS.items()}
    rows = []
    for r in RECIPES.values():
        experts = "/".join(dict.fromkeys(r.types[c].name for c in EXPERT_CLASSES))
        rows.append({
            "recipe": r.name, "experts": experts + (" (edges +1)" if r.edge else ""),
            "attention": r.types[ATTN_Q].name, "embed": r.types[EMBED].name, "output": r.types[OUTPUT].name,
            "imatrix": r.needs_imatrix, "summary": r.summary,
            **{f"bytes_{size}": estimate_bytes(hp, QuantSpec(r)) for size, hp in shapes.items()},
        })
    return rows


def pruned_rows() -> list[dict]:
    """Tensor bytes of 20b and 120b (recipe mxfp4) with PRUNED_KEEPS experts per layer (`gptoss prune --keep`)."""
    rows = []
    for size, keeps in PRUNED_KEEPS.items():
        hp = HParams.from_config({**RELEASE_DEFAULTS, **KNOWN_CONFIGS[size]}, Path(f"{size}/config.json"))
        for keep in keeps:
            spec = QuantSpec(RECIPES["mxfp4"])
            rows.append({"model": size, "experts": keep, "of": hp.experts,
                         "bytes": estimate_bytes(dataclasses.replace(hp, experts=keep), spec)})
    return rows


@dataclasses.dataclass
class RecipesOptions:
    """Everything `gptoss recipes` was asked for."""

    as_json: bool = False


def run_recipes(opts: RecipesOptions) -> list[dict]:
    """Print the recipe table and the pruned sizes (or JSON)."""
    rows = recipe_rows()
    pruned = pruned_rows()
    if opts.as_json:
        ui.print_json({"recipes": rows, "pruned": pruned})
        return rows
    gb = lambda n: f"{n / 1e9:.1f} GB"  # noqa: E731
    ui.table("quantization recipes (expected sizes: tensor bytes, decimal GB)",
             ["recipe", "experts", "attn", "embed/out", "imatrix", "20b", "120b"],
             [(r["recipe"], r["experts"], r["attention"], f"{r['embed']}/{r['output']}",
               "needed" if r["imatrix"] else "", gb(r["bytes_20b"]), gb(r["bytes_120b"])) for r in rows],
             right=["20b", "120b"])
    ui.table(None, ["recipe", "what it does"], [(r["recipe"], r["summary"]) for r in rows])
    ui.table("pruned (recipe mxfp4, `gptoss prune --keep N`; tensor bytes, decimal GB)",
             ["model", "experts per layer", "size"],
             [(f"gpt-oss-{r['model']}", f"{r['experts']} of {r['of']}", gb(r["bytes"])) for r in pruned],
             right=["experts per layer", "size"])
    ui.info("gpt-oss rows are 2880 wide, not a multiple of 256: K-quant experts fall back to Q4_0/Q5_0 as "
            "llama.cpp does (see --dry-run).")
    return rows
