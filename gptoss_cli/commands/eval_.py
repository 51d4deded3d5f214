"""`gptoss eval`: its options; the body is quant/evaluate.py."""

from __future__ import annotations

import typer

from gptoss_cli.commands.options import JsonOut, Rpc, Threads
from gptoss_cli.errors import run_guarded


def eval_(
    reference: str = typer.Argument(..., help="The reference GGUF (e.g. the f16 recipe)."),
    tests: list[str] = typer.Argument(..., help="One or more GGUFs to compare with it."),
    text: str = typer.Option(..., "--text", help="Evaluation text file (`-` reads stdin)."),
    ctx_size: int = typer.Option(512, "--ctx-size", "-c", min=16, help="Tokens per chunk."),
    chunks: int | None = typer.Option(None, "--chunks", min=1, help="Evaluate at most this many chunks."),
    threads: Threads = None,
    json_out: JsonOut = False,
    rpc: Rpc = None,
) -> None:
    """KL divergence (mean, p99) and top-1 agreement against a reference GGUF, and each file's perplexity.

    The second half of every chunk is scored, as llama-perplexity does.

    Examples:

        gptoss eval gpt-oss-20b-f16.gguf gpt-oss-20b-experts-q3.gguf --text sample.txt

        gptoss eval ref.gguf a.gguf b.gguf --text wiki.txt --chunks 20 --json | jq '.results[].kl_mean'
    """
    from gptoss_cli.quant.evaluate import EvalOptions, run_eval

    opts = EvalOptions(reference=reference, tests=tests, text_file=text, ctx=ctx_size, threads=threads,
                       max_chunks=chunks, as_json=json_out, rpc=rpc)
    run_guarded(lambda: run_eval(opts))
