"""Recipes as data: which GGML type each tensor class gets."""

from __future__ import annotations

from dataclasses import dataclass, field

from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from converters.errors import RecipeError
from converters.tensor_map import (ATTN_K, ATTN_O, ATTN_Q, ATTN_V, BIAS, EMBED, EXPERT_DOWN,
                                   EXPERT_GATE_UP, NORM, OUTPUT, ROUTER, SINK)

# llama.cpp reads these as F32 whatever the file type (as its own converter writes them).
ALWAYS_F32 = {ROUTER: T.F32, NORM: T.F32, SINK: T.F32, BIAS: T.F32}
EXPERTS_AS_SHIPPED = {EXPERT_GATE_UP: T.MXFP4, EXPERT_DOWN: T.MXFP4}


def _dense(t: T) -> dict[str, T]:
    return {ATTN_Q: t, ATTN_K: t, ATTN_V: t, ATTN_O: t, EMBED: t, OUTPUT: t}


@dataclass(frozen=True)
class Recipe:
    """A named assignment of GGML types to tensor classes."""

    name: str
    summary: str
    file_type: FT
    types: dict[str, T] = field(default_factory=dict)

    def type_for(self, cls: str) -> T:
        """The GGML type this recipe gives a tensor class."""
        return self.types[cls]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("mxfp4", "experts MXFP4 as shipped; attention, embeddings, output Q8_0 (like ggml-org's GGUF)",
           FT.MOSTLY_MXFP4_MOE, {**EXPERTS_AS_SHIPPED, **_dense(T.Q8_0), **ALWAYS_F32}),
    Recipe("f16", "experts MXFP4; everything else F16 (the reference for quality reports)",
           FT.MOSTLY_F16, {**EXPERTS_AS_SHIPPED, **_dense(T.F16), **ALWAYS_F32}),
    Recipe("bf16", "experts MXFP4; everything else BF16: a bit-exact copy of the source",
           FT.MOSTLY_BF16, {**EXPERTS_AS_SHIPPED, **_dense(T.BF16), **ALWAYS_F32}),
)}
DEFAULT_RECIPE = "mxfp4"


def get_recipe(name: str) -> Recipe:
    """Look up a recipe by name; RecipeError lists the known ones."""
    try:
        return RECIPES[name.lower()]
    except KeyError:
        raise RecipeError(name, "unknown recipe",
                          f"Choose one of: {', '.join(RECIPES)}") from None
