"""`gptoss prune`: resolve the model, size the output, collect or reuse statistics, write, then measure the loss."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from converters.errors import BadInputError, ModelNotFound
from converters.gguf_layout import SourceLayout
from converters.prune import PrunePlan, first_kept, plan_prune, read_source
from converters.prune_copy import write_pruned
from gptoss_cli import paths, ui
from gptoss_cli.engine.harmony import EFFORTS
from gptoss_cli.prune.heldout import EVAL_CHUNKS, EVAL_CTX, heldout_text
from gptoss_cli.prune.select import CRITERIA, choose
from gptoss_cli.prune.stats import DEFAULT_CALIB_TOKENS, ExpertStats


@dataclasses.dataclass
class PruneOptions:
    """Everything `gptoss prune` was asked for."""

    model: str | None = None
    keep: int | None = None
    target_size: str | None = None
    texts: tuple[Path, ...] = ()
    calib_tokens: int = DEFAULT_CALIB_TOKENS
    effort: str = "medium"
    criterion: str = "reap"
    stats: Path | None = None
    dry_run: bool = False
    output: Path | None = None
    no_eval: bool = False
    eval_text: Path | None = None
    yes: bool = False
    force: bool = False
    threads: int | None = None
    as_json: bool = False


def check_options(opts: PruneOptions) -> None:
    """Usage errors that need no file: criterion, --keep xor --target-size, token budget."""
    if opts.criterion not in CRITERIA:
        raise BadInputError(opts.criterion, "unknown pruning criterion", f"Use one of {', '.join(CRITERIA)}")
    if (opts.keep is None) == (opts.target_size is None):
        raise BadInputError(None, "give exactly one of --keep N and --target-size SIZE",
                            "For example `gptoss prune 20b --keep 24`")
    if opts.calib_tokens < 1:
        raise BadInputError(str(opts.calib_tokens), "--calib-tokens must be at least 1")
    if opts.effort not in EFFORTS:
        raise BadInputError(opts.effort, "unknown reasoning effort", f"Use one of {', '.join(EFFORTS)}")


def resolve_source(opts: PruneOptions) -> Path:
    """The GGUF to prune: a path, the newest GGUF of a model name, or a snapshot converted first (mxfp4)."""
    try:
        gguf = paths.resolve_gguf(opts.model)
        if opts.model is None:
            ui.info(f"using the last GGUF written: {gguf}")
        return gguf
    except ModelNotFound:
        if opts.model is None or opts.model.endswith(".gguf"):
            raise
    folder = paths.resolve_snapshot(opts.model)
    if opts.dry_run:
        raise ModelNotFound(opts.model, "there is no GGUF of it yet, and --dry-run converts nothing",
                            f"Run `gptoss quantize {opts.model}` first, or drop --dry-run")
    ask = f"{folder} has no GGUF yet: convert it (recipe mxfp4) first?"
    if not opts.yes and sys.stdin.isatty() and not ui.confirm(ask):
        raise BadInputError(opts.model, "not converted", "Run `gptoss quantize` first, or pass --yes")
    from converters.convert import convert_checkpoint
    from gptoss_cli.quant.quantize import _progress, gguf_stem

    out = paths.default_gguf_path(gguf_stem(folder, opts.model), "mxfp4")
    if out.is_file() and not opts.force:
        ui.info(f"using {out}, converted from {folder} before")
        return out
    ui.info(f"converting {folder} first (recipe mxfp4) to {out}")
    with ui.byte_progress("converting") as advance:
        return convert_checkpoint(folder, out, recipe="mxfp4", force=opts.force, progress=_progress(advance)).path


def choose_keep(src: SourceLayout, opts: PruneOptions) -> int:
    """--keep as given (checked), or the largest expert count whose file fits --target-size."""
    if opts.keep is not None:
        plan_prune(src, first_kept(src, opts.keep), opts.criterion, 0)   # checks the range
        return opts.keep
    from gptoss_cli.memory.devices import parse_size

    target = parse_size(str(opts.target_size))
    used, n_expert = int(src.get("expert_used_count", 1)), int(src.get("expert_count"))
    for keep in range(n_expert, used - 1, -1):
        if plan_prune(src, first_kept(src, keep), opts.criterion, 0).total_bytes <= target:
            return keep
    smallest = plan_prune(src, first_kept(src, used), opts.criterion, 0).total_bytes
    raise BadInputError(f"--target-size {opts.target_size}", f"too small: with {used} experts per layer (the "
                                                             f"fewest a token can use) the file is "
                                                             f"{ui.human_bytes(smallest)}",
                        "Choose a larger --target-size")


def load_stats(opts: PruneOptions, gguf: Path, src: SourceLayout) -> ExpertStats | None:
    """Saved statistics from --stats FILE when it exists (checked against the model), else None."""
    if opts.stats is None or not Path(opts.stats).exists():
        return None
    stats = ExpertStats.load(opts.stats)
    shape = (int(src.get("block_count")), int(src.get("expert_count")))
    if (stats.n_layer, stats.n_expert) != shape:
        raise BadInputError(opts.stats, f"statistics for {stats.n_layer} layers x {stats.n_expert} experts, the "
                                        f"model has {shape[0]} x {shape[1]}",
                            "Pass statistics of this model, or another --stats FILE to compute them")
    if not stats.matches(gguf):
        ui.warn(f"{opts.stats} was computed on {stats.source}, not on {gguf.name}; using it anyway")
    else:
        ui.info(f"using the statistics in {opts.stats} ({stats.tokens} tokens)")
    return stats


def default_output(gguf: Path, keep: int) -> Path:
    """<source stem>-<keep>e.gguf in the models folder (gpt-oss-20b-mxfp4.gguf -> gpt-oss-20b-mxfp4-24e.gguf)."""
    return paths.models_dir() / f"{gguf.stem}-{keep}e.gguf"


def run_prune(opts: PruneOptions) -> dict:
    """Validate, plan, then dry-run or collect statistics, write the pruned GGUF and evaluate it."""
    from gptoss_cli.prune import report

    check_options(opts)
    gguf = resolve_source(opts)
    src = read_source(gguf)
    keep = choose_keep(src, opts)
    if opts.target_size is not None:
        ui.info(f"--target-size {opts.target_size}: keeping {keep} of {src.get('expert_count')} experts per layer")
    out = Path(opts.output).expanduser() if opts.output else default_output(gguf, keep)
    stats = load_stats(opts, gguf, src)
    heldout = None if opts.no_eval or opts.dry_run else heldout_text(opts.eval_text, list(opts.texts))
    if opts.dry_run:
        kept = choose(stats, keep, opts.criterion) if stats else first_kept(src, keep)
        plan = plan_prune(src, kept, opts.criterion, stats.tokens if stats else opts.calib_tokens)
        return report.dry_run(plan, out, stats, opts)
    from converters.convert import check_output

    check_output(out, plan_prune(src, first_kept(src, keep), opts.criterion, 0).total_bytes, opts.force)
    generation = None
    if stats is None:
        stats, generation = collect(opts, gguf)
    kept = choose(stats, keep, opts.criterion)
    plan = plan_prune(src, kept, opts.criterion, stats.tokens)
    seconds = write(plan, out, opts.force)
    paths.remember("gguf", out)
    loss = None if heldout is None else evaluate_loss(gguf, out, heldout, opts.threads)
    return report.result(plan, out, stats, seconds, loss, opts, generation)


def collect(opts: PruneOptions, gguf: Path) -> tuple[ExpertStats, dict | None]:
    """Statistics over the calibration text (--text files, else the shipped set with the model's replies), and
    the timings of those replies (None with --text)."""
    from gptoss_cli.prune import calibration
    from gptoss_cli.prune.stats import collect_stats, memory_note

    generation = None
    if opts.texts:
        texts = calibration.load_texts(list(opts.texts), opts.effort)
        label = ", ".join(Path(p).name for p in opts.texts)
    else:
        generated = builtin_with_replies(gguf, opts)
        texts, label, generation = generated.texts, generated.label(), generated.timings()
        ui.info(f"generated {generated.reply_tokens} reply tokens in {generated.seconds:.1f} s "
                f"(decode {generation['decode_tokens_per_s']:.1f} tokens/s)")
    note = memory_note(gguf)
    if note:
        ui.warn(note)
    with ui.count_progress("expert statistics (tokens)") as advance:
        last = [0]

        def progress(done: int, total: int) -> None:
            advance(done - last[0], total)
            last[0] = done

        stats = collect_stats(gguf, texts, calib_tokens=opts.calib_tokens, threads=opts.threads,
                              progress=progress, label=label)
    ui.info(f"statistics rest on {stats.tokens} tokens per layer ({label})")
    if opts.stats is not None:
        stats.save(opts.stats)
        ui.info(f"saved the statistics to {opts.stats}; reuse them with --stats {opts.stats}")
    return stats, generation


def builtin_with_replies(gguf: Path, opts: PruneOptions):
    """The shipped conversations with the model's own replies at --effort, until calib_tokens tokens
    (a calibration.Generated)."""
    from gptoss_cli.engine.backend import Backend, BackendOptions
    from gptoss_cli.prune import calibration

    with Backend(gguf, BackendOptions(ctx_size=4096, threads=opts.threads, seed=0)) as backend, \
            ui.count_progress(f"generating calibration replies (effort {opts.effort}, tokens)") as advance:
        last = [0]

        def progress(done: int, total: int) -> None:
            advance(done - last[0], total)
            last[0] = done

        return calibration.generate(backend, effort=opts.effort, budget_tokens=opts.calib_tokens, max_tokens=512,
                                    progress=progress)


def write(plan: PrunePlan, out: Path, force: bool) -> float:
    """Write the pruned file with a byte progress bar; seconds taken."""
    from gptoss_cli.quant.quantize import _progress

    started = time.perf_counter()
    with ui.byte_progress("writing") as advance:
        write_pruned(plan, out, force, progress=_progress(advance))   # GPTOSS_TEST_HOLD: the tests' Ctrl-C seam
    return time.perf_counter() - started


def evaluate_loss(gguf: Path, out: Path, heldout: tuple[str, str], threads: int | None) -> dict:
    """`gptoss eval`'s KL / top-1 of the pruned file against its source on held-out (text, label)."""
    from gptoss_cli.quant.evaluate import evaluate

    text, label = heldout
    with ui.count_progress(f"measuring the loss on {label}") as advance:
        report = evaluate(gguf, [out], text, ctx=EVAL_CTX, threads=threads, max_chunks=EVAL_CHUNKS,
                          progress=advance)
    report["text"] = label
    return report
