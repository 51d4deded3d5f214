"""`gptoss recipes`: its options; the body is quant/recipes.py."""

from __future__ import annotations

from gptoss_cli.commands.options import JsonOut
from gptoss_cli.errors import run_guarded


def recipes(json_out: JsonOut = False) -> None:
    """The quantization recipes: types per tensor class, imatrix need, expected size for 20b and 120b.

    Examples:

        gptoss recipes

        gptoss recipes --json | jq '.recipes[].recipe'
    """
    from gptoss_cli.quant.recipes import RecipesOptions, run_recipes

    opts = RecipesOptions(as_json=json_out)
    run_guarded(lambda: run_recipes(opts))
