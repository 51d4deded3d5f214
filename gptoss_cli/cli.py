"""The Typer app: parse arguments, call the command module, render. No logic lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptoss_cli import __version__
from gptoss_cli.errors import run_guarded

app = typer.Typer(
    name="gptoss",
    help="gpt-oss from Hugging Face to a chat in your terminal: pull, quantize, chat.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gptoss {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """gpt-oss from Hugging Face to a chat in your terminal.

    Typical session: `gptoss pull 20b && gptoss quantize && gptoss chat`.
    """


# --- quantize / info (converter) ---------------------------------------------------------------

@app.command()
def quantize(
    model: Optional[str] = typer.Argument(None, help="Snapshot folder, 20b/120b or a repo id "
                                                     "(default: the last `gptoss pull`)."),
    recipe: str = typer.Option("mxfp4", "--recipe", "-r", help="mxfp4 (default), f16 or bf16; see `gptoss recipes`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Output .gguf (default: $GPTOSS_HOME/models/gpt-oss-<size>-<recipe>.gguf)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Convert gpt-oss safetensors to GGUF; experts stay bit-exact MXFP4.

    Examples:

        gptoss quantize ~/hf/gpt-oss-20b

        gptoss quantize 20b --recipe f16 -o out.gguf

        gptoss quantize            # the last pulled snapshot
    """
    from gptoss_cli.quantize import run_quantize

    run_guarded(lambda: run_quantize(model, recipe, output, force, json_out))


@app.command()
def info(
    model: Optional[str] = typer.Argument(None, help="A .gguf path or 20b/120b (default: the last GGUF written)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show a GGUF's metadata and its tensor classes x types x bytes.

    Examples:

        gptoss info gpt-oss-20b-mxfp4.gguf

        gptoss info 20b --json | jq .classes
    """
    from gptoss_cli.info import run_info

    run_guarded(lambda: run_info(model, json_out))


# --- recipes / imatrix / eval ---

# --- chat / plan ---

# --- pull / list / rm ---


def main() -> None:
    """Console-script entry point."""
    app()
