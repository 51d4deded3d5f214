"""`gptoss info`: its options; the body is quant/info.py."""

from __future__ import annotations

from gptoss_cli.commands.options import GgufModel, JsonOut
from gptoss_cli.errors import run_guarded


def info(model: GgufModel = None, json_out: JsonOut = False) -> None:
    """Show a GGUF's metadata and its tensor classes x types x bytes.

    Examples:

        gptoss info gpt-oss-20b-mxfp4.gguf

        gptoss info 20b --json | jq .classes
    """
    from gptoss_cli.quant.info import InfoOptions, run_info

    opts = InfoOptions(model=model, as_json=json_out)
    run_guarded(lambda: run_info(opts))
