"""`gptoss imatrix`: an importance matrix from a calibration text, in llama-imatrix's GGUF format."""

from __future__ import annotations

from pathlib import Path

from converters.imatrix import collect, load_imatrix, write_imatrix
from converters.errors import BadInputError, OutputError
from gptoss_cli import paths, ui


def default_output(model_path: Path) -> Path:
    """gpt-oss-<size>.imatrix.gguf in the models folder, <size> taken from the GGUF's name."""
    parts = model_path.stem.split("-")
    size = parts[2] if len(parts) > 2 and parts[:2] == ["gpt", "oss"] else model_path.stem
    return paths.models_dir() / f"gpt-oss-{size}.imatrix.gguf"


def run_imatrix(model: str | None, text_file: str | None, from_file: Path | None, output: Path | None,
                chunk_size: int, threads: int | None, force: bool, as_json: bool) -> dict:
    """Compute (or import) an importance matrix and write it; prints its path (or JSON)."""
    if (text_file is None) == (from_file is None):
        raise BadInputError(None, "give exactly one of --text FILE (compute) or --from FILE (import)",
                            "For example: gptoss imatrix 20b --text calib.txt")
    if from_file is not None:
        stats = load_imatrix(from_file)
        out = output or paths.models_dir() / (Path(from_file).stem + ".gguf")
        _check_free(out, force)
        source = str(from_file)
    else:
        gguf = paths.resolve_gguf(model)
        text = paths.read_text_arg(text_file, "calibration text")
        out = output or default_output(gguf)
        _check_free(out, force)
        from gptoss_cli.llama_glue import llama_log

        llama_log()     # llama.cpp's log goes to the quiet sink, not stderr
        with ui.count_progress(f"imatrix on {gguf.name}") as advance:
            stats = collect(gguf, text, text_file, chunk_size, threads, progress=advance)
        source = str(gguf)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_imatrix(stats, out)
    paths.remember("imatrix", out)
    report = {"path": str(out), "source": source, "tensors": len(stats.sums), "chunks": stats.chunk_count,
              "chunk_size": stats.chunk_size}
    if as_json:
        ui.print_json(report)
    else:
        ui.info(f"{len(stats.sums)} tensors, {stats.chunk_count} chunks of {stats.chunk_size} tokens from {source}")
        ui.out.print(str(out), markup=False, highlight=False, soft_wrap=True)
    return report


def _check_free(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputError(out, "already exists", "Pass --force to overwrite it, or choose -o")


