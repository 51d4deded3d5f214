"""`gptoss list`: its options; the body is hub/library.py."""

from __future__ import annotations

from gptoss_cli.commands.options import JsonOut
from gptoss_cli.errors import run_guarded


def list_models(json_out: JsonOut = False) -> None:
    """List local gpt-oss snapshots and GGUF files: name, revision, size, path.

    Examples:

        gptoss list

        gptoss list --json | jq '.models[].path'
    """
    from gptoss_cli.hub.library import ListOptions, run_list

    opts = ListOptions(as_json=json_out)
    run_guarded(lambda: run_list(opts))
