"""Recipes as data: which GGML type each tensor class gets, plus per-layer rules and user overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from converters.errors import RecipeError
from converters.tensor_map import (
    ATTN_K,
    ATTN_O,
    ATTN_Q,
    ATTN_V,
    BIAS,
    EMBED,
    EXPERT_CLASSES,
    EXPERT_DOWN,
    EXPERT_GATE_UP,
    NORM,
    OUTPUT,
    ROUTER,
    SINK,
)

# llama.cpp reads these as F32 whatever the file type (as its own converter writes them).
ALWAYS_F32 = {ROUTER: T.F32, NORM: T.F32, SINK: T.F32, BIAS: T.F32}
EXPERTS_AS_SHIPPED = {EXPERT_GATE_UP: T.MXFP4, EXPERT_DOWN: T.MXFP4}
ATTN_CLASSES = (ATTN_Q, ATTN_K, ATTN_V, ATTN_O)
# Types the converter writes itself (numpy, gguf.quants); anything else goes through llama.cpp's quantizer.
NATIVE_DENSE = {T.F32, T.F16, T.BF16, T.Q8_0}
# Types llama.cpp's quantizer can produce from the lossless GGUF (user-facing names are lower case).
QUANT_TYPES: dict[str, T] = {t.name.lower(): t for t in (
    T.F32, T.F16, T.BF16, T.Q8_0, T.Q6_K, T.Q5_K, T.Q5_1, T.Q5_0, T.Q4_K, T.Q4_1, T.Q4_0, T.MXFP4, T.IQ4_XS,
    T.IQ4_NL, T.Q3_K, T.IQ3_S, T.IQ3_XXS, T.Q2_K, T.IQ2_S, T.IQ2_XS, T.IQ2_XXS, T.IQ1_M, T.IQ1_S)}
# llama.cpp refuses these without an importance matrix (the result would be garbage).
IMATRIX_REQUIRED = {T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S}
# "One step higher" for the edge layers of a recipe.
STEP_UP = {T.IQ1_S: T.IQ1_M, T.IQ1_M: T.IQ2_XXS, T.IQ2_XXS: T.IQ2_XS, T.IQ2_XS: T.IQ2_S, T.IQ2_S: T.IQ3_XXS,
           T.IQ3_XXS: T.IQ3_S, T.Q2_K: T.Q3_K, T.Q3_K: T.Q4_K, T.IQ3_S: T.IQ4_XS, T.Q4_K: T.Q5_K,
           T.IQ4_XS: T.Q5_K, T.Q5_K: T.Q6_K, T.Q6_K: T.Q8_0}


def _dense(t: T) -> dict[str, T]:
    return {ATTN_Q: t, ATTN_K: t, ATTN_V: t, ATTN_O: t, EMBED: t, OUTPUT: t}


def _experts(gate_up: T, down: T) -> dict[str, T]:
    return {EXPERT_GATE_UP: gate_up, EXPERT_DOWN: down}


def edge_layers(n_layers: int) -> int:
    """How many layers at each end an edge rule raises: 2 of 24 (20b), 3 of 36 (120b), at least 1."""
    return max(1, n_layers // 12)


@dataclass(frozen=True)
class Recipe:
    """A named assignment of GGML types to tensor classes; `edge` classes go one step higher in edge layers."""

    name: str
    summary: str
    file_type: FT
    types: dict[str, T] = field(default_factory=dict)
    edge: tuple[str, ...] = ()
    needs_imatrix: bool = False

    def type_for(self, cls: str) -> T:
        """The GGML type this recipe gives a tensor class."""
        return self.types[cls]

    def layer_type(self, cls: str, layer: int | None, n_layers: int) -> T:
        """The type of a class in a layer, with the edge rule applied."""
        t = self.types[cls]
        k = edge_layers(n_layers)
        if cls in self.edge and layer is not None and (layer < k or layer >= n_layers - k):
            t = STEP_UP.get(t, t)
        return t

    @property
    def native(self) -> bool:
        """True when the converter writes every tensor itself (no llama.cpp quantizer pass)."""
        return (not self.edge and all(self.types[c] == T.MXFP4 for c in EXPERT_CLASSES)
                and all(t in NATIVE_DENSE for c, t in self.types.items() if c not in EXPERT_CLASSES))


_Q8 = {**_dense(T.Q8_0), **ALWAYS_F32}
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("mxfp4", "experts MXFP4 as shipped; attention, embeddings, output Q8_0 (like ggml-org's GGUF)",
           FT.MOSTLY_MXFP4_MOE, {**EXPERTS_AS_SHIPPED, **_Q8}),
    Recipe("f16", "experts MXFP4; everything else F16 (the reference for quality reports)",
           FT.MOSTLY_F16, {**EXPERTS_AS_SHIPPED, **_dense(T.F16), **ALWAYS_F32}),
    Recipe("bf16", "experts MXFP4; everything else BF16: a bit-exact copy of the source",
           FT.MOSTLY_BF16, {**EXPERTS_AS_SHIPPED, **_dense(T.BF16), **ALWAYS_F32}),
    Recipe("q8", "everything Q8_0 except experts MXFP4: the same tensors as mxfp4 (already the best split)",
           FT.MOSTLY_Q8_0, {**EXPERTS_AS_SHIPPED, **_Q8}),
    Recipe("experts-q4", "experts Q4_K, rest Q8_0: for runtimes without MXFP4 kernels (not smaller than mxfp4)",
           FT.MOSTLY_Q4_K_M, {**_experts(T.Q4_K, T.Q4_K), **_Q8}),
    Recipe("experts-q3", "experts Q3_K with an imatrix, first/last layers Q4_K; attention Q8_0",
           FT.MOSTLY_Q3_K_M, {**_experts(T.Q3_K, T.Q3_K), **_Q8}, edge=EXPERT_CLASSES, needs_imatrix=True),
    Recipe("experts-q2", "experts Q2_K (down Q3_K) with an imatrix, first/last layers a step up; attention Q8_0",
           FT.MOSTLY_Q2_K, {**_experts(T.Q2_K, T.Q3_K), **_Q8}, edge=EXPERT_CLASSES, needs_imatrix=True),
)}
DEFAULT_RECIPE = "mxfp4"


def get_recipe(name: str) -> Recipe:
    """Look up a recipe by name; RecipeError lists the known ones."""
    try:
        return RECIPES[name.lower()]
    except KeyError:
        raise RecipeError(name, "unknown recipe",
                          f"Choose one of: {', '.join(RECIPES)}") from None


def parse_type(text: str, what: str) -> T:
    """'q4_k' -> GGMLQuantizationType.Q4_K; RecipeError names the option and lists the known types."""
    try:
        return QUANT_TYPES[text.strip().lower()]
    except KeyError:
        raise RecipeError(text, f"unknown tensor type for {what}",
                          f"Choose one of: {', '.join(QUANT_TYPES)}") from None


@dataclass(frozen=True)
class TensorRule:
    """A --tensor-type rule: GGUF tensor names matching `pattern` (re.search) get `qtype`."""

    text: str
    pattern: re.Pattern
    qtype: T


def parse_tensor_rule(text: str) -> TensorRule:
    """'blk\\.0\\.ffn_.*_exps=mxfp4' -> TensorRule; RecipeError on a missing '=', a bad regex or type."""
    regex, sep, type_name = text.rpartition("=")
    if not sep or not regex:
        raise RecipeError(text, "a --tensor-type rule must look like REGEX=TYPE",
                          r"For example: --tensor-type 'blk\.0\.ffn_.*_exps=q8_0'")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise RecipeError(text, f"bad regular expression ({exc})", "Fix the pattern before '='") from None
    return TensorRule(text, pattern, parse_type(type_name, f"--tensor-type {regex}"))


@dataclass(frozen=True)
class QuantSpec:
    """What the user asked for: a recipe, class overrides (--experts/--attn/...), tensor rules, an imatrix."""

    recipe: Recipe
    classes: dict[str, T] = field(default_factory=dict)
    rules: tuple[TensorRule, ...] = ()
    target: bool = False     # per-layer expert types chosen by --target-size

    @property
    def custom(self) -> bool:
        """True when anything was layered on top of the recipe."""
        return bool(self.classes or self.rules or self.target)

    @property
    def name(self) -> str:
        """The name written to the file's gptoss.recipe key and used in the default file name."""
        return self.recipe.name + ("-custom" if self.custom else "")


CLASS_FLAGS = {"experts": EXPERT_CLASSES, "attn": ATTN_CLASSES, "embed": (EMBED,), "output": (OUTPUT,)}


def build_spec(recipe: str, flags: dict[str, str | None] | None = None,
               tensor_types: list[str] | tuple[str, ...] = ()) -> QuantSpec:
    """Validate a recipe name, --experts/--attn/--embed/--output types and --tensor-type rules."""
    rec = get_recipe(recipe)
    classes: dict[str, T] = {}
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        if flag not in CLASS_FLAGS:
            raise RecipeError(flag, "unknown tensor class option", f"Use one of: {', '.join(CLASS_FLAGS)}")
        qtype = parse_type(value, f"--{flag}")
        classes.update({cls: qtype for cls in CLASS_FLAGS[flag]})
    return QuantSpec(rec, classes, tuple(parse_tensor_rule(r) for r in tensor_types))
