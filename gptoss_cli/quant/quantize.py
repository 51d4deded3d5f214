"""`gptoss quantize`: a gpt-oss snapshot -> GGUF in the models folder, with progress and a summary.

Recipes the converter writes alone (mxfp4, f16, bf16, q8) stream straight to the file; anything else is
converted to a lossless bf16 GGUF first and quantized by llama.cpp with exact per-tensor types.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections import defaultdict
from pathlib import Path

from converters import seams
from converters.allocate import Allocation, allocate, with_allocation
from converters.convert import ConvertResult, convert_checkpoint
from converters.errors import RecipeError, RunFailure
from converters.imatrix import load_imatrix
from converters.recipes import build_spec
from converters.sizing import LOW_BIT_EXPERTS, SizePlan, check_imatrix, needs_imatrix, plan_sizes
from converters.snapshot import Snapshot
from converters.tensor_map import EXPERT_CLASSES
from gptoss_cli import paths, ui


@dataclasses.dataclass
class QuantizeOptions:
    """Everything `gptoss quantize` was asked for."""

    model: str | None = None
    recipe: str = "mxfp4"
    output: Path | None = None
    force: bool = False
    as_json: bool = False
    experts: str | None = None
    attn: str | None = None
    embed: str | None = None
    output_type: str | None = None
    tensor_types: tuple[str, ...] = ()
    imatrix: Path | None = None
    target_size: str | None = None
    dry_run: bool = False
    threads: int | None = None


def gguf_stem(folder: Path, model_arg: str | None) -> str:
    """The model part of the output name: the repo's name for a pulled model (openai/gpt-oss-20b -> gpt-oss-20b,
    someorg/gpt-oss-20b-ft -> gpt-oss-20b-ft), else the snapshot folder's name; never a commit hash."""
    if model_arg and not Path(model_arg).expanduser().is_dir():
        return paths.repo_stem(paths.repo_id_for(model_arg))
    return paths.folder_stem(folder)


def imatrix_path(stem: str) -> Path:
    """Where `gptoss imatrix` puts a model's importance matrix by default."""
    return paths.models_dir() / f"{stem}.imatrix.gguf"


def run_quantize(opts: QuantizeOptions) -> ConvertResult | SizePlan:
    """Validate everything, plan every tensor, then dry-run (print sizes) or write and summarise."""
    flags = {"experts": opts.experts, "attn": opts.attn, "embed": opts.embed, "output": opts.output_type}
    spec = build_spec(opts.recipe, flags, opts.tensor_types)      # bad names/types/regexes: before any work
    target = _parse_target(opts.target_size)
    stats = load_imatrix(opts.imatrix) if opts.imatrix else None
    folder = paths.resolve_snapshot(opts.model)
    if opts.model is None:
        ui.info(f"using the last pulled snapshot: {folder}")
    stem = gguf_stem(folder, opts.model)
    im_file = opts.imatrix
    if stats is None and spec.recipe.needs_imatrix and imatrix_path(stem).is_file():
        im_file = imatrix_path(stem)
        stats = load_imatrix(im_file)
        ui.info(f"using the importance matrix {im_file}")
    imatrix = stats.normalized() if stats else None
    plan, alloc = _plan(folder, spec, target, imatrix)
    if imatrix:
        check_imatrix(plan, imatrix, str(im_file))
    why = needs_imatrix(plan)
    if why and imatrix is None:
        raise RecipeError(plan.spec.name, f"an importance matrix is needed ({why}) and none was given",
                          f"Make one with `gptoss imatrix {stem} --text calib.txt` and pass --imatrix FILE")
    if imatrix is None and any(t.requested in LOW_BIT_EXPERTS and t.cls in EXPERT_CLASSES for t in plan.tensors):
        ui.warn(f"experts below 4 bits without an importance matrix lose more quality; "
                f"make one with `gptoss imatrix {stem} --text calib.txt` and pass --imatrix")
    if alloc and alloc.shortfall:
        ui.warn(f"the file is {ui.human_bytes(alloc.total)}, more than 2% under the target: {alloc.shortfall}")
    if opts.dry_run:
        return _report_dry_run(plan, alloc, opts.as_json)
    out = opts.output or paths.default_gguf_path(stem, plan.spec.name)
    result = _write(folder, out, plan, imatrix, opts)
    paths.remember("gguf", result.path)
    if opts.as_json:
        ui.print_json({**summary_dict(result), **({"layers": alloc.layers} if alloc else {})})
    else:
        if alloc:
            render_allocation(alloc)
        render_summary(result)
    return result


def _parse_target(text: str | None) -> int | None:
    if text is None:
        return None
    from gptoss_cli.memory.devices import parse_size

    return parse_size(text)


def _plan(folder: Path, spec, target: int | None, imatrix) -> tuple[SizePlan, Allocation | None]:
    snap = Snapshot(folder)
    try:
        if target is None:
            return plan_sizes(snap, spec), None
        spec = dataclasses.replace(spec, target=True)
        alloc = allocate(plan_sizes(snap, spec), target, imatrix)
        return plan_sizes(snap, with_allocation(spec, alloc)), alloc
    finally:
        snap.close()


def _write(folder: Path, out: Path, plan: SizePlan, imatrix, opts: QuantizeOptions) -> ConvertResult:
    import time

    started = time.perf_counter()
    if not plan.via_llama:
        with ui.byte_progress("converting") as advance:
            result = convert_checkpoint(folder, out, recipe=plan.spec.recipe.name, force=opts.force,
                                        progress=_progress(advance))
        if result.bytes_written != plan.total_bytes:
            raise RunFailure(out, f"wrote {result.bytes_written} bytes, planned {plan.total_bytes}")
        return result
    from converters.requant import write_quantized

    with ui.byte_progress("converting (lossless)") as conv, ui.byte_progress("quantizing") as quant:
        path = write_quantized(folder, out, plan, imatrix, opts.force,
                               convert_progress=_progress(conv), quant_progress=_progress(quant, "quantizer"),
                               threads=opts.threads)
    snap = Snapshot(folder)
    try:
        input_bytes = snap.input_bytes()
    finally:
        snap.close()
    return ConvertResult(path, plan.spec.name, plan.tensors, path.stat().st_size, input_bytes,
                         time.perf_counter() - started, [t.name for t in plan.tensors if t.note])


def _progress(advance, phase: str = ""):
    """advance() as a converter progress callback. Test seam (converters/seams.py): with GPTOSS_TEST_HOLD=FILE
    (or =quantizer:FILE for llama.cpp's quantizer phase) the phase's first call also creates FILE and then
    waits for ever, so a test's Ctrl-C lands mid-write for certain."""
    held = seams.value(seams.HOLD) or ""
    in_quantizer = held.startswith("quantizer:")
    marker = held.removeprefix("quantizer:") if in_quantizer == (phase == "quantizer") else ""

    def step(n: int, total: int, name: str) -> None:
        advance(n, total)
        if marker and not Path(marker).exists():
            Path(marker).write_text(name)
            _hold()

    return step


def _hold() -> None:
    """Wait for ever: for a signal on the main thread (its SIGINT handler raises KeyboardInterrupt there);
    on llama.cpp's quantizer thread, until the process exits."""
    if threading.current_thread() is threading.main_thread():
        while True:
            signal.pause()
    threading.Event().wait()


def class_rows(result) -> list[tuple[str, str, int, int]]:
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
    rows.append(("total", "", len(result.tensors), ui.human_bytes(result.bytes_written)))
    ui.table(f"{result.path.name} (recipe {result.recipe})", ["class", "type", "tensors", "size"], rows,
             right=["tensors", "size"])
    rate = result.input_bytes / 1e6 / max(result.seconds, 1e-9)
    ui.info(f"wrote {result.path} in {result.seconds:.1f} s ({rate:.0f} MB/s of input)")
    if result.kept_f32:
        ui.warn(f"{len(result.kept_f32)} tensor(s) changed type ({result.kept_f32[0]} ...); "
                "see `gptoss quantize --dry-run --json` for why")


def dry_run_dict(plan: SizePlan, alloc: Allocation | None) -> dict:
    """The --dry-run report as plain data: per-class sizes, every tensor, the exact file size."""
    return {"recipe": plan.spec.name, "bytes": plan.total_bytes, "header_bytes": plan.header_bytes,
            "via_llama_cpp": plan.via_llama,
            "classes": [{"class": c, "type": q, "tensors": n, "bytes": b} for c, q, n, b in class_rows(plan)],
            "tensors": [{"name": t.name, "class": t.cls, "type": t.qtype.name, "requested": t.requested.name,
                         "bytes": t.nbytes, **({"note": t.note} if t.note else {})} for t in plan.tensors],
            **({"layers": alloc.layers, "target_bytes": alloc.target} if alloc else {})}


def _report_dry_run(plan: SizePlan, alloc: Allocation | None, as_json: bool) -> SizePlan:
    if as_json:
        ui.print_json(dry_run_dict(plan, alloc))
        return plan
    if alloc:
        render_allocation(alloc)
    rows = [(c, q, n, ui.human_bytes(b)) for c, q, n, b in class_rows(plan)]
    rows.append(("total (file)", "", len(plan.tensors), f"{ui.human_bytes(plan.total_bytes)} ({plan.total_bytes} B)"))
    ui.table(f"dry run: recipe {plan.spec.name} (nothing written)", ["class", "type", "tensors", "size"], rows,
             right=["tensors", "size"])
    notes = [t for t in plan.tensors if t.note]
    if notes:
        ui.info(f"{len(notes)} tensor(s) fall back as llama.cpp does, e.g. {notes[0].name}: {notes[0].note}")
    return plan


def render_allocation(alloc: Allocation) -> None:
    """The per-layer expert types --target-size chose."""
    rows = [(r["layer"], r["type"], ui.human_bytes(r["bytes"]), f"{r['sensitivity']:.3g}") for r in alloc.layers]
    ui.table(f"experts per layer for --target-size {ui.human_bytes(alloc.target)} "
             f"(file {ui.human_bytes(alloc.total)})", ["layer", "type", "size", "sensitivity"], rows,
             right=["layer", "size", "sensitivity"])


def split_output(values: list[str] | str | None, output_type: str | None) -> tuple[Path | None, str | None]:
    """-o/--output is the file; a type name there (`--output q8_0`) means output.weight's type (both may be given)."""
    from converters.errors import BadInputError
    from converters.recipes import QUANT_TYPES

    values = [values] if isinstance(values, str) else list(values or [])
    types = [v for v in values if v.strip().lower() in QUANT_TYPES and not v.endswith(".gguf")]
    files = [v for v in values if v not in types]
    if len(files) > 1:
        raise BadInputError(", ".join(files), "more than one output file given", "Pass -o FILE once")
    out_type = output_type or (types[-1] if types else None)
    return (Path(files[0]).expanduser() if files else None), out_type
