"""`gptoss imatrix`: its options; the body is quant/imatrix.py."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.commands.options import Force, GgufModel, JsonOut, Threads
from gptoss_cli.errors import run_guarded


def imatrix(
    model: GgufModel = None,
    text: str | None = typer.Option(None, "--text", help="Calibration text file (`-` reads stdin)."),
    from_file: Path | None = typer.Option(None, "--from", help="Import an imatrix made by llama-imatrix "
                                                                  "(GGUF or legacy .dat) instead."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output file (default: "
                                          "$GPTOSS_HOME/models/gpt-oss-SIZE.imatrix.gguf)."),
    chunk_size: int = typer.Option(512, "--chunk-size", "--ctx-size", "-c", min=16, help="Tokens per chunk."),
    threads: Threads = None,
    force: Force = False,
    json_out: JsonOut = False,
) -> None:
    """Compute an importance matrix with llama.cpp (llama-imatrix's format; llama-quantize reads it too).

    Examples:

        gptoss imatrix 20b --text calib.txt

        gptoss imatrix gpt-oss-120b-mxfp4.gguf --text calib.txt -o 120b.imatrix.gguf

        gptoss imatrix --from imatrix.dat        # one made by llama-imatrix
    """
    from gptoss_cli.quant.imatrix import ImatrixOptions, run_imatrix

    opts = ImatrixOptions(model=model, text_file=text, from_file=from_file, output=output, chunk_size=chunk_size,
                          threads=threads, force=force, as_json=json_out)
    run_guarded(lambda: run_imatrix(opts))
