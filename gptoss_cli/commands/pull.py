"""`gptoss pull`: its options; the body is hub/pull.py."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.completion import complete_snapshot_model
from gptoss_cli.errors import run_guarded

PULL_EXIT_CODES = """Exit codes: 0 pulled or up to date; 1 network, server or checksum failure (rerun resumes);
2 bad input (unknown, gated or unauthorised repo, bad revision, not gpt-oss, unsafe file names, not
enough disk); 130 interrupted (finished bytes are kept; rerun resumes)."""


def pull(
    model: str = typer.Argument(..., autocompletion=complete_snapshot_model,
                                help="20b, 120b, or a Hugging Face repo id of a gpt-oss model."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit sha (default: main)."),
    local_dir: Path | None = typer.Option(None, "--dir", help="Put the files in this folder instead of the HF cache."),
    token: str | None = typer.Option(None, "--token",
                                     help="Hugging Face token (default: $HF_TOKEN or `hf auth login`). "
                                          "A token on the command line is visible to other local users in `ps`: "
                                          "prefer HF_TOKEN or the saved login.",
                                        show_default=False),
    quantize: bool = typer.Option(False, "--quantize", help="Then run `gptoss quantize` with the default recipe."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check of downloaded files."),
    workers: int = typer.Option(8, "--max-workers", min=1, max=32, help="Files downloaded in parallel."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan and the result as one JSON document."),
) -> None:
    """Download the files a GGUF converter needs (never original/ or metal/); resumable and sha256-checked.

    Examples:

        gptoss pull 20b

        gptoss pull 120b --revision 8b193b0 --dir /data/gpt-oss-120b

        gptoss pull 20b --quantize && gptoss chat
    """
    from gptoss_cli.hub.pull import PullOptions, run_pull

    opts = PullOptions(model=model, revision=revision, local_dir=local_dir, token=token, quantize=quantize,
                       verify=not no_verify, as_json=json_out, workers=workers)
    run_guarded(lambda: run_pull(opts))
