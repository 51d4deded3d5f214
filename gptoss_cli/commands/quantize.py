"""`gptoss quantize`: its options; the body is quant/quantize.py."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.commands.options import Force
from gptoss_cli.completion import complete_recipe, complete_snapshot_model
from gptoss_cli.errors import run_guarded

QUANTIZE_EXIT_CODES = """Exit codes: 0 written (or planned with --dry-run); 1 llama.cpp's quantizer failed; 2 bad input
(unknown recipe or type, bad --tensor-type regex, missing imatrix, target too small, output exists, not
enough disk); 130 interrupted (nothing half-written is left)."""


def quantize(
    model: str | None = typer.Argument(None, autocompletion=complete_snapshot_model,
                                         help="Snapshot folder, 20b/120b or a repo id "
                                              "(default: the last `gptoss pull`)."),
    recipe: str = typer.Option("mxfp4", "--recipe", "-r", autocompletion=complete_recipe,
                               help="mxfp4 (default), f16, bf16, q8, experts-q4, experts-q3, experts-q2; "
                                    "see `gptoss recipes`."),
    output: list[str] = typer.Option([], "--output", "-o",
                                     help="Output .gguf (default: $GPTOSS_HOME/models/REPO-NAME-RECIPE.gguf). "
                                          "A type name (`--output q8_0`) sets output.weight's type instead."),
    experts: str | None = typer.Option(None, "--experts", help="Type of all expert tensors (e.g. q4_k, mxfp4)."),
    attn: str | None = typer.Option(None, "--attn", help="Type of attention q/k/v/o (e.g. q8_0)."),
    embed: str | None = typer.Option(None, "--embed", help="Type of the token embeddings (e.g. q6_k)."),
    output_type: str | None = typer.Option(None, "--output-type", help="Type of output.weight (e.g. q8_0)."),
    tensor_type: list[str] = typer.Option([], "--tensor-type", help="REGEX=TYPE on GGUF tensor names; repeatable, "
                                                                     "the last matching rule wins."),
    imatrix: Path | None = typer.Option(None, "--imatrix", help="Importance matrix (from `gptoss imatrix` or "
                                                                   "llama-imatrix); needed by experts-q3/q2."),
    target_size: str | None = typer.Option(None, "--target-size", help="Choose per-layer expert types to fit "
                                                                          "this size, e.g. 48GB (binary: GiB)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print per-class sizes and the exact file size; "
                                                          "write nothing."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, help="Quantizer threads (default: all)."),
    force: Force = False,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Convert gpt-oss safetensors to GGUF; experts stay bit-exact MXFP4 unless a recipe says otherwise.

    Examples:

        gptoss quantize 20b                               # mxfp4: experts as shipped, the rest Q8_0

        gptoss quantize 120b --recipe experts-q3 --imatrix gpt-oss-120b.imatrix.gguf --dry-run

        gptoss quantize 20b --experts q4_k --attn q8_0 --embed q6_k --tensor-type 'blk\\.0\\..*_exps=mxfp4'
    """
    from gptoss_cli.quant.quantize import QuantizeOptions, run_quantize, split_output

    out_path, out_type = split_output(output, output_type)
    opts = QuantizeOptions(model=model, recipe=recipe, output=out_path, force=force, as_json=json_out,
                           experts=experts, attn=attn, embed=embed, output_type=out_type,
                           tensor_types=tuple(tensor_type), imatrix=imatrix, target_size=target_size,
                           dry_run=dry_run, threads=threads)
    run_guarded(lambda: run_quantize(opts))
