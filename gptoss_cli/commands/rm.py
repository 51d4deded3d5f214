"""`gptoss rm`: its options; the body is hub/library.py."""

from __future__ import annotations

import typer

from gptoss_cli.commands.options import JsonOut
from gptoss_cli.completion import complete_snapshot_model
from gptoss_cli.errors import run_guarded


def rm(
    model: str = typer.Argument(..., autocompletion=complete_snapshot_model,
                                help="20b, 120b, a repo id, a --dir folder or a .gguf path."),
    gguf_only: bool = typer.Option(False, "--gguf-only", help="Keep the downloaded snapshot; delete only GGUFs."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: JsonOut = False,
) -> None:
    """Delete a model's downloaded snapshot and GGUF files, after confirmation.

    Examples:

        gptoss rm 20b

        gptoss rm 120b --gguf-only --yes
    """
    from gptoss_cli.hub.library import RmOptions, run_rm

    opts = RmOptions(model=model, gguf_only=gguf_only, yes=yes, as_json=json_out)
    run_guarded(lambda: run_rm(opts))
