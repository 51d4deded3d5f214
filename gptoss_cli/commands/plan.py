"""`gptoss plan`: its options; the body is memory/planning.py."""

from __future__ import annotations

import typer

from gptoss_cli.commands.options import FlashAttn, JsonOut
from gptoss_cli.completion import complete_gguf_model
from gptoss_cli.errors import run_guarded

PLAN_EXIT_CODES = """Exit codes: 0 it fits (the plan and a `gptoss chat` or, with --parallel, `gptoss serve`
command are printed); 1 it does not fit;
2 bad input (no such model, bad size)."""


def plan(
    model: str | None = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf, a snapshot folder, 20b/120b or a repo id "
                                              "(default: the last GGUF written)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "--ctx", "-c", min=1, help="Context size in tokens (with "
                                 "--parallel: of each slot)."),
    parallel: int = typer.Option(1, "--parallel", "-np", min=1, max=64, help="Plan for `gptoss serve --parallel "
                                 "N`: N slots of --ctx-size tokens each."),
    vram: str | None = typer.Option(None, "--vram", help="GPU memory to plan for, e.g. 24GB (default: free "
                                                           "memory of this machine's GPUs; 0: CPU only)."),
    ram: str | None = typer.Option(None, "--ram", help="System RAM to plan for (default: available RAM)."),
    flash_attn: FlashAttn = typer.Option("auto", "--flash-attn", "-fa", help="Flash attention as chat will run it: "
                                         "auto and on plan its much smaller compute buffer."),
    json_out: JsonOut = False,
    rpc: str | None = typer.Option(None, "--rpc", help="Plan for these `gptoss worker`s: "
                                                          "HOST:PORT[,HOST:PORT...]."),
    keep: int | None = typer.Option(None, "--keep", help="Plan for the model pruned to N experts per layer "
                                                            "(`gptoss prune --keep N`)."),
) -> None:
    """Plan memory without loading anything: what goes on the GPU, what stays in RAM, the --n-cpu-moe to use.

    Sizes are binary: 24GB means 24 GiB, as GPU memory is counted.

    Examples:

        gptoss plan 120b --vram 24GB --ctx 32768

        gptoss plan 20b --vram 8GB --flash-attn off

        gptoss plan gpt-oss-120b-mxfp4.gguf --json | jq .n_cpu_moe

        gptoss plan 120b --rpc 10.0.0.2:50052,10.0.0.3:50052   # asks each worker for its memory

        gptoss plan 120b --keep 64 --vram 24GB       # after `gptoss prune 120b --keep 64`

        gptoss plan 20b --vram 16GB --ctx 16384 --parallel 4   # for `gptoss serve 20b --parallel 4`
    """
    from gptoss_cli.memory.planning import PlanOptions, run_plan

    opts = PlanOptions(model=model, ctx=ctx_size, vram=vram, ram=ram, flash_attn=flash_attn.value, as_json=json_out,
                       rpc=rpc, keep=keep, parallel=parallel)
    run_guarded(lambda: run_plan(opts))
