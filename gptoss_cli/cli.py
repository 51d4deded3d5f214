"""The Typer app: the commands of gptoss_cli/commands/ registered in `gptoss --help` order. No logic lives here."""

from __future__ import annotations

import typer

from gptoss_cli import __version__
from gptoss_cli.commands import (
    chat,
    eval_,
    imatrix,
    info,
    list_,
    plan,
    prune,
    pull,
    quantize,
    recipes,
    rm,
    serve,
    worker,
)

app = typer.Typer(
    name="gptoss",
    help="gpt-oss from Hugging Face to a chat in your terminal: pull, quantize, chat.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; see gptoss_cli/completion.py
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

# (command name, function, epilog listing its exit codes)
COMMANDS = (
    ("pull", pull.pull, pull.PULL_EXIT_CODES),
    ("list", list_.list_models, None),
    ("rm", rm.rm, None),
    ("quantize", quantize.quantize, quantize.QUANTIZE_EXIT_CODES),
    ("info", info.info, None),
    ("chat", chat.chat, chat.CHAT_EXIT_CODES),
    ("serve", serve.serve, serve.SERVE_EXIT_CODES),
    ("plan", plan.plan, plan.PLAN_EXIT_CODES),
    ("recipes", recipes.recipes, None),
    ("imatrix", imatrix.imatrix, None),
    ("eval", eval_.eval_, None),
    ("prune", prune.prune, prune.PRUNE_EXIT_CODES),
    ("worker", worker.worker, worker.WORKER_EXIT_CODES),
)
for _name, _function, _epilog in COMMANDS:
    app.command(_name, epilog=_epilog)(_function)


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


def main() -> None:
    """Console-script entry point; a crash inside llama.cpp still prints where it happened (faulthandler).
    Test seams that act (converters/seams.py) are named on stderr first."""
    import faulthandler

    from converters import seams
    from gptoss_cli import ui

    faulthandler.enable()
    if seams.active():
        ui.warn(f"test seams active ({seams.RUN}=1): {', '.join(seams.active())}")
    app(prog_name="gptoss")  # also under `python -m gptoss_cli`: usage lines and completion say gptoss
