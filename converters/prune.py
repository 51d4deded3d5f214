"""Expert pruning of a gpt-oss GGUF: the layout of the pruned file, planned to the byte before anything is written.

A pruned file keeps `keep` experts in every layer (llama.cpp's `expert_count` is one number), a different set
per layer. Every tensor with an expert axis (ffn_{gate,up,down}_exps weights and biases, and the router,
ffn_gate_inp weight and bias) has it as its outermost GGML dimension, so each expert is one contiguous
run of bytes: the pruned tensor is the source's runs of the kept experts, copied unchanged. The key/value
section is the source's, byte for byte (the 201k-token vocabulary is stepped over, never parsed), with
`expert_count` rewritten in its own type and the gptoss.prune.* keys below added.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from converters.errors import BadInputError
from converters.gguf_layout import (
    ARRAY,
    FMT,
    INT32,
    UINT32,
    UINT64,
    SourceLayout,
    build_header,
    kv_entry,
    kv_string,
    pad,
    read_layout,
)

KEY_SOURCE = "gptoss.prune.source"                  # string: file name of the GGUF pruned
KEY_CRITERION = "gptoss.prune.criterion"            # string: reap, frequency or ean
KEY_CALIB_TOKENS = "gptoss.prune.calibration_tokens"  # uint64: tokens the statistics rest on
KEY_SOURCE_EXPERTS = "gptoss.prune.source_expert_count"  # uint32: experts per layer before pruning
KEY_KEPT = "gptoss.prune.kept_experts"              # int32 array [n_layer * keep]: kept source ids per layer
PRUNE_PREFIX = "gptoss.prune."
EXPERT_AXIS = re.compile(r"^blk\.(\d+)\.ffn_(gate_exps|up_exps|down_exps|gate_up_exps|gate_inp)\.(weight|bias)$")


@dataclass(frozen=True)
class Run:
    """Bytes [src, src+nbytes) of the source go to dst in the output."""

    src: int
    dst: int
    nbytes: int


@dataclass(frozen=True)
class PrunedTensor:
    """One output tensor: name, dims, type, bytes, its offset in the output, and the source runs filling it."""

    name: str
    dims: tuple[int, ...]
    qtype: int
    nbytes: int
    offset: int
    runs: tuple[Run, ...]


@dataclass
class PrunePlan:
    """The whole pruned file: header bytes (written once), tensors at planned offsets, exact size."""

    source: SourceLayout
    keep: int
    kept: list[list[int]]
    header: bytes
    tensors: list[PrunedTensor]
    total_bytes: int

    @property
    def header_bytes(self) -> int:
        return len(self.header)


def check_kept(src: SourceLayout, kept: list[list[int]]) -> int:
    """The common count of kept experts; BadInputError unless every layer keeps that many valid, distinct ids."""
    n_layer, n_expert = int(src.get("block_count", 0)), int(src.get("expert_count", 0))
    used = int(src.get("expert_used_count", 1))
    if src.arch != "gpt-oss" or not n_expert:
        raise BadInputError(src.path, f"architecture {src.arch!r} has no experts to prune", "Pass a gpt-oss GGUF")
    if len(kept) != n_layer:
        raise BadInputError(src.path, f"kept experts given for {len(kept)} layers, the model has {n_layer}")
    keep = len(kept[0]) if kept else 0
    if not used <= keep <= n_expert:
        raise BadInputError(str(keep), f"--keep must be between {used} (the experts each token uses) and "
                                       f"{n_expert} (the experts per layer)",
                            f"For example --keep {max(used, n_expert * 3 // 4)}")
    for il, ids in enumerate(kept):
        if len(ids) != keep or len(set(ids)) != keep or min(ids) < 0 or max(ids) >= n_expert:
            raise BadInputError(src.path, f"layer {il}: kept experts {ids} are not {keep} distinct ids "
                                          f"in 0..{n_expert - 1}")
    return keep


def read_source(path) -> SourceLayout:
    """The layout of a GGUF to prune (its earlier kept-expert ids included, when it was pruned before)."""
    return read_layout(path, frozenset({KEY_KEPT}))


def plan_prune(src: SourceLayout, kept: list[list[int]], criterion: str, calib_tokens: int) -> PrunePlan:
    """Header bytes, every output tensor's runs and offset, and the exact file size of the pruned file."""
    keep = check_kept(src, kept)
    kept = [sorted(int(e) for e in ids) for ids in kept]
    n_expert = int(src.get("expert_count"))
    out: list[tuple[str, tuple[int, ...], int, int, list[tuple[int, int]]]] = []
    for t in src.tensors:
        m = EXPERT_AXIS.match(t.name)
        if not m:
            out.append((t.name, t.dims, t.qtype, t.nbytes, [(t.offset, t.nbytes)]))
            continue
        if not t.dims or t.dims[-1] != n_expert:
            raise BadInputError(src.path, f"tensor {t.name} has dims {list(t.dims)}, expected {n_expert} experts "
                                          "as the last", "Pass a GGUF written by gptoss or llama.cpp")
        per = t.nbytes // n_expert
        spans = [(t.offset + a * per, n * per) for a, n in _runs(kept[int(m.group(1))])]
        out.append((t.name, t.dims[:-1] + (keep,), t.qtype, keep * per, spans))
    header = _header(src, kept, keep, criterion, calib_tokens, [(n, d, q) for n, d, q, _, _ in out])
    tensors, offset = [], len(header)
    for name, dims, qtype, nbytes, spans in out:
        runs, dst = [], offset
        for s, n in spans:
            runs.append(Run(s, dst, n))
            dst += n
        tensors.append(PrunedTensor(name, dims, qtype, nbytes, offset, tuple(runs)))
        offset += pad(nbytes, src.alignment)
    return PrunePlan(src, keep, kept, header, tensors, offset)


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as (first, count) runs of consecutive ids: [0, 1, 2, 5] -> [(0, 3), (5, 1)]."""
    runs: list[list[int]] = []
    for e in ids:
        if runs and runs[-1][0] + runs[-1][1] == e:
            runs[-1][1] += 1
        else:
            runs.append([e, 1])
    return [(a, n) for a, n in runs]


def _header(src: SourceLayout, kept: list[list[int]], keep: int, criterion: str, calib_tokens: int,
            tensors: list[tuple[str, tuple[int, ...], int]]) -> bytes:
    """The pruned file's header: source key/values (expert_count rewritten), prune keys, tensor infos, padding."""
    count_key = f"{src.arch}.expert_count"
    previous = src.values.get(KEY_KEPT)
    source_experts = int(src.values.get(KEY_SOURCE_EXPERTS, src.get("expert_count")))
    if previous is not None:        # a pruned file pruned again: record ids of the original model
        prev = [previous[i * int(src.get("expert_count")):(i + 1) * int(src.get("expert_count"))]
                for i in range(len(kept))]
        kept = [[int(prev[il][e]) for e in ids] for il, ids in enumerate(kept)]
    entries = []
    for key, raw in src.entries:
        if key.startswith(PRUNE_PREFIX):
            continue
        if key == count_key:
            vtype = struct.unpack_from("<I", raw, 8 + len(key.encode()))[0]
            if vtype not in FMT or vtype in (6, 7, 12):
                raise BadInputError(src.path, f"{count_key} has value type {vtype}, not an integer")
            raw = kv_entry(key, vtype, struct.pack(FMT[vtype], keep))
        entries.append(raw)
    flat = [e for ids in kept for e in ids]
    entries += [kv_string(KEY_SOURCE, src.path.name), kv_string(KEY_CRITERION, criterion),
                kv_entry(KEY_CALIB_TOKENS, UINT64, struct.pack("<Q", int(calib_tokens))),
                kv_entry(KEY_SOURCE_EXPERTS, UINT32, struct.pack("<I", source_experts)),
                kv_entry(KEY_KEPT, ARRAY, struct.pack("<IQ", INT32, len(flat)) + struct.pack(f"<{len(flat)}i", *flat))]
    return build_header(entries, tensors, src.alignment)


def first_kept(src: SourceLayout, keep: int) -> list[list[int]]:
    """Placeholder ids (the first `keep` per layer): enough to size a plan before statistics exist."""
    return [list(range(keep)) for _ in range(int(src.get("block_count", 0)))]


def pruned_nbytes(name: str, dims: tuple[int, ...], nbytes: int, n_expert: int,
                  keep: int) -> tuple[tuple[int, ...], int]:
    """A tensor's dims and bytes after pruning to keep experts (unchanged when it has no expert axis)."""
    if not EXPERT_AXIS.match(name) or not dims or dims[-1] != n_expert:
        return dims, nbytes
    return dims[:-1] + (keep,), nbytes // n_expert * keep
