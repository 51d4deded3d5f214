"""`gptoss imatrix`: an importance matrix from a calibration text, in llama-imatrix's GGUF format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError, OutputError, RunFailure
from converters.imatrix import Collector, Stats, load_imatrix, write_imatrix
from gptoss_cli import paths, ui
from gptoss_cli.quant.quantize import imatrix_path


def default_output(model_path: Path) -> Path:
    """<stem>.imatrix.gguf in the models folder, the GGUF's name less its recipe (and -custom): where
    `gptoss quantize` looks for it (gpt-oss-20b-ft-f16.gguf -> gpt-oss-20b-ft.imatrix.gguf)."""
    from converters.recipes import RECIPES

    stem = model_path.stem.removesuffix("-custom")
    for recipe in sorted(RECIPES, key=len, reverse=True):
        if stem.endswith(f"-{recipe}"):
            stem = stem[: -len(recipe) - 1]
            break
    return imatrix_path(stem)


@dataclass
class ImatrixOptions:
    """Everything `gptoss imatrix` was asked for."""

    model: str | None = None         # None: the last GGUF written
    text_file: str | None = None     # --text: calibration text (`-` reads stdin); compute
    from_file: Path | None = None    # --from: an imatrix made by llama-imatrix; import
    output: Path | None = None       # None: <stem>.imatrix.gguf in the models folder
    chunk_size: int = 512
    threads: int | None = None
    force: bool = False
    as_json: bool = False


def run_imatrix(opts: ImatrixOptions) -> dict:
    """Compute (or import) an importance matrix and write it; prints its path (or JSON)."""
    if (opts.text_file is None) == (opts.from_file is None):
        raise BadInputError(None, "give exactly one of --text FILE (compute) or --from FILE (import)",
                            "For example: gptoss imatrix 20b --text calib.txt")
    if opts.from_file is not None:
        stats = load_imatrix(opts.from_file)
        out = opts.output or paths.models_dir() / (Path(opts.from_file).stem + ".gguf")
        _check_free(out, opts.force)
        source = str(opts.from_file)
    else:
        assert opts.text_file is not None  # exactly one of the two, checked above
        gguf = paths.resolve_gguf(opts.model)
        text = paths.read_text_arg(opts.text_file, "calibration text")
        out = opts.output or default_output(gguf)
        _check_free(out, opts.force)
        with ui.count_progress(f"imatrix on {gguf.name}") as advance:
            stats = collect(gguf, text, opts.text_file, opts.chunk_size, opts.threads, progress=advance)
        source = str(gguf)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_imatrix(stats, out)
    paths.remember("imatrix", out)
    report = {"path": str(out), "source": source, "tensors": len(stats.sums), "chunks": stats.chunk_count,
              "chunk_size": stats.chunk_size}
    if opts.as_json:
        ui.print_json(report)
    else:
        ui.info(f"{len(stats.sums)} tensors, {stats.chunk_count} chunks of {stats.chunk_size} tokens from {source}")
        ui.result(f"{out}\n")
    return report


def _check_free(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputError(out, "already exists", "Pass --force to overwrite it, or choose -o")


def collect(gguf_path: Path, text: str, dataset: str, chunk_size: int = 512, threads: int | None = None,
            progress=None) -> Stats:
    """Run the model over the text in chunks of chunk_size tokens, collecting the importance matrix."""
    import llama_cpp

    from gptoss_cli.engine.scorer import Scorer

    stats = Stats(datasets=[dataset], chunk_size=chunk_size)
    collector = Collector(stats)
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)
    # On the CPU, so the callback reads activations from host memory.
    with Scorer(gguf_path, chunk_size, threads=threads, gpu_layers=0, all_logits=False, cb_eval=callback) as llm:
        tokens = llm.tokenize(text)
        n_chunks = len(tokens) // chunk_size
        if n_chunks < 1:
            raise BadInputError(dataset, f"the text has {len(tokens)} tokens, fewer than one chunk of {chunk_size}",
                                "Use a longer calibration text or a smaller --chunk-size")
        for c in range(n_chunks):
            llm.run(tokens[c * chunk_size:(c + 1) * chunk_size])
            if collector.error is not None:
                raise RunFailure(gguf_path, f"collecting activations failed ({collector.error})")
            stats.chunk_count = c + 1
            if progress:
                progress(1, n_chunks)
    return stats
