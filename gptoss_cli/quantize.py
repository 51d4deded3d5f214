"""`gptoss quantize`: a gpt-oss snapshot -> GGUF in the models folder, with progress and a summary."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from converters.convert import ConvertResult, convert_checkpoint
from converters.recipes import get_recipe
from gptoss_cli import paths, ui

SIZE_BY_LAYERS = {24: "20b", 36: "120b"}


def size_tag(folder: Path, model_arg: str | None) -> str:
    """20b / 120b from the config's layer count, else a name derived from the argument or folder."""
    try:
        layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    except (OSError, ValueError, KeyError):
        layers = None
    if layers in SIZE_BY_LAYERS:
        return SIZE_BY_LAYERS[layers]
    return paths.short_name(model_arg or folder.name)


def run_quantize(model: str | None, recipe: str, output: Path | None, force: bool,
                 as_json: bool) -> ConvertResult:
    """Resolve the snapshot, convert it with the recipe, remember the GGUF, render the summary."""
    get_recipe(recipe)  # unknown recipe -> error before any work
    folder = paths.resolve_snapshot(model)
    if model is None:
        ui.info(f"using the last pulled snapshot: {folder}")
    out = output or paths.default_gguf_path(size_tag(folder, model), recipe)
    with ui.byte_progress("converting") as advance:
        result = convert_checkpoint(folder, out, recipe=recipe, force=force,
                                    progress=lambda n, total, name: advance(n, total))
    paths.remember("gguf", result.path)
    if as_json:
        ui.print_json(summary_dict(result))
    else:
        render_summary(result)
    return result


def class_rows(result: ConvertResult) -> list[tuple[str, str, int, int]]:
    """(class, type, tensor count, bytes) per class and type, biggest first."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in result.tensors:
        g = groups[(t.cls, t.qtype.name)]
        g[0] += 1
        g[1] += t.nbytes
    return sorted(((c, q, n, b) for (c, q), (n, b) in groups.items()), key=lambda r: -r[3])


def summary_dict(result: ConvertResult) -> dict:
    """The conversion summary as plain data (for --json)."""
    return {
        "path": str(result.path), "recipe": result.recipe, "bytes": result.bytes_written,
        "input_bytes": result.input_bytes, "seconds": round(result.seconds, 3),
        "mb_per_s": round(result.input_bytes / 1e6 / max(result.seconds, 1e-9), 1),
        "classes": [{"class": c, "type": q, "tensors": n, "bytes": b} for c, q, n, b in class_rows(result)],
        "kept_f32": result.kept_f32,
    }


def render_summary(result: ConvertResult) -> None:
    """The end-of-conversion table: tensor classes, types, sizes, total and time."""
    rows = [(c, q, n, ui.human_bytes(b)) for c, q, n, b in class_rows(result)]
    rows.append(("total", "", len(result.tensors), ui.human_bytes(sum(t.nbytes for t in result.tensors))))
    ui.table(f"{result.path.name} (recipe {result.recipe})", ["class", "type", "tensors", "size"], rows,
             right=["tensors", "size"])
    rate = result.input_bytes / 1e6 / max(result.seconds, 1e-9)
    ui.info(f"wrote {result.path} in {result.seconds:.1f} s ({rate:.0f} MB/s of input)")
    if result.kept_f32:
        ui.warn(f"{len(result.kept_f32)} tensor(s) exceed F16's range and were kept F32: "
                + ", ".join(result.kept_f32[:5]) + (" ..." if len(result.kept_f32) > 5 else ""))
