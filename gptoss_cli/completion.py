"""Shell completion of what users type most: model names and recipes (`gptoss --install-completion`).

Completion runs on every Tab press, so these read only folder listings: nothing is imported from llama.cpp,
no GGUF is opened, no network.
"""

from __future__ import annotations

import re

from gptoss_cli import paths

SIZES = [("20b", "openai/gpt-oss-20b"), ("120b", "openai/gpt-oss-120b")]


def _local_ggufs() -> list[tuple[str, str]]:
    folder = paths.models_dir()
    if not folder.is_dir():
        return []
    return [(p.name, "GGUF in the models folder") for p in sorted(folder.glob("*.gguf"))
            if not p.name.endswith(".imatrix.gguf")]


def _pulled_repos() -> list[tuple[str, str]]:
    from gptoss_cli.hub.client import cache_dir

    cache = cache_dir()
    if not cache.is_dir():
        return []
    repos = [p.name[len("models--"):].replace("--", "/", 1) for p in sorted(cache.glob("models--*--*"))]
    return [(r, "pulled") for r in repos if r not in dict(SIZES).values()]


def _matching(items: list[tuple[str, str]], incomplete: str) -> list[tuple[str, str]]:
    seen, out = set(), []
    for value, help_text in items:
        if value.startswith(incomplete) and value not in seen:
            seen.add(value)
            out.append((value, help_text))
    return out


def complete_gguf_model(incomplete: str) -> list[tuple[str, str]]:
    """Models for chat/info/plan/imatrix/rm: 20b, 120b and the GGUF files in the models folder."""
    return _matching(SIZES + _local_ggufs(), incomplete)


def complete_snapshot_model(incomplete: str) -> list[tuple[str, str]]:
    """Models for pull/quantize: 20b, 120b and the repos already pulled into the Hugging Face cache."""
    return _matching(SIZES + _pulled_repos(), incomplete)


def complete_recipe(incomplete: str) -> list[tuple[str, str]]:
    """Recipe names with their one-line summaries."""
    from converters.recipes import RECIPES

    # The summary up to its first ':', ';' or '(' : shells show one short line per candidate.
    return _matching([(r.name, re.split(r"[:;(]", r.summary)[0].strip()) for r in RECIPES.values()], incomplete)
