"""Every output tensor's final type and byte size for a QuantSpec, and the exact file size: what --dry-run
prints and what the writer (converter alone, or converter + llama.cpp's quantizer) must produce.

The type rules are llama.cpp's (src/llama-quant.cpp): only 2-D/3-D `*.weight` tensors other than norms and the
router are quantized, and a type whose block does not divide the row length falls back to a smaller block.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from converters.convert import PlannedTensor, plan_tensors, tensor_nbytes, write_header
from converters.errors import BadInputError, RecipeError
from converters.recipes import EXPERT_CLASSES, IMATRIX_REQUIRED, QuantSpec, get_recipe
from converters.snapshot import Snapshot
from converters.tokenizer import load_vocab

ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT
LOSSLESS = "bf16"   # the recipe of the intermediate file llama.cpp quantizes from
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
# llama.cpp's tensor_type_fallback: 256-block types on rows that are not a multiple of 256.
_FALLBACK = {**dict.fromkeys((T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS),
                             T.IQ4_NL),
             T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
LOW_BIT_EXPERTS = IMATRIX_REQUIRED | {T.Q2_K, T.Q3_K}


@dataclass(frozen=True)
class SizedTensor:
    """One output tensor: name, class, layer, element shape (numpy order), types and final byte size."""

    name: str
    cls: str
    layer: int | None
    shape: tuple[int, ...]
    source: T        # type in the file the writer starts from
    requested: T     # what the recipe and the rules ask for
    qtype: T         # what is written (after llama.cpp's fallback)
    nbytes: int
    note: str = ""


@dataclass
class SizePlan:
    """The whole output: tensors, header bytes, total file bytes, and whether llama.cpp quantizes."""

    spec: QuantSpec
    tensors: list[SizedTensor]
    header_bytes: int
    total_bytes: int
    via_llama: bool


def pad(n: int, align: int = ALIGNMENT) -> int:
    """n rounded up to the GGUF data alignment."""
    return (n + align - 1) // align * align


def layer_of(name: str) -> int | None:
    """blk.7.attn_q.weight -> 7; None for global tensors."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """Whether llama.cpp's quantizer would change this tensor's type (tensor_allows_quantization)."""
    return (len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ffn_gate_inp.weight" not in name)


def fallback(qtype: T, ncols: int) -> tuple[T, str]:
    """The type llama.cpp really writes for rows of ncols values, and a note when it differs."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if ncols % block == 0:
        return qtype, ""
    new = _FALLBACK.get(qtype, qtype)
    if ncols % gguf.GGML_QUANT_SIZES[new][0]:
        new = T.F16
    return new, f"rows of {ncols} are not a multiple of {block}: {qtype.name} -> {new.name}"


def requested_type(spec: QuantSpec, cls: str, name: str, layer: int | None, n_layers: int) -> T:
    """Recipe type (with its edge rule), then class overrides, then tensor rules; the last match wins."""
    qtype = spec.classes.get(cls) or spec.recipe.layer_type(cls, layer, n_layers)
    for rule in spec.rules:
        if rule.pattern.search(name):
            qtype = rule.qtype
    return qtype


def plan_sizes(snap: Snapshot, spec: QuantSpec) -> SizePlan:
    """Final types and sizes of every tensor and the exact file size, for the converter or llama.cpp path."""
    via_llama = spec.custom or not spec.recipe.native
    base = plan_tensors(snap, get_recipe(LOSSLESS) if via_llama else spec.recipe)
    n_layers = snap.hparams.layers
    tensors = [_size(t, spec, n_layers, via_llama) for t in base]
    _check_rules(spec, tensors)
    header = header_nbytes(snap, spec, base)
    return SizePlan(spec, tensors, header, header + sum(pad(t.nbytes) for t in tensors), via_llama)


def _size(t: PlannedTensor, spec: QuantSpec, n_layers: int, via_llama: bool) -> SizedTensor:
    layer = layer_of(t.name)
    if not via_llama or not quantizable(t.name, t.shape):
        return SizedTensor(t.name, t.cls, layer, t.shape, t.qtype, t.qtype, t.qtype, t.nbytes, t.note)
    want = requested_type(spec, t.cls, t.name, layer, n_layers)
    final, note = fallback(want, t.shape[-1])
    return SizedTensor(t.name, t.cls, layer, t.shape, t.qtype, want, final, tensor_nbytes(final, t.shape), note)


def _check_rules(spec: QuantSpec, tensors: list[SizedTensor]) -> None:
    names = [t.name for t in tensors if quantizable(t.name, t.shape)]
    for rule in spec.rules:
        if not any(rule.pattern.search(n) for n in names):
            raise RecipeError(rule.text, "the pattern matches no tensor that can be quantized",
                              r"Use GGUF names such as blk\.0\.ffn_down_exps\.weight or token_embd\.weight "
                              "(`gptoss info FILE --json` lists them)")


def needs_imatrix(plan: SizePlan) -> str | None:
    """Why this plan needs an importance matrix (a tensor name and type), or None."""
    for t in plan.tensors:
        if t.qtype == t.source:
            continue
        if t.requested in IMATRIX_REQUIRED and t.cls not in ("embed", "output"):
            return f"{t.name} as {t.requested.name}"
        if plan.spec.recipe.needs_imatrix and t.cls in EXPERT_CLASSES and t.requested in LOW_BIT_EXPERTS:
            return f"{t.name} as {t.requested.name} (recipe {plan.spec.recipe.name})"
    return None


def header_nbytes(snap: Snapshot, spec: QuantSpec, base: list[PlannedTensor]) -> int:
    """Bytes before the tensor data (key/values and tensor infos, padded), as gguf-py and llama.cpp write them."""
    vocab = load_vocab(snap.folder, snap.hparams.vocab_size, snap.config)
    recipe = dataclasses.replace(spec.recipe, name=spec.name)
    with tempfile.TemporaryDirectory(prefix="gptoss-size-") as tmp:
        path = Path(tmp) / "header.gguf"
        write_header(path, snap, vocab, recipe, base).close()
        return pad(path.stat().st_size)


def estimate_bytes(hp, spec: QuantSpec) -> int:
    """Tensor bytes of a model with these hyper-parameters under spec, without a checkpoint (no header)."""
    from converters.tensor_map import MXFP4, expected_sources, output_specs

    sources, total = expected_sources(hp), 0
    via_llama = spec.custom or not spec.recipe.native
    shape: tuple[int, ...]
    for s in output_specs(hp.layers):
        if s.kind == MXFP4:
            e, rows, nb, _ = sources[s.source + "_blocks"][1]
            shape = (e, len(range(rows)[s.rows]) if s.rows else rows, nb * 32)
        else:
            shape = sources[s.source][1]
            if s.rows:
                shape = shape[:1] + (len(range(shape[1])[s.rows]),) + shape[2:]
        qtype = spec.recipe.type_for(s.cls)
        if via_llama and quantizable(s.gguf, shape):
            qtype = fallback(requested_type(spec, s.cls, s.gguf, layer_of(s.gguf), hp.layers), shape[-1])[0]
        elif via_llama:
            qtype = get_recipe(LOSSLESS).type_for(s.cls)
        total += pad(tensor_nbytes(qtype, shape))
    return total


def check_imatrix(plan: SizePlan, imatrix: dict[str, np.ndarray], source: str) -> None:
    """Every imatrix entry for a tensor of this model must have its size (columns x experts), as llama.cpp checks."""
    for t in plan.tensors:
        values = imatrix.get(t.name)
        if values is None or not quantizable(t.name, t.shape):
            continue
        want = t.shape[-1] * (t.shape[0] if len(t.shape) == 3 else 1)
        if values.size != want:
            raise BadInputError(source, f"the importance matrix is for another model ({t.name}: {values.size} "
                                        f"values, this model needs {want})",
                                "Make one for this model with `gptoss imatrix`")
