"""`gptoss prune`: drop the experts the router uses least."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.commands.options import Force, JsonOut, Threads
from gptoss_cli.completion import complete_gguf_model
from gptoss_cli.errors import run_guarded

PRUNE_EXIT_CODES = """Exit codes: 0 written (or planned with --dry-run); 1 llama.cpp failed while collecting statistics
or measuring the loss; 2 bad input (--keep below the experts a token uses or above the experts there are,
--target-size too small, unknown criterion, unreadable --text or --stats, output exists, not enough disk);
130 interrupted (nothing half-written is left)."""


def prune(
    model: str | None = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf, 20b/120b (its newest GGUF), or a pulled snapshot "
                                              "(converted first) (default: the last GGUF written)."),
    keep: int | None = typer.Option(None, "--keep", "-k", help="Experts to keep in every layer (at least "
                                                                  "the 4 each token uses)."),
    target_size: str | None = typer.Option(None, "--target-size", help="Keep as many experts as fit this "
                                                                          "file size, e.g. 40GB (binary: GiB)."),
    text: list[Path] = typer.Option([], "--text", help="Calibration text: plain text, or JSONL chats rendered in "
                                                       "harmony; repeatable (default: the built-in set and the "
                                                       "model's replies)."),
    calib_tokens: int = typer.Option(32768, "--calib-tokens", help="Calibration tokens the statistics use."),
    effort: str = typer.Option("medium", "--effort", "-e", help="Reasoning effort of the built-in set's "
                                                                "calibration replies (and of --text chats): low, "
                                                                "medium or high."),
    criterion: str = typer.Option("reap", "--criterion", help="reap (default), frequency or ean."),
    stats: Path | None = typer.Option(None, "--stats", help="Statistics file: reused when it exists, else "
                                                               "written after collecting."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact output size (and, with --stats, "
                                                          "which experts go); write nothing."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output .gguf (default: "
                                          "$GPTOSS_HOME/models/SOURCE-<N>e.gguf)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the KL / top-1 comparison with the unpruned model."),
    eval_text: Path | None = typer.Option(None, "--eval-text", help="Held-out text for that comparison "
                                                                       "(default: a built-in one)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before converting a snapshot first."),
    threads: Threads = None,
    force: Force = False,
    json_out: JsonOut = False,
) -> None:
    """Drop the experts the router uses least (REAP) from every layer; kept bytes are copied unchanged.

    Examples:

        gptoss prune 120b --keep 64                  # gpt-oss-120b-mxfp4-64e.gguf

        gptoss prune 20b --keep 24 --text calib.txt --text chats.jsonl --stats 20b.stats.npz

        gptoss prune 120b --target-size 40GB --dry-run
    """
    from gptoss_cli.prune.run import PruneOptions, run_prune

    opts = PruneOptions(model=model, keep=keep, target_size=target_size, texts=tuple(text),
                        calib_tokens=calib_tokens, effort=effort.lower(), criterion=criterion, stats=stats,
                        dry_run=dry_run, output=output, no_eval=no_eval, eval_text=eval_text, yes=yes, force=force,
                        threads=threads, as_json=json_out)
    run_guarded(lambda: run_prune(opts))
